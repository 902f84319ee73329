"""Real JupyterLab in real (headless) Chromium: the notebooks as a user runs them, and the
offline HTML report.

For each notebook 01–05: the earlier notebooks run first with papermill (smoke
profile) into one run directory; a papermill-parameterised copy (smoke, ``interactive=True``,
that run directory) is opened in JupyterLab, Run → Run All Cells is clicked, and after the
kernel is idle the test checks: no traceback, every cell executed, the orthogonal-slice
viewer is there and moving its slider changes the picture, the ipyniivue 3-D viewer's
WebGL canvas shows a grey-scale volume. Screenshots, the saved notebooks and the server log
go to ``tests/artifacts/browser/``.

Not part of the default ``pytest`` run (marker ``browser``); ``.ci/run`` runs it with
``pytest -m browser``. It needs Chromium (``apt-get install chromium``) and the
``playwright`` Python package (never ``playwright install``: the system Chromium is used);
without them the tests skip, unless ``MEDLSDM_REQUIRE_BROWSER=1`` (CI) turns that into a
failure.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from browser_utils import (
    JupyterLab,
    find_chromium,
    full_page_screenshot,
    grey_fraction,
    lab_error_outputs,
    lab_open_notebook,
    lab_run_all,
    lab_save,
    lab_unexecuted_cells,
    launch_chromium,
    screenshot_array,
)

from medlsdm.profiles import notebook_parameters
from medlsdm.runner import DEFAULT_NOTEBOOKS_DIR, find_notebooks, run_notebooks

pytestmark = [pytest.mark.browser, pytest.mark.timeout(2400)]

#: The notebooks driven through JupyterLab (those that exist).
BROWSER_NOTEBOOKS = ("01", "02", "03", "04", "05")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "browser"
REPO = DEFAULT_NOTEBOOKS_DIR.parent
#: Minutes are normal on 2 shared CPU cores: the smoke profile still trains small models.
RUN_TIMEOUT_S = 1200


def _browser_notebooks() -> list[Path]:
    return [p for p in find_notebooks() if p.name[:2] in BROWSER_NOTEBOOKS]


def _need(what: str, reason: str):
    if os.environ.get("MEDLSDM_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{what} is required (MEDLSDM_REQUIRE_BROWSER=1): {reason}")
    pytest.skip(f"{what} not available: {reason}")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("the playwright Python package", "pip install playwright (no `playwright install` needed)")
    executable = find_chromium()
    if executable is None:
        _need("Chromium", "apt-get install chromium (or set MEDLSDM_CHROMIUM to a Chromium/Chrome binary)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = launch_chromium(p, executable)
        yield b
        b.close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A Lab root (``notebooks/`` for the parameterised copies, the repo's other top-level
    folders linked next to it, so ``../`` paths resolve as in the repository) and a run dir."""
    base = tmp_path_factory.mktemp("browser")
    root = base / "lab"
    (root / "notebooks").mkdir(parents=True)
    for entry in REPO.iterdir():
        if entry.name not in {"notebooks", "tests", "runs", ".git", ".venv"} and entry.is_dir():
            (root / entry.name).symlink_to(entry)
    return {"base": base, "root": root, "run": base / "run", "papermill_done": set()}


@pytest.fixture(scope="module")
def lab(workspace, browser):
    server = JupyterLab(workspace["root"], workspace["base"] / "jupyter-home", log_path=ARTIFACTS / "jupyterlab.log")
    with server:
        yield server


def _prepare(notebook: Path, workspace) -> Path:
    """Run the earlier notebooks with papermill; write the parameterised copy; return it."""
    import papermill

    earlier = [p.name[:2] for p in find_notebooks() if p.name[:2] < notebook.name[:2]]
    todo = [key for key in earlier if key not in workspace["papermill_done"]]
    if todo:
        run_notebooks("smoke", workspace["run"], only=todo)
        workspace["papermill_done"].update(todo)
    params = {
        **notebook_parameters("smoke", notebook.stem),
        "profile": "smoke",
        "interactive": True,
        "run_dir": str(workspace["run"]),
    }
    target = workspace["root"] / "notebooks" / notebook.name
    papermill.execute_notebook(str(notebook), str(target), parameters=params, prepare_only=True, progress_bar=False)
    return target


def _check_slice_viewer(page, stem: str) -> None:
    viewer = page.locator(".medlsdm-slice-viewer").first
    sliders = viewer.locator(".widget-slider")
    assert sliders.count() == 3, f"{stem}: the slice viewer should have 3 sliders"
    image = viewer.locator("img.widget-image")
    image.scroll_into_view_if_needed()
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=image.element_handle(), timeout=30000)
    before = screenshot_array(image)
    before_src = image.get_attribute("src")
    handle = sliders.first.locator(".noUi-handle")
    value, top = int(float(handle.get_attribute("aria-valuenow"))), int(float(handle.get_attribute("aria-valuemax")))
    new = 0 if value != 0 else top
    readout = sliders.first.locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(new))
    page.keyboard.press("Enter")
    # the kernel re-renders the PNG; the widget swaps the <img> source when it arrives
    page.wait_for_function(
        "([el, src]) => el.getAttribute('src') !== src && el.complete && el.naturalWidth > 0",
        arg=[image.element_handle(), before_src],
        timeout=60000,
    )
    assert int(float(handle.get_attribute("aria-valuenow"))) == new
    after = screenshot_array(image)
    (ARTIFACTS / f"{stem}_slice_viewer_before.png").write_bytes(_png(before))
    (ARTIFACTS / f"{stem}_slice_viewer_after.png").write_bytes(_png(after))
    assert before.shape == after.shape
    diff = abs(before.astype(int) - after.astype(int)).mean()
    assert diff > 0.5, (
        f"{stem}: moving the axial slider from {value} to {new} did not change the picture (mean |Δ| {diff:.2f})"
    )


