"""pyproject.toml (the pip truth), environment.yml and binder/ describe the same packages."""
import re
from pathlib import Path

import tomllib
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
