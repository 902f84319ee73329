"""Helpers for the browser tests: a throw-away JupyterLab server and headless Chromium.

- :class:`JupyterLab` starts ``jupyter lab`` on loopback with a random token, with every
  Jupyter config/data/runtime/settings folder in a temporary directory (nothing of the
  user's setup leaks in, nothing is left behind), and stops it with its kernels.
- :func:`find_chromium` / :func:`launch_chromium` start the system Chromium through
  Playwright's Python package (never a downloaded browser: no ``playwright install``).
- The ``lab_*`` functions drive a notebook through the JupyterLab UI: open it, Run → Run
  All Cells from the menu, wait for every cell to finish, find tracebacks.

Selectors, checked against the live DOM of JupyterLab 4.6 / ipywidgets 8.1 / ipyniivue 2.4:

- menus: ``.lm-MenuBar-item`` → ``.lm-Menu-item`` by their ``.lm-Menu-itemLabel`` text
  ("Run" → "Run All Cells" is the command ``runmenu:run-all``);
- kernel state: ``.jp-Notebook-ExecutionIndicator[data-status="idle"]`` in the notebook
  toolbar *and* a kernel name in ``.jp-KernelName`` (the indicator says "idle" before a
  kernel is even connected); a cell's prompt ``.jp-InputArea-prompt`` reads ``[ ]:``,
  ``[*]:`` or ``[3]:``;
- errors: JupyterLab renders a traceback with the *stderr* MIME type,
  ``.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]``, like any
  warning on stderr (there is no ``application/vnd.jupyter.error`` element): a traceback
  is told apart by its text (``Traceback (most recent call last)``), by the cells after it
  left unexecuted (Run All stops there), and by ``"output_type": "error"`` in the saved
  notebook;
- the slice viewer: ``.medlsdm-slice-viewer`` (a ``VBox``), its sliders
  ``.widget-slider`` with an editable ``.widget-readout``, its picture
  ``img.widget-image`` (a ``blob:`` URL, replaced on each change);
- the ipyniivue viewer: a WebGL2 ``<canvas>`` inside the widget's output
  (``.jp-OutputArea-output canvas``; matplotlib figures are ``<img>``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--disable-crash-reporter",
    "--disable-breakpad",
    # WebGL2 without a GPU (ipyniivue draws with WebGL2): software rendering
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
]

#: JupyterLab settings for a quiet, deterministic UI: no news or update checks (no network),
#: every cell attached to the DOM (no windowing), no extension manager.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
LAB_PAGE_CONFIG = {
    "disabledExtensions": {
        "@jupyterlab/extensionmanager-extension": True,
        "@jupyterlab/apputils-extension:announcements": True,
    }
}


def find_chromium() -> str | None:
    """The Chromium executable: ``$MEDLSDM_CHROMIUM``, else the first one on ``PATH``."""
    explicit = os.environ.get("MEDLSDM_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def launch_chromium(playwright, executable: str):
    """Headless Chromium through Playwright, with no network access of its own."""
    return playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """A JupyterLab server for one test session; use as a context manager.

    Args:
        root_dir: the folder the server serves (notebooks are opened relative to it).
        home: a temporary folder for all of Jupyter's config, data, runtime and settings.
        log_path: where the server's output goes (kept as a test artefact).
        start_timeout: seconds to wait for the server to answer.
    """

    def __init__(self, root_dir: Path, home: Path, log_path: Path | None = None, start_timeout: float = 180):
        self.root_dir = Path(root_dir).resolve()
        self.home = Path(home).resolve()
        self.log_path = Path(log_path) if log_path else self.home / "jupyterlab.log"
        self.start_timeout = start_timeout
        self.token = secrets.token_hex(24)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def _environment(self) -> dict[str, str]:
        dirs = {
            "JUPYTER_CONFIG_DIR": self.home / "config",
            "JUPYTER_DATA_DIR": self.home / "data",
            "JUPYTER_RUNTIME_DIR": self.home / "runtime",
            "JUPYTERLAB_SETTINGS_DIR": self.home / "lab-settings",
            "JUPYTERLAB_WORKSPACES_DIR": self.home / "lab-workspaces",
            "IPYTHONDIR": self.home / "ipython",
            "MPLCONFIGDIR": self.home / "matplotlib",
        }
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        for name, settings in LAB_SETTINGS.items():
            target = dirs["JUPYTERLAB_SETTINGS_DIR"] / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(settings))
        (dirs["JUPYTER_CONFIG_DIR"] / "labconfig").mkdir(exist_ok=True)
        (dirs["JUPYTER_CONFIG_DIR"] / "labconfig" / "page_config.json").write_text(json.dumps(LAB_PAGE_CONFIG))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
        env.update({k: str(v) for k, v in dirs.items()})
        env["JUPYTER_PLATFORM_DIRS"] = "1"
        return env

    def start(self) -> "JupyterLab":
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.terminals_enabled=False",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            cmd, cwd=self.root_dir, env=self._environment(), stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=5) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"jupyter lab did not answer within {self.start_timeout} s; see {self.log_path}")

    def stop(self) -> None:
        """Shut the server down (SIGTERM: it shuts its kernels down first), then close the log.

        The server stays in the caller's process group, so a CI job killed as a whole
        takes it (and its kernels) along.
        """
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.shutdown_sessions()
            except (urllib.error.URLError, OSError):
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def __enter__(self) -> "JupyterLab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def shutdown_sessions(self) -> None:
        """Shut down every kernel session (between notebooks: no kernels piling up)."""
        headers = {"Authorization": f"token {self.token}"}
        req = urllib.request.Request(f"{self.url}/api/sessions", headers=headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            sessions = json.load(r)
        for session in sessions:
            req = urllib.request.Request(f"{self.url}/api/sessions/{session['id']}", headers=headers, method="DELETE")
            with urllib.request.urlopen(req, timeout=60):
                pass

    def lab_url(self, relpath: str) -> str:
        """The URL that opens ``relpath`` (relative to ``root_dir``) in a fresh workspace."""
        return f"{self.url}/lab/tree/{relpath}?reset&token={self.token}"


# --------------------------------------------------------------------------------------
# Driving a notebook through the JupyterLab UI
# --------------------------------------------------------------------------------------

#: Every code cell's input prompt, e.g. ``[3]:`` (done), ``[*]:`` (running or queued).
PROMPT = ".jp-Notebook .jp-CodeCell .jp-InputArea-prompt"


def lab_open_notebook(page, lab: JupyterLab, relpath: str, timeout_s: float = 180) -> None:
    """Open a notebook and wait until its kernel is idle."""
    page.goto(lab.lab_url(relpath), timeout=timeout_s * 1000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=timeout_s * 1000)
    lab_wait_kernel_idle(page, timeout_s)


def lab_kernel_status(page) -> str | None:
    return page.get_attribute(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator", "data-status")


#: True once a kernel is connected and idle. The toolbar's execution indicator alone is not
#: enough: it reads "idle" while the session is still "No Kernel | Initializing" (a Run All
#: clicked then executes nothing); the kernel name must be there too.
_KERNEL_READY = """() => {
    const indicator = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
    const name = document.querySelector('.jp-NotebookPanel .jp-KernelName');
    const kernel = name ? name.textContent.trim() : '';
    return !!indicator && indicator.getAttribute('data-status') === 'idle'
        && kernel !== '' && kernel !== 'No Kernel';
}"""


def lab_wait_kernel_idle(page, timeout_s: float) -> None:
    """Wait until the notebook's kernel is connected and idle."""
    page.wait_for_function(_KERNEL_READY, timeout=timeout_s * 1000, polling=250)


