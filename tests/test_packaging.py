"""pyproject.toml (the pip truth), environment.yml and binder/ describe the same packages."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_names() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["viewers"]}


def _conda_names(path: Path) -> set[str]:
    deps = yaml.safe_load(path.read_text())["dependencies"]
    names = set()
    for dep in deps:
        if isinstance(dep, dict):
            names |= {_name(r) for r in dep["pip"] if not r.startswith("-")}
        else:
            names.add(_name(dep))
    return names - {"python", "pip"}


def test_environment_yml_matches_pyproject():
    assert _conda_names(ROOT / "environment.yml") == _pyproject_names()


def test_binder_matches_pyproject_and_installs_the_package():
    assert _conda_names(ROOT / "binder" / "environment.yml") == _pyproject_names()
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install" in post and "-e ." in post
    assert "jupyterlab-manager" in post  # ipywidgets 8 extension checked


def test_torch_is_pinned_to_a_cpu_build_in_setup():
    makefile = (ROOT / "Makefile").read_text()
    assert "torch==2.13.0" in makefile
    for env in ("environment.yml", "binder/environment.yml"):
        assert "torch==2.13.0" in (ROOT / env).read_text()


def test_readme_has_the_two_commands_and_ci_calls_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not a name==version pin"
            pins[_name(name)] = version
    return pins


def test_constraints_pin_every_direct_dependency_inside_its_range():
    """The tested set (constraints.txt) is what `make install` gets, and pyproject's ranges allow it."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pins = _constraints()
    for requirement in project["dependencies"] + extras["viewers"] + extras["radiomics"] + extras["dev"]:
        req = Requirement(requirement)
        name = _name(req.name)
        assert name in pins, f"constraints.txt does not pin {name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"
    assert pins["torch"] == "2.13.0"
    for name in ("diffusers", "accelerate", "huggingface-hub", "safetensors", "nbclient", "papermill"):
        assert name in pins


def test_make_installs_the_tested_set_and_conda_files_pin_it_too():
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt -e '.[dev,radiomics]'" in makefile
    assert re.search(r"\.installed: .*constraints\.txt", makefile)  # a change reinstalls
    pins = _constraints()
    for env in ("environment.yml", "binder/environment.yml"):
        deps = yaml.safe_load((ROOT / env).read_text())["dependencies"]
        pip = [r for dep in deps if isinstance(dep, dict) for r in dep["pip"] if not r.startswith("-")]
        for requirement in pip:
            name, _, version = requirement.partition("==")
            assert version == pins[_name(name)], f"{env}: {requirement} is not the tested {name}=={pins[_name(name)]}"


def test_floors_of_diffusers_and_accelerate_are_tested_versions():
    from packaging.requirements import Requirement
    from packaging.version import Version

    for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(requirement)
        if req.name in ("diffusers", "accelerate"):  # diffusers 0.30 ran code named by a model folder
            floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
            assert floors and floors[0] >= Version({"diffusers": "0.42.1", "accelerate": "1.16"}[req.name])


def test_requires_python_is_what_the_dependencies_and_conda_files_need():
    """pyproject's requires-python floor is a Python every installed direct dependency supports
    (their own Requires-Python) and the one the conda files install."""
    from importlib.metadata import metadata

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floor = re.fullmatch(r">=(\d+\.\d+)", project["requires-python"]).group(1)
    for env in ("environment.yml", "binder/environment.yml"):
        assert f"python={floor}" in yaml.safe_load((ROOT / env).read_text())["dependencies"], env
    for requirement in project["dependencies"]:
        name = Requirement(requirement).name
        needs = metadata(name).get("Requires-Python")
        assert needs is None or SpecifierSet(needs).contains(floor), f"{name} needs Python {needs}, not {floor}"
