"""history.csv's epoch column: the 1-based epoch of the row's last step, on every row."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from pyro_gen.infer import Trainer
from pyro_gen.models import VAE


@pytest.mark.parametrize("log_every", [2, 3, 4])
def test_epoch_column_counts_epochs_from_one_on_every_row(tmp_path, log_every):
    # 4 steps per epoch; log_every 4 puts a step row on each epoch's last step, where the
    # validation value joins it (this row read one epoch less than the others: 1, 2, 2, ...)
    vae = VAE(data_shape=(4,), latent_dim=2, hidden=(8,))
    x = torch.bernoulli(torch.full((64, 4), 0.5))
    trainer = Trainer(
        vae, run_dir=tmp_path, batch_size=16, epochs=3, log_every=log_every, progress=False
    )
    history = trainer.fit(x, x[:16])
    for row in history:
        assert row["epoch"] == math.ceil(row["step"] / 4), row
    valid = [r for r in history if r["valid_elbo"] != ""]
    assert [(r["step"], r["epoch"]) for r in valid] == [(4, 1), (8, 2), (12, 3)]
    with open(tmp_path / "history.csv", newline="") as f:
        written = [int(r["epoch"]) for r in csv.DictReader(f) if r["valid_elbo"]]
    assert written == [1, 2, 3]
