"""What a report page is made of, and the one place where sections are added.

A section is plain data (a title, paragraphs, cautions, tables, figures); the Jinja2 template
lays every section out the same way, so a new model family or verb adds what it knows about a
run by registering a function, never by editing the renderer or the template:

    from pyro_gen.report import Section, Table, register_section

    @register_section("mixture_components", order=45)
    def mixture_components(run):                 # run: pyro_gen.report.RunRecord
        if run.model_name != "gmm_vae":
            return None                          # not this run: no section
        return Section("Mixture components", paragraphs=["..."],
                       tables=[Table(["component", "weight"], [["0", "0.41"]])])

``order`` places the section on the page (the built-in ones use 10, 20, ..., 90); ``kind``
is ``"run"`` (one run's page) or ``"comparison"`` (the page over several runs, whose functions
take a RunSet: ``runs``, a list of RunRecords, and the ``comparison`` if there is one).

>>> s = Section("Numbers", tables=[Table(["a", "b"], [[1, 2.5]])])
>>> s.tables[0].rows
[['1', '2.5']]
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyro_gen.errors import ConfigError

__all__ = [
    "Section",
    "Link",
    "Table",
    "Image",
    "SectionProvider",
    "SECTIONS",
    "register_section",
    "unregister_section",
    "providers",
]


@dataclass(frozen=True)
class Link:
    """A table cell that links: ``text`` shown, ``href`` a relative path (e.g. another run's
    report.html); both are escaped by the template."""

    text: str
    href: str


def _cell(value: Any) -> str | Link:
    if value is None:
        return "–"
    if isinstance(value, Link):
        return value
    if isinstance(value, float):
        if value != value:  # NaN: a value that is not there (e.g. log p(x) of a β = 0 run)
            return "–"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.6g}"
    return str(value)


@dataclass
class Table:
    """A table: ``header`` (column names) and ``rows`` (cells; numbers are formatted to 4
    significant digits, None and NaN show as –, a :class:`Link` as a link)."""

    header: list[str]
    rows: list[list[Any]]
    caption: str = ""

    def __post_init__(self) -> None:
        self.header = [str(h) for h in self.header]
        self.rows = [[_cell(v) for v in row] for row in self.rows]
        bad = [i for i, r in enumerate(self.rows) if len(r) != len(self.header)]
        if bad:
            raise ConfigError(
                f"table rows {bad} do not have {len(self.header)} cells (one per header entry)."
            )


@dataclass
class Image:
    """An embedded figure: ``src`` is a ``data:`` URI (see :func:`pyro_gen.report.render.
    data_uri`), never a link, so that the page stands alone."""

    src: str
    caption: str = ""
    alt: str = ""

    def __post_init__(self) -> None:
        if not self.src.startswith("data:image/"):
            raise ConfigError(
                "report images must be embedded data: URIs (the page is opened without its "
                f"folder); got {self.src[:40]!r}. Use pyro_gen.report.data_uri(...)."
            )
        self.alt = self.alt or self.caption


@dataclass
class Section:
    """One part of a report page: ``title``, ``paragraphs`` (plain text), ``cautions`` (plain
    text shown as warnings: what not to trust and what to do), ``tables``, ``figures`` and
    ``details`` (tables shown folded)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    cautions: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Image] = field(default_factory=list)
    details: list[Table] = field(default_factory=list)
    name: str = ""

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", (self.name or self.title).lower()).strip("-")


SectionFunction = Callable[[Any], "Section | list[Section] | None"]


@dataclass
class SectionProvider:
    name: str
    function: SectionFunction
    order: float
    kind: str


SECTIONS: dict[str, SectionProvider] = {}
KINDS = ("run", "comparison")


def register_section(
    name: str, *, order: float = 100, kind: str = "run"
) -> Callable[[SectionFunction], SectionFunction]:
    """Decorator: ``function(run) -> Section | list[Section] | None`` adds its sections to
    every report of ``kind`` (``"run"``: one :class:`RunRecord`; ``"comparison"``: a
    :class:`RunSet`). Registering a name again replaces the earlier function (reloading a
    module)."""
    if kind not in KINDS:
        raise ConfigError(f"section kind must be one of {KINDS}; got {kind!r}.")

    def decorate(function: SectionFunction) -> SectionFunction:
        SECTIONS[name] = SectionProvider(name, function, float(order), kind)
        return function

    return decorate


def unregister_section(name: str) -> None:
    """Remove a registered section (tests; a family that wants to replace a built-in one)."""
    SECTIONS.pop(name, None)


def providers(kind: str) -> list[SectionProvider]:
    """The registered section functions of ``kind``, in page order."""
    return sorted((p for p in SECTIONS.values() if p.kind == kind), key=lambda p: p.order)