def lab_run_all(page, timeout_s: float = 600) -> None:
    """Run → Run All Cells (the menu, like a user), then wait until the run is over.

    Over means: no cell is running or queued (``[*]:``) any more and the kernel is idle. A
    cell that raises stops the run (the cells after it keep an empty prompt); tell that
    apart with :func:`lab_error_outputs` and :func:`lab_unexecuted_cells`.
    """
    page.click('.lm-MenuBar-item:has(.lm-MenuBar-itemLabel:text-is("Run"))')
    page.click('.lm-Menu-item:has(.lm-Menu-itemLabel:text-is("Run All Cells"))')
    try:  # the first code cell is queued or done within seconds, or Run All did nothing
        page.wait_for_function(
            "sel => { const p = document.querySelector(sel); return p && p.textContent.trim() !== '[ ]:'; }",
            arg=PROMPT,
            timeout=min(timeout_s, 120) * 1000,
            polling=250,
        )
    except Exception as exc:
        raise AssertionError("Run → Run All Cells started no cell (kernel not connected?)") from exc
    page.wait_for_function(
        """sel => {
            const prompts = [...document.querySelectorAll(sel)].map(p => p.textContent.trim());
            return prompts.length > 0 && prompts[0] !== '[ ]:' && !prompts.some(t => t === '[*]:');
        }""",
        arg=PROMPT,
        timeout=timeout_s * 1000,
        polling=500,
    )
    lab_wait_kernel_idle(page, timeout_s)


