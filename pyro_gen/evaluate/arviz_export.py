"""Evaluation results as ``arviz.InferenceData``, saved as netCDF (h5netcdf, an ArviZ dependency).

Groups: ``posterior`` = guide draws of every latent site for chosen points, dims
``(chain, draw, point, latent_dim)`` (``{site}_dim`` when the guide has several sites);
``log_likelihood`` = pointwise log p̂(x), dims ``(chain, draw, datapoint)`` with one chain and
one draw (it is an importance-sampled estimate, not a posterior draw); ``sample_stats`` = the
per-datapoint diagnostics, with the summary's scalars as attributes.

>>> import torch
>>> from pyro_gen.models import VAE
>>> vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
>>> idata = to_inference_data(vae, torch.ones(5, 4), num_samples=30, points=2, num_draws=10)
>>> dict(idata.posterior["z"].sizes)
{'chain': 2, 'draw': 10, 'point': 2, 'latent_dim': 2}
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn

from pyro_gen.errors import ConfigError
from pyro_gen.evaluate.diagnostics import Diagnostics, diagnose, import_arviz, per_datapoint_table
from pyro_gen.evaluate.log_likelihood import check_guide
from pyro_gen.io import fsync_dir
from pyro_gen.models.pair import as_pair, evaluating, prepare_and_check

__all__ = ["to_inference_data", "save_inference_data", "load_inference_data", "guide_draws"]

_PER_POINT = ("log_px", "elbo", "reconstruction", "kl", "gap", "ess", "khat")


@torch.no_grad()
def guide_draws(
    model,
    x: torch.Tensor,
    *,
    guide: Callable | None = None,
    module: nn.Module | None = None,
    num_draws: int = 500,
    seed: int | None = 0,
    **kwargs,
) -> dict[str, torch.Tensor]:
    """``{site: [num_draws, N, D]}``: draws of every latent site from q(z | x_n), flattened
    per datapoint (all draws in one vectorised guide call over ``num_draws x N`` rows).

    ``x`` goes through :func:`pyro_gen.models.prepare_and_check` first (DataError, ShapeError,
    ConfigError as there)."""
    pair = as_pair(model, guide, module)
    if num_draws < 1:
        raise ConfigError(f"num_draws must be >= 1; got {num_draws}.")
    with evaluating(pair.module):
        x = prepare_and_check(pair, x, "x", **kwargs)
    n, device = x.shape[0], pair.device
    xs = x.to(device).repeat(num_draws, *([1] * (x.dim() - 1)))
    kw = {
        k: v.to(device).repeat(num_draws, *([1] * (v.dim() - 1)))
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n
        else v
        for k, v in kwargs.items()
    }
    with evaluating(pair.module, seed):
        tr = poutine.trace(pair.guide).get_trace(xs, **kw)
    out = {}
    for name, site in tr.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
            continue
        table = per_datapoint_table(name, site, site["value"], len(site["fn"].event_shape), len(xs))
        out[name] = table.reshape(num_draws, n, -1).cpu()
    return out


def _attr(value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, str)):
        return value
    return None


def to_inference_data(
    model,
    x: torch.Tensor,
    diagnostics: Diagnostics | None = None,
    *,
    guide: Callable | None = None,
    module: nn.Module | None = None,
    points: int | Sequence[int] = 10,
    num_chains: int = 2,
    num_draws: int = 250,
    num_samples: int = 1000,
    index: Sequence[int] | None = None,
    seed: int | None = 0,
    **kwargs,
):
    """An ``arviz.InferenceData`` of the guide's posterior draws, log p̂(x) and diagnostics.

    ``points``: how many leading rows of ``x`` (or which row indices) get posterior draws
    (``num_chains x num_draws`` independent guide draws each; several chains let ``az.summary``
    report r̂, which should be ≈ 1 for independent draws). ``diagnostics`` defaults to
    :func:`diagnose` with ``num_samples``; ``index`` labels the datapoints (e.g. their positions
    in the test split).

    ``x`` goes through :func:`pyro_gen.models.prepare_and_check` first; raises what
    :func:`diagnose` raises (a Delta guide: PointMassGuideError) and ConfigError for options.
    """
    az = import_arviz()
    pair = as_pair(model, guide, module)
    with evaluating(pair.module):
        x = prepare_and_check(pair, x, "x", **kwargs)
    n = x.shape[0]
    if diagnostics is None:
        diagnostics = diagnose(
            pair.model,
            x,
            guide=pair.guide,
            module=pair.module,
            num_samples=num_samples,
            seed=seed,
            **kwargs,
        )
    if diagnostics.num_datapoints != n:
        raise ConfigError(
            f"diagnostics cover {diagnostics.num_datapoints} datapoints but x has {n} rows."
        )
    rows = list(range(min(int(points), n))) if isinstance(points, int) else [int(p) for p in points]
    if any(not 0 <= r < n for r in rows):
        raise ConfigError(f"points must be row indices of x in [0, {n}); got {rows}.")
    index = np.arange(n) if index is None else np.asarray(index)
    if len(index) != n:
        raise ConfigError(f"index has {len(index)} labels for {n} datapoints.")
    if num_chains < 1:
        raise ConfigError(f"num_chains must be >= 1; got {num_chains}.")

    posterior, dims, coords = {}, {}, {"datapoint": index}
    if rows:
        coords["point"] = index[rows]
        with pyro.validation_enabled(False):
            check_guide(pair, x, **kwargs)
        sel = torch.as_tensor(rows)
        kw = {
            k: v[sel] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n else v
            for k, v in kwargs.items()
        }
        draws = guide_draws(
            pair.model,
            x[sel],
            guide=pair.guide,
            module=pair.module,
            num_draws=num_chains * num_draws,
            seed=seed,
            **kw,
        )
        for name, d in draws.items():
            dim = "latent_dim" if len(draws) == 1 else f"{name}_dim"
            posterior[name] = d.reshape(num_chains, num_draws, *d.shape[1:]).numpy()
            dims[name] = ["point", dim]
    stats = {k: getattr(diagnostics, k).double().numpy()[None, None] for k in _PER_POINT}
    stats["kl_per_dim"] = diagnostics.kl_per_dim.double().numpy()[None, None]
    dims.update({k: ["datapoint"] for k in _PER_POINT})
    dims["kl_per_dim"] = ["datapoint", "kl_dim"]
    coords["kl_dim"] = np.asarray(diagnostics.kl_names, dtype=str)
    dims["x"] = ["datapoint"]
    summary = diagnostics.summary()
    idata = az.from_dict(
        posterior=posterior or None,
        log_likelihood={"x": diagnostics.log_px.double().numpy()[None, None]},
        sample_stats=stats,
        coords=coords,
        dims=dims,
        attrs={
            "source": "pyro_gen",
            "log_likelihood_method": f"importance sampling, K={diagnostics.num_samples}",
        },
    )
    idata.sample_stats.attrs.update(
        {k: a for k, v in summary.items() if (a := _attr(v)) is not None}
    )
    return idata


def save_inference_data(idata, path: str | os.PathLike) -> Path:
    """Write netCDF atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        idata.to_netcdf(tmp, engine="h5netcdf")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def load_inference_data(path: str | os.PathLike):
    """Read an InferenceData written by :func:`save_inference_data` (loaded into memory)."""
    az = import_arviz()
    idata = az.from_netcdf(str(path))
    for group in idata.groups():
        getattr(idata, group).load()
    return idata
