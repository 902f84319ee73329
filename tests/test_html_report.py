"""The offline HTML report: files, local scripts only, embedded figures, widget state.

(That the pages really render offline in a browser is checked in ``test_browser.py``.)
"""

import hashlib
import json
import lzma
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from medlsdm import cli
from medlsdm.errors import ConfigError
from medlsdm.html_report import STATIC_DIR, STATIC_FILES, build_report, install_static, report_scripts
from medlsdm.profiles import PROFILES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def interactive_run(smoke_run, tmp_path):
    """The session smoke run's notebook 01 (executed by papermill with ``interactive=True``:
    widgets in its outputs) and its metrics.json, copied: building a report writes into the run."""
    run = tmp_path / "run"
    (run / "executed").mkdir(parents=True)
    shutil.copy2(smoke_run.executed / "01_preprocessing.ipynb", run / "executed")
    shutil.copy2(smoke_run.metrics_path, run)
    return run


def _widget_state(nb: dict) -> dict:
    return nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]


@pytest.mark.notebook
def test_papermill_stores_the_widget_state(interactive_run):
    nb = json.loads((interactive_run / "executed" / "01_preprocessing.ipynb").read_text())
    state = _widget_state(nb)
    viewers = [m for m in state.values() if "medlsdm-slice-viewer" in m["state"].get("_dom_classes", [])]
    assert len(viewers) == 1 and viewers[0]["model_name"] == "VBoxModel"
    images = [m for m in state.values() if m["model_name"] == "ImageModel"]
    assert images and all(m.get("buffers") for m in images), "the viewer's PNG must be stored with the state"
    views = [
        o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert set(views) <= set(state)


@pytest.mark.notebook
def test_report_files_are_offline_and_self_contained(interactive_run):
    index = build_report(interactive_run)
    report = interactive_run / "report"
    assert index == report / "index.html"
    page = (report / "01_preprocessing.html").read_text()
    for name in STATIC_FILES:
        assert (report / "static" / name).stat().st_size > 10_000

    # no script, stylesheet or widget renderer from the network
    scripts = report_scripts(page)
    assert "static/require.js" in scripts
    assert not [s for s in scripts if re.match(r"(https?:)?//", s)], scripts
    assert not re.search(r"<link[^>]+href=[\"'](https?:)?//", page)
    assert not re.search(r"widgetRendererSrc = '(https?:)?//", page)
    assert "widgetRendererSrc = 'static/embed-amd.js'" in page
    assert not re.search(r"import\([\"'](https?:)?//", page)
    assert "mathjax" not in " ".join(scripts).lower()

    # figures embedded as data URIs, and nothing else as an image source
    sources = re.findall(r"<img[^>]*\bsrc=[\"']([^\"']+)[\"']", page)
    assert len([s for s in sources if s.startswith("data:image/png;base64,")]) >= 4
    assert all(s.startswith("data:") for s in sources), [s[:40] for s in sources if not s.startswith("data:")]

    # the widget state and views travel with the page
    assert 'type="application/vnd.jupyter.widget-state+json"' in page
    assert page.count('type="application/vnd.jupyter.widget-view+json"') >= 2
    assert "medlsdm-slice-viewer" in page

    home = index.read_text()
    assert 'href="01_preprocessing.html"' in home
    assert f"<td>n_cases</td><td>{PROFILES['smoke']['01']['n_cases']}</td>" in home
    assert not report_scripts(home)


@pytest.mark.notebook
def test_cli_report(interactive_run, tmp_path):
    assert cli.main(["report", "--run-dir", str(interactive_run), "--out-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "index.html").exists()
    assert (tmp_path / "out" / "01_preprocessing.html").exists()


def test_report_without_executed_notebooks_is_refused(tmp_path, caplog):
    with pytest.raises(ConfigError, match="no executed notebooks"):
        build_report(tmp_path)
    assert cli.main(["report", "--run-dir", str(tmp_path)]) == 2
    assert "medlsdm run" in caplog.text


def test_vendored_javascript_matches_its_readme_and_stays_small(tmp_path):
    readme = (STATIC_DIR / "README.md").read_text()
    written = install_static(tmp_path)
    for path in written:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest in readme, f"{path.name}: sha256 {digest} not listed in medlsdm/static/README.md"
    assert (tmp_path / "embed-amd.js").read_bytes() == lzma.decompress((STATIC_DIR / "embed-amd.js.xz").read_bytes())
    assert (tmp_path / "embed-amd.js").read_bytes().startswith(b"/*! For license information")
    shipped = sum(p.stat().st_size for p in STATIC_DIR.iterdir())
    assert shipped < 600_000, f"medlsdm/static/ holds {shipped} bytes"


def test_vendored_files_are_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "static/*" in config["tool"]["setuptools"]["package-data"]["medlsdm"]


def test_index_lists_sweeps_with_embedded_plot(tmp_path):
    import nbformat

    run = tmp_path / "run"
    (run / "executed").mkdir(parents=True)
    nbformat.write(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# hello")]),
        run / "executed" / "01_preprocessing.ipynb",
    )
    (run / "sweeps").mkdir()
    (run / "sweeps" / "04_synthesis.csv").write_text("guidance_scale,psnr\n0.0,20.5\n2.0,22.25\n")
    (run / "sweeps" / "04_synthesis.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    home = build_report(run).read_text()
    assert "<td>22.25</td>" in home and "<th>guidance_scale</th>" in home
    assert 'src="data:image/png;base64,' in home
    assert not report_scripts(home)
