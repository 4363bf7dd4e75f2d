"""Effect handlers an objective puts around a model/guide pair: β on the latents, N/B on the data.

* :class:`ScaleLatents` — the β-ELBO (Higgins et al., 2017): every latent sample site's
  log-density, in the model and the guide, is weighted by β, so the objective is
  E_q[log p(x|z)] − β·KL(q(z|x) ‖ p(z)). β = 0 masks the latent terms out (``poutine.scale``
  refuses 0): the reconstruction term alone, a plain autoencoder with a point-mass guide.
* :class:`ScaleData` — the full-data ELBO from a minibatch: the terms of sites under the
  ``"data"`` plate count N/B times, global latents (outside the plate) once, as Pyro's
  ``plate(subsample=...)`` does (Hoffman et al., 2013, stochastic variational inference).
  A plate that already declares the full size N (the program subsamples itself) is left alone.

>>> import pyro, torch, pyro.distributions as dist
>>> from pyro import poutine
>>> def model(x):
...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
...     with pyro.plate("data", x.shape[0]):
...         pyro.sample("x", dist.Normal(mu, 1.0), obs=x)
>>> tr = poutine.trace(ScaleData(10.0)(model)).get_trace(torch.zeros(5))
>>> tr.nodes["mu"]["scale"], tr.nodes["x"]["scale"]
(1.0, 10.0)
"""

from __future__ import annotations

from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pyro_gen.models.pair import DATA_PLATE

__all__ = ["ScaleLatents", "ScaleData"]


class ScaleLatents(Messenger):
    """Weight every latent (unobserved) sample site by ``beta`` >= 0; 0 masks them out."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = float(beta)

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or msg["is_observed"] or site_is_subsample(msg):
            return
        if self.beta == 0.0:
            msg["mask"] = False if msg["mask"] is None else msg["mask"] & False
        elif self.beta != 1.0:
            msg["scale"] = msg["scale"] * self.beta


class ScaleData(Messenger):
    """Weight the sites under the ``"data"`` plate by ``factor`` (N/B for a minibatch of B of N),
    unless the plate already has a size other than the batch's (it subsamples itself)."""

    def __init__(self, factor: float = 1.0) -> None:
        super().__init__()
        self.factor = float(factor)

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or site_is_subsample(msg) or self.factor == 1.0:
            return
        for frame in msg["cond_indep_stack"]:
            if frame.name == DATA_PLATE:
                if frame.full_size is None or frame.full_size == frame.size:
                    msg["scale"] = msg["scale"] * self.factor
                return