def lab_unexecuted_cells(page) -> list[int]:
    """Indices of the code cells without an execution count (not run, or aborted)."""
    prompts = page.eval_on_selector_all(PROMPT, "els => els.map(e => e.textContent.trim())")
    return [i for i, text in enumerate(prompts) if not (text.startswith("[") and text[1:-2].isdigit())]


#: What IPython's tracebacks look like (a SyntaxError has no "Traceback" line, only "Cell In[n]").
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*Cell In\[\d+\], line \d+", re.M)
#: stderr outputs; tracebacks are among them (see the module docstring).
STDERR_OUTPUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'


def lab_error_outputs(page) -> list[str]:
    """The text of every traceback shown in the notebook (stderr warnings are not errors)."""
    texts = page.eval_on_selector_all(STDERR_OUTPUT, "els => els.map(e => e.innerText)")
    return [t for t in texts if TRACEBACK.search(t)]


def lab_save(page, timeout_s: float = 60) -> None:
    """File → Save Notebook, and wait until the tab is no longer marked dirty."""
    page.click('.lm-MenuBar-item:has(.lm-MenuBar-itemLabel:text-is("File"))')
    page.click('.lm-Menu-item[data-command="docmanager:save"]')
    page.wait_for_function(
        "() => !document.querySelector('.lm-TabBar-tab.jp-mod-current.jp-mod-dirty')", timeout=timeout_s * 1000
    )


def screenshot_array(locator):
    """An element's screenshot as an ``(H, W, 3)`` uint8 array."""
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB"))


def grey_fraction(rgb, threshold: int = 40, max_chroma: int = 30) -> float:
    """Fraction of bright grey pixels: a rendered grey-scale volume, not the black background
    or coloured overlays and crosshairs."""
    rgb = rgb.astype(int)
    hi, lo = rgb.max(axis=2), rgb.min(axis=2)
    return float(((hi > threshold) & (hi - lo < max_chroma)).mean())


def full_page_screenshot(page, path: Path, max_height: int = 20000) -> None:
    """Screenshot the whole notebook: grow the viewport to the notebook's scroll height."""
    height = page.evaluate(
        """() => { const n = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer')
                           || document.querySelector('.jp-NotebookPanel .jp-Notebook');
                   return n ? n.scrollHeight : document.body.scrollHeight; }"""
    )
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": int(min(max(height + 200, size["height"]), max_height))})
    page.wait_for_timeout(500)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
