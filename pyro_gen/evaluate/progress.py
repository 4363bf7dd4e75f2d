"""Progress bars for long evaluations (tqdm), shown on a terminal and hidden elsewhere.

``progress=None`` (the default of the evaluators): a bar when stderr is a terminal (or a
notebook), none in logs and tests; True always; False never.

>>> bar = progress_bar(10, "log p(x)", progress=False)
>>> bar.update(10); bar.close()
"""

from __future__ import annotations

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(
    total: int, desc: str, progress: bool | None = None, unit: str = "datapoint", **kwargs
) -> tqdm:
    """A tqdm bar over ``total`` ``unit`` s; ``progress`` as described in the module."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=None if progress is None else not progress,
        dynamic_ncols=True,
        leave=kwargs.pop("leave", False),
        **kwargs,
    )
