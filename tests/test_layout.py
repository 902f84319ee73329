"""The package's layout rules, checked on its source: layers import only downwards, no module
imports another module's private name, no module is over 450 lines, the README lists every module."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "medlsdm"
#: bottom to top: a module may import from its own layer and the layers before it
LAYERS = ["errors", "atomic", "tables", "rundir", "metrics", "data", "models", "pipelines", "evaluation",
          "training", "cardiac", "viz", "profiles", "evaluate", "interpret", "interpret_synthesis", "model_card",
          "pack", "runner", "sweep", "report", "cli"]


def _relative_imports(path: Path):
    """``(imported module, names)`` of every relative import in a package file, local ones included."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    package = parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            yield ".".join(base + ([node.module] if node.module else [])), [a.name for a in node.names]


def layer_violations(path: Path) -> list[str]:
    rank = {name: i for i, name in enumerate(LAYERS)}
    own = path.relative_to(PACKAGE).with_suffix("").parts[0]
    found = []
    for module, names in _relative_imports(path):
        targets = [f"{module}.{n}" for n in names] if module == "medlsdm" else [module]
        for target in targets:
            layer = target.split(".")[1] if "." in target else None
            if layer in rank and own in rank and rank[layer] > rank[own]:
                found.append(f"{path.name} imports {target} from a layer above {own}")
        found += [f"{path.name} imports the private {module}.{n}" for n in names if n.startswith("_")]
    return found


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.stat().st_size > 2000)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_respects_the_layers_and_size(path):
    assert layer_violations(path) == []
    assert len(path.read_text().splitlines()) <= 450


def test_the_checker_catches_violations(tmp_path):
    bad = PACKAGE / "data" / "_layout_probe.py"  # a file inside the package, removed afterwards
    bad.write_text("from ..training.trainer import Trainer\nfrom .io import _check_kind\n")
    try:
        found = layer_violations(bad)
    finally:
        bad.unlink()
    assert any("layer above data" in f for f in found) and any("private" in f for f in found)


def test_readme_layout_lists_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    for path in PACKAGE.rglob("*.py"):
        if path.name != "__init__.py" and path.parent.name != "feature_nets" and path.parent.name != "phantom":
            assert f" {path.name} " in layout, f"README layout misses {path.relative_to(ROOT)}"
