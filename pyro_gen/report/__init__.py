"""The run report: one self-contained HTML page per run (``RUN/report.html``) and a page over
several runs, built from the run folder with Jinja2 templates; figures embedded as base64 PNG.

Families and verbs add sections through :func:`register_section` (see
:mod:`pyro_gen.report.sections`); the built-in sections are in :mod:`pyro_gen.report.builtin`.

    pyro-gen report runs/vae-shapes            # -> runs/vae-shapes/report.html

>>> import tempfile
>>> path = write_report(tempfile.mkdtemp())
>>> path.name
'report.html'
"""

from pyro_gen.report import builtin  # noqa: F401  (registers the built-in sections)
from pyro_gen.report.render import (
    build_comparison_report,
    build_report,
    data_uri,
    write_comparison_report,
    write_report,
)
from pyro_gen.report.run import RunRecord, RunSet, load_run
from pyro_gen.report.sections import (
    SECTIONS,
    Image,
    Section,
    Table,
    providers,
    register_section,
    unregister_section,
)

__all__ = [
    "build_report",
    "write_report",
    "build_comparison_report",
    "write_comparison_report",
    "data_uri",
    "RunRecord",
    "RunSet",
    "load_run",
    "Section",
    "Table",
    "Image",
    "SECTIONS",
    "register_section",
    "unregister_section",
    "providers",
]
