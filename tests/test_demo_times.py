"""Stated run times come from a measured record: each notebook header's quick time and the README's
demo total are within 25 % of benchmarks/results/demo_times.json (a fresh-clone make demo)."""

import json
import re
from pathlib import Path

import pytest

from medlsdm.profiles import NOTEBOOKS

ROOT = Path(__file__).resolve().parent.parent
RECORD = json.loads((ROOT / "benchmarks" / "results" / "demo_times.json").read_text())
#: "`quick` ≈ 6.4 min (386 s in a fresh-clone `make demo`" in a notebook's first cell
STATED = re.compile(r"`quick` ≈ [^(]*\((\d+) s in a fresh-clone `make demo`")


def _header(key: str) -> str:
    nb = json.loads((ROOT / "notebooks" / f"{NOTEBOOKS[key]}.ipynb").read_text())
    return "".join(nb["cells"][0]["source"])


def stated_seconds(text: str) -> float:
    found = STATED.search(text)
    assert found, f"no stated quick time of the form {STATED.pattern!r}"
    return float(found.group(1))


@pytest.mark.parametrize("key", list(NOTEBOOKS))
def test_each_notebook_states_its_measured_quick_time(key):
    measured = RECORD["notebook_seconds"][key]
    assert abs(stated_seconds(_header(key)) - measured) <= 0.25 * measured, (key, measured)


def test_the_readme_states_the_measured_demo_time():
    readme = " ".join((ROOT / "README.md").read_text().split())
    found = re.search(r"all notebooks in (\d+):(\d\d) on 2 CPU cores, install included", readme)
    assert found, "the README states the demo's measured time as M:SS"
    stated = 60 * int(found.group(1)) + int(found.group(2))
    assert abs(stated - RECORD["total_seconds"]) <= 0.25 * RECORD["total_seconds"]


def test_the_check_sees_a_wrong_time():
    text = "**Run time (2 CPU cores)**: `smoke` ≈ 10 s, `quick` ≈ 9 min (540 s in a fresh-clone `make demo`)"
    assert stated_seconds(text) == 540
    measured = RECORD["notebook_seconds"]["01"]
    assert abs(stated_seconds(text) - measured) > 0.25 * measured  # 01 takes seconds, not 9 minutes