def _png(rgb) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _check_canvas(page, stem: str, timeout_s: float = 60) -> None:
    canvas = page.locator(".jp-OutputArea-output canvas").first
    canvas.scroll_into_view_if_needed()
    deadline = time.monotonic() + timeout_s
    while True:  # volumes load asynchronously: poll until the grey-scale image is drawn
        rgb = screenshot_array(canvas)
        grey = grey_fraction(rgb)
        if grey > 0.05 or time.monotonic() > deadline:
            break
        page.wait_for_timeout(1000)
    (ARTIFACTS / f"{stem}_3d_viewer.png").write_bytes(_png(rgb))
    assert grey > 0.05, f"{stem}: the 3-D viewer's canvas shows no volume ({grey:.1%} grey pixels)"


@pytest.mark.parametrize("notebook", _browser_notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_in_jupyterlab(notebook, workspace, lab, browser):
    stem = notebook.stem
    copy = _prepare(notebook, workspace)
    source = "\n".join("".join(c["source"]) for c in json.loads(copy.read_text())["cells"] if c["cell_type"] == "code")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page_errors = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    try:
        start = time.perf_counter()
        lab_open_notebook(page, lab, f"notebooks/{notebook.name}")
        page.keyboard.press("Control+b")  # hide the file browser: room for the notebook
        lab_run_all(page, RUN_TIMEOUT_S)
        seconds = time.perf_counter() - start
        page.wait_for_timeout(1000)
        page.evaluate(
            "() => { const n = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');"
            " if (n) n.scrollTop = 0; }"
        )
        full_page_screenshot(page, ARTIFACTS / f"{stem}.png")

        errors = lab_error_outputs(page)
        assert not errors, f"{stem}: traceback in the notebook:\n" + "\n\n".join(errors)
        assert not lab_unexecuted_cells(page), f"{stem}: cells not executed: {lab_unexecuted_cells(page)}"
        lab_save(page)
        saved = json.loads(copy.read_text())
        shutil.copyfile(copy, ARTIFACTS / f"{stem}.ipynb")
        outputs = [o for c in saved["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o["output_type"] == "error"], f"{stem}: error output in the saved notebook"

        if "slice_viewer(" in source:
            assert page.locator(".medlsdm-slice-viewer").count() >= 1, f"{stem}: no slice viewer rendered"
            _check_slice_viewer(page, stem)
        if "volume_viewer_3d(" in source:
            assert page.locator(".jp-OutputArea-output canvas").count() >= 1, f"{stem}: no 3-D viewer canvas"
            _check_canvas(page, stem)
        (ARTIFACTS / f"{stem}.txt").write_text(
            f"run through the JupyterLab UI in {seconds:.1f} s\npage errors:\n" + "\n".join(page_errors) + "\n"
        )
    finally:
        page.close()
        lab.shutdown_sessions()


# --------------------------------------------------------------------------------------
# The offline report
# --------------------------------------------------------------------------------------


def test_report_renders_offline(tmp_path, browser):
    """The report of an interactive run opens from file:// with the network off: figures
    shown, the slice viewer rebuilt from the stored widget state, no request but file://."""
    from medlsdm.html_report import build_report

    run = tmp_path / "run"
    run_notebooks("smoke", run, only=["01"], overrides={"interactive": True})
    index = build_report(run)
    page_path = index.parent / "01_preprocessing.html"

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    requests = []

    def only_files(route):
        requests.append(route.request.url)
        if route.request.url.startswith(("file://", "data:", "blob:")):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", only_files)
    context.set_offline(True)
    page = context.new_page()
    page_errors = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    try:
        page.goto(index.as_uri())
        assert page.locator("a[href='01_preprocessing.html']").count() == 1
        assert "n_cases" in page.inner_text("body")

        page.goto(page_path.as_uri())
        page.wait_for_selector(".medlsdm-slice-viewer img.widget-image", timeout=60000)
        page.wait_for_function(
            "() => [...document.images].length > 0 && [...document.images].every(i => i.complete && i.naturalWidth "
            "> 0)",
            timeout=30000,
        )
        figures = page.eval_on_selector_all("img", "els => els.filter(e => e.src.startsWith('data:image/png')).length")
        assert figures >= 4, f"only {figures} embedded figures visible"
        viewer = page.locator(".medlsdm-slice-viewer")
        assert viewer.locator(".widget-slider").count() == 3
        picture = screenshot_array(viewer.locator("img.widget-image"))
        assert picture.std() > 5, "the slice viewer's picture is blank"
        if page.locator("canvas").count():  # ipyniivue from its stored state (anywidget, offline)
            _check_canvas(page, "report_01", timeout_s=30)
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "report_01_preprocessing.png"), full_page=True)
    finally:
        context.close()
    remote = [u for u in requests if not u.startswith(("file://", "data:", "blob:"))]
    assert not remote, f"the report asked the network for {remote}"
    assert not page_errors, f"JavaScript errors in the report: {page_errors}"
