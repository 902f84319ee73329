"""One source of defaults: a notebook opened and run top to bottom runs the ``quick`` profile.

Each notebook's parameters cell (read by papermill's parser, as ``medlsdm run`` reads it)
must give every key of ``PROFILES["quick"][nb]`` the profile's value; keys the profile does
not set keep the notebook's own default.
"""

import json
import re

import pytest
from notebook_utils import cell_defaults, parameters_cell_mismatches

from medlsdm.profiles import NOTEBOOKS, PROFILES, notebook_parameters
from medlsdm.runner import find_notebooks
from medlsdm.settings import STAGES, defaults

NB02 = find_notebooks(only=["02"])[0]


@pytest.mark.parametrize("path", find_notebooks(), ids=lambda p: p.stem)
def test_parameters_cell_is_the_quick_profile(path):
    problems = parameters_cell_mismatches(path, notebook_parameters("quick", path.stem))
    assert not problems, f"{path.name} differs from PROFILES['quick']:\n" + "\n".join(problems)
    assert cell_defaults(path)["profile"] == "quick"  # what the cell says it is


def test_every_notebook_has_a_quick_profile_entry():
    assert set(PROFILES["quick"]) == set(NOTEBOOKS)


def _edited(path, tmp_path, name, new_line):
    """A copy of ``path`` whose parameters-cell line ``name = …`` is ``new_line`` (``None``: removed)."""
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    lines = [line for line in cell["source"] if not re.match(rf"{name}\s*=", line)]
    assert len(lines) == len(cell["source"]) - 1, f"no line {name} = … in {path.name}"
    at = next(i for i, line in enumerate(cell["source"]) if re.match(rf"{name}\s*=", line))
    cell["source"] = lines[:at] + ([new_line + "\n"] if new_line is not None else []) + lines[at:]
    out = tmp_path / path.name
    out.write_text(json.dumps(nb, indent=1))
    return out


def test_a_changed_missing_or_retyped_value_is_reported(tmp_path):
    quick = notebook_parameters("quick", "02")
    assert parameters_cell_mismatches(NB02, quick) == []
    cases = {
        "steps = 600": ["steps: the parameters cell says 600, the profile 1000"],
        "steps = 1000.0": ["steps: the parameters cell says 1000.0, the profile 1000"],  # float for int
        "steps = 2 * 500": ["steps: the parameters cell's default '2 * 500' is not a literal"],
        None: ["steps: the profile sets 1000; the parameters cell does not declare it"],
    }
    for i, (line, expected) in enumerate(cases.items()):
        folder = tmp_path / str(i)
        folder.mkdir()
        assert parameters_cell_mismatches(_edited(NB02, folder, "steps", line), quick) == expected, line
    changed_list = _edited(NB02, tmp_path, "channels", "channels = [16, 32, 32]")
    assert parameters_cell_mismatches(changed_list, quick) == [
        "channels: the parameters cell says [16, 32, 32], the profile [16, 32, 64]"
    ]


def _as_default(value):
    return tuple(value) if isinstance(value, list) else value


#: Parameters a stage's notebook has beyond the stage's settings (what it does around training).
NOTEBOOK_ONLY = {"02": {"compare_decoder", "training_options"}, "03": {"training_options"}, "05": set()}


@pytest.mark.parametrize("notebook", sorted(STAGES))
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profiles_override_the_stage_settings_by_their_own_names(profile, notebook):
    """A profile is a partial override of its stages' settings: every key is a field (or a notebook option)."""
    params = notebook_parameters(profile, notebook)
    fields = set(defaults(STAGES[notebook]))
    assert set(params) - fields <= NOTEBOOK_ONLY[notebook]
    assert set(params.get("training_options", {})) <= fields


@pytest.mark.parametrize("notebook", sorted(STAGES))
def test_the_settings_defaults_are_the_quick_profile(notebook):
    """train_vqgan / train_diffusion / evaluate_run without arguments do what the quick demo does."""
    stage = defaults(STAGES[notebook])
    quick = {k: v for k, v in notebook_parameters("quick", notebook).items() if k not in NOTEBOOK_ONLY[notebook]}
    if notebook == "03":  # documented exception: progress samples are the notebook's
        assert stage["sample_every"] is None
        quick.pop("sample_every")
    assert {k: (stage[k], v) for k, v in quick.items() if _as_default(stage[k]) != _as_default(v)} == {}
