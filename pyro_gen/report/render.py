"""The report pages: registered sections laid out by Jinja2 templates into one HTML file.

Figures are embedded (base64 PNG ``data:`` URIs), the style sheet is inline and there is no
script, so ``report.html`` opens anywhere, offline, on its own (mail it, copy it out of the run).

>>> import tempfile
>>> html = build_report(tempfile.mkdtemp())
>>> "<html" in html and "http" not in html.split("<body")[1]
True
"""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import jinja2

from pyro_gen.io import atomic_open
from pyro_gen.report.run import RunRecord, RunSet, load_run
from pyro_gen.report.sections import Section, providers

__all__ = [
    "data_uri",
    "build_report",
    "write_report",
    "build_comparison_report",
    "write_comparison_report",
]

_ENV: jinja2.Environment | None = None


def _env() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        _ENV = jinja2.Environment(
            loader=jinja2.PackageLoader("pyro_gen.report", "templates"),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _ENV


def data_uri(image, dpi: int = 100) -> str:
    """A ``data:image/png;base64,...`` URI of a matplotlib Figure (closed afterwards), PNG
    bytes, or the path of a PNG file."""
    if isinstance(image, (str, os.PathLike)):
        data = Path(image).read_bytes()
    elif isinstance(image, bytes):
        data = image
    else:  # a matplotlib Figure
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        image.savefig(buf, format="png", dpi=dpi)
        plt.close(image)
        data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _sections(kind: str, subject) -> list[Section]:
    out: list[Section] = []
    for p in providers(kind):
        made = p.function(subject)
        if made is None:
            continue
        for s in made if isinstance(made, list) else [made]:
            s.name = s.name or p.name
            out.append(s)
    return out


def _render(template: str, title: str, sections: list[Section], started: float, **extra) -> str:
    from pyro_gen import __version__

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        _env()
        .get_template(template)
        .render(
            title=title,
            sections=sections,
            generated=now,
            version=__version__,
            build_seconds=time.perf_counter() - started,
            **extra,
        )
    )


def build_report(run: str | os.PathLike | RunRecord) -> str:
    """The HTML text of one run's report (every registered ``"run"`` section)."""
    started = time.perf_counter()
    record = run if isinstance(run, RunRecord) else load_run(run)
    record.claimed.clear()
    sections = _sections("run", record)
    return _render("report.html", f"run {record.name}", sections, started, run=record)


def write_report(run: str | os.PathLike | RunRecord, path: str | os.PathLike | None = None) -> Path:
    """Write ``RUN/report.html`` (or ``path``) atomically; returns its path."""
    record = run if isinstance(run, RunRecord) else load_run(run)
    path = Path(path) if path is not None else record.path / "report.html"
    html = build_report(record)
    with atomic_open(path) as f:
        f.write(html)
    return path


def build_comparison_report(
    runs: Sequence[str | os.PathLike | RunRecord], comparison=None, links_from: Path | None = None
) -> str:
    """The HTML text of a page over several runs (every ``"comparison"`` section).

    ``comparison``: a :class:`pyro_gen.evaluate.Comparison` of these runs on the same test
    points (``pyro-gen compare``), shown as its ranked table and figure. ``links_from``: the
    folder the page is written to (links to each run's report.html are relative to it)."""
    started = time.perf_counter()
    records = [r if isinstance(r, RunRecord) else load_run(r) for r in runs]
    runset = RunSet(records, comparison=comparison, links_from=links_from)
    sections = _sections("comparison", runset)
    title = "comparison of " + ", ".join(r.name for r in records)
    return _render("report.html", title, sections, started, run=None)


def write_comparison_report(
    runs: Sequence[str | os.PathLike | RunRecord], path: str | os.PathLike, comparison=None
) -> Path:
    """Write the page over several runs to ``path`` atomically; returns its path."""
    path = Path(path)
    html = build_comparison_report(runs, comparison, links_from=path.parent)
    with atomic_open(path) as f:
        f.write(html)
    return path
