"""An offline, static HTML report of a run: every executed notebook as a web page.

``build_report("runs/demo")`` exports each notebook in ``RUN/executed/`` to
``RUN/report/<name>.html`` with nbconvert's ``lab`` template — figures embedded as data
URIs, and the widgets (the orthogonal-slice viewer, when the run used
``interactive=True``) rendered from the widget state the executed notebook carries — and
writes ``RUN/report/index.html`` with links, the run's ``metrics.json`` as tables, and the
run's parameter sweeps (``RUN/sweeps/*.csv`` with their plots), if any.

Offline: nbconvert's template loads require.js, the widget renderer and MathJax from CDNs.
Here they come from the copies vendored in ``medlsdm/static/`` (see its README), written to
``RUN/report/static/``; MathJax and mermaid are left out (TeX shows as its source). The
pages reference no ``http(s)://`` script, so the report opens from a USB stick or an e-mail.
"""

from __future__ import annotations

import base64
import csv
import html
import logging
import lzma
import os
import re
import shutil
from pathlib import Path
from typing import Any

import nbformat
from jinja2 import DictLoader
from nbconvert import HTMLExporter

from .atomic import atomic_path, write_text
from .errors import ConfigError, DataError
from .rundir import RunDir
from .tables import format_number

log = logging.getLogger(__name__)

#: The vendored JavaScript (package data).
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Files written to ``RUN/report/static/``: name there → vendored file (``.xz``: decompressed).
STATIC_FILES = {"require.js": "require.js", "embed-amd.js": "embed-amd.js.xz", "anywidget.js": "anywidget.js"}

# The lab template with every CDN reference replaced by the local copies:
# - require.js from static/, and a requirejs path for the anywidget front end;
# - data-jupyter-widgets-cdn points the widget manager's CDN fallback (for a widget library
#   that is not shipped) at the local folder too, so a missing one fails instead of fetching;
# - no MathJax, no mermaid.
_TEMPLATE = """\
{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}
<script src="static/require.js"></script>
<script data-jupyter-widgets-cdn="static/">
require.config({paths: {"anywidget": "static/anywidget"}});
</script>
{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}
<!-- offline report: MathJax is not shipped, TeX shows as its source -->
{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}
{%- endblock html_head_js_mermaidjs -%}
"""
_TEMPLATE_NAME = "medlsdm_offline.html.j2"


def install_static(dest: str | os.PathLike) -> list[Path]:
    """Write the vendored JavaScript into ``dest`` (created); return the written paths."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in STATIC_FILES.items():
        src = STATIC_DIR / source
        if not src.exists():
            raise ConfigError(f"{src}: vendored report file missing (reinstall medlsdm)")
        target = dest / name
        with atomic_path(target) as tmp:
            if source.endswith(".xz"):
                with lzma.open(src) as fin, open(tmp, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
            else:
                shutil.copyfile(src, tmp)
        written.append(target)
    return written


def make_exporter():
    """An ``HTMLExporter`` (lab template) that embeds images and references only local JS."""

    exporter = HTMLExporter(
        template_name="lab", extra_loaders=[DictLoader({_TEMPLATE_NAME: _TEMPLATE})], embed_images=True
    )
    exporter.template_file = _TEMPLATE_NAME
    # also set the traitlets (used by the parts of the template not overridden above)
    exporter.require_js_url = "static/require.js"
    exporter.widget_renderer_url = "static/embed-amd.js"
    exporter.mathjax_url = ""
    exporter.mermaid_js_url = ""
    exporter.mermaid_layout_elk_js_url = ""
    exporter.jupyter_widgets_base_url = "static/"
    return exporter


def export_notebook(path: str | os.PathLike, out_dir: str | os.PathLike, exporter=None) -> Path:
    """Export one executed notebook to ``out_dir/<stem>.html``; return its path."""

    path = Path(path)
    out_dir = Path(out_dir)
    exporter = exporter or make_exporter()
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types for a bad file
        raise DataError(f"{path}: not a readable notebook ({exc})") from None
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem, "path": str(path.parent)}})
    target = out_dir / f"{path.stem}.html"
    return write_text(target, body)


def _metric_rows(values: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(name, value)`` rows of one notebook's metrics, nested keys joined by ``.``, in order;
    scalars and short lists (a shape, a spacing) are kept, anything larger is left out."""
    rows = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _metric_rows(value, f"{name}.")
        elif value is None or isinstance(value, (bool, int, float, str)):
            rows.append((name, value))
        elif isinstance(value, (list, tuple)) and len(value) <= 16:
            rows.append((name, value))
    return rows


def _cell(value: Any) -> str:
    values = value if isinstance(value, (list, tuple)) else [value]
    return ", ".join(format_number(v, 6) for v in values)


def _sweeps_html(run: RunDir) -> str:
    """The run's sweeps (``RUN/sweeps/<notebook>.csv`` + ``.png``) as tables with their plot
    embedded, so the report stays one self-contained folder."""

    esc = html.escape
    parts = []
    for table in sorted(run.sweeps.glob("*.csv")):
        with open(table, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            continue
        head = "".join(f"<th>{esc(c)}</th>" for c in rows[0])
        body = "\n".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
        plot = table.with_suffix(".png")
        img = ""
        if plot.exists():
            data = base64.b64encode(plot.read_bytes()).decode()
            img = (
                f'<p><img alt="sweep plot of {esc(table.stem)}" style="max-width:100%" '
                f'src="data:image/png;base64,{data}"></p>'
            )
        parts.append(
            f'<h3 id="sweep-{esc(table.stem)}">{esc(table.stem)}</h3>\n{img}\n'
            f'<div style="overflow-x:auto"><table>\n<tr>{head}</tr>\n{body}\n</table></div>'
        )
    if not parts:
        return ""
    return "<h2>Sweeps (<code>medlsdm sweep</code>)</h2>\n" + "\n".join(parts)


def _index_html(run: RunDir, pages: list[Path], metrics: dict[str, Any]) -> str:
    esc = html.escape
    items = "\n".join(f'<li><a href="{esc(p.name)}">{esc(p.stem)}</a></li>' for p in pages)
    tables = []
    for key, values in metrics.items():
        rows = "\n".join(
            f"<tr><td>{esc(name)}</td><td>{esc(_cell(value))}</td></tr>"
            for name, value in (_metric_rows(values) if isinstance(values, dict) else [(key, values)])
        )
        tables.append(
            f'<h3 id="metrics-{esc(key)}">{esc(key)}</h3>\n'
            f"<table>\n<tr><th>metric</th><th>value</th></tr>\n{rows}\n</table>"
        )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>medlsdm report — {esc(run.root.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
td, th {{ border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: left; font-size: 0.9rem; }}
th {{ background: #f0f0f0; }}
td:nth-child(2) {{ font-family: monospace; }}
</style>
</head>
<body>
<h1>medlsdm report</h1>
<p>Run directory <code>{esc(str(run.root))}</code>. The pages work offline; widgets show the
state they had when the notebook was executed (no kernel behind them).</p>
<h2>Notebooks</h2>
<ul class="notebooks">
{items}
</ul>
<h2>Metrics (<code>metrics.json</code>)</h2>
{chr(10).join(tables) if tables else "<p>No metrics recorded.</p>"}
{_sweeps_html(run)}
</body>
</html>
"""


def build_report(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Export every notebook of ``RUN/executed/`` and write ``index.html``; return its path.

    Raises:
        DataError: the run directory does not exist (nothing is created).
        ConfigError: the run has no executed notebooks (run ``medlsdm run`` first).
    """
    run = RunDir(run_dir).require()
    executed = run.executed
    notebooks = sorted(executed.glob("*.ipynb"))
    if not notebooks:
        raise ConfigError(f"{executed}: no executed notebooks; run `medlsdm run --run-dir {run.root}` first")
    out = Path(out_dir) if out_dir else run.report
    install_static(out / "static")
    exporter = make_exporter()
    pages = []
    for path in notebooks:
        log.info("exporting %s", path.name)
        pages.append(export_notebook(path, out, exporter))
    index = out / "index.html"
    write_text(index, _index_html(run, pages, run.read_metrics()))
    log.info("report: %s", index)
    return index


def report_scripts(html_text: str) -> list[str]:
    """The ``src`` of every ``<script>`` in a page (what the tests check is local)."""

    return re.findall(r"<script[^>]*\bsrc=[\"']([^\"']*)[\"']", html_text)


__all__ = ["build_report", "export_notebook", "install_static", "make_exporter", "report_scripts", "STATIC_FILES"]
