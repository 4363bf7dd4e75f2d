"""The benchmark scripts run end to end in their --quick mode (slow: ``pytest -m slow``)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


# scripts that print a table and write no files: their own short command and a line to expect
PRINTING = {
    "compile_vs_capture": (["--steps", "3", "--variants", "eager,capture"], "capture"),
    "fit_startup": (["--quick", "--steps", "3", "--threads", "1"], "fixed cost"),
}
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.slow
@pytest.mark.parametrize("script", [p for p in SCRIPTS if p.stem in PRINTING], ids=lambda p: p.stem)
def test_printing_benchmark_runs(script: Path):
    argv, expected = PRINTING[script.stem]
    proc = subprocess.run(
        [sys.executable, str(script), *argv], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expected in proc.stdout, proc.stdout[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "script", [p for p in SCRIPTS if p.stem not in PRINTING], ids=lambda p: p.stem
)
def test_benchmark_quick_run_writes_its_results(script: Path, tmp_path: Path):
    out = tmp_path / "result"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--threads", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".png").stat().st_size > 1000


def _load_script(name: str):
    import importlib.util

    if str(ROOT / "benchmarks") not in sys.path:  # the scripts import their _common module
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_nll_table_smoke_run_on_tiny_generated_data(tmp_path: Path):
    """nll_table end to end in a few seconds: an exact model, a VQ-VAE (two stages), an absent
    model skipped with a note; table, CSV, JSON and both figures written."""
    nll_table = _load_script("nll_table")
    # a recipe whose model this checkout lacks is skipped with a note
    nll_table.RECIPES["not_a_model"] = nll_table.Recipe("absent", "not_a_model")
    out = tmp_path / "t"
    threads = torch.get_num_threads()
    try:
        rows = nll_table.main(
            ["--quick", "--models", "made,vqvae,not_a_model,ssvae", "--max-steps", "2"]
            + ["--anneal"]
            + ["--out", str(out)]
        )
        for bad in ("mdae", "", "made,made"):  # a typo, nothing, a repeat: errors, no table
            with pytest.raises(SystemExit):
                nll_table.main(["--quick", "--models", bad, "--out", str(tmp_path / "x")])
        assert not (tmp_path / "x.md").exists()
    finally:
        torch.set_num_threads(threads)  # main() sets --threads for the process
    by_key = {r["key"]: r for r in rows}
    made, vq, absent = by_key["made"], by_key["vqvae"], by_key["not_a_model"]
    assert made["status"] == "ok" and made["nll_kind"] == "exact" and made["gap"] == 0
    # --anneal under a step budget is the trainer's cosine over the steps, and says so
    assert made["lr_schedule"] == "cosine over the steps" and "lr schedule" in (
        out.with_suffix(".md").read_text()
    )
    assert made["reference"].startswith("n/a")  # generated data: no published figure applies
    assert made["test_nll"] == -made["elbo"] > 0
    assert vq["status"] == "ok" and vq["steps"] == 2  # one step per stage (joint, prior)
    # the VQ-VAE's number is its ELBO, a bound: never "exact", and its gap is unknown
    assert vq["nll_kind"] == "ELBO (point-mass guide)" and vq["gap"] != vq["gap"]
    assert vq["active_units"] == "n/a (discrete)"
    assert "perplexity" in vq["note"] and vq["codebook"]["num_codes"] == 64
    assert absent["status"].startswith("skipped")
    # a model that cannot train on the table's data (the SSVAE needs --elbo enum) is a row
    # that says why, and the other rows are kept
    assert by_key["ssvae"]["status"].startswith("skipped: ConfigError")
    table = out.with_suffix(".md").read_text()
    assert "MADE" in table and "not_a_model" in table and "CPU-min" in table
    saved = json.loads(out.with_suffix(".json").read_text())
    assert [r["key"] for r in saved["rows"]] == ["made", "vqvae", "not_a_model", "ssvae"]
    assert len(out.with_suffix(".csv").read_text().splitlines()) == 5
    for png in (out.with_suffix(".png"), tmp_path / "t_cpu.png"):
        assert png.stat().st_size > 1000
    assert all(len(r["curve"]) >= 1 for r in (made, vq))  # one point at the end of each stage
    # runs made in parallel are merged into one table (rows, samples and CPU time)
    merged = nll_table.main(["--combine", str(out), "--out", str(tmp_path / "c")])
    assert [r["key"] for r in merged] == ["made", "vqvae", "not_a_model", "ssvae"]
    assert (tmp_path / "c.md").read_text().count("| MADE") == 1
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_nll_table_stage_budgets_sum_to_the_total_and_a_too_small_total_is_refused(tmp_path):
    """--epochs/--max-steps are a model's total over its stages (the VQ-VAE: joint, then the
    prior): the split sums to it exactly, and a total below one per stage is an error."""
    nll_table = _load_script("nll_table")
    assert nll_table.stage_budgets(10, [0.7, 0.3]) == [7, 3]
    assert nll_table.stage_budgets(3, [0.7, 0.3]) == [2, 1]
    assert nll_table.stage_budgets(2, [0.7, 0.3]) == [1, 1]
    for total in range(2, 40):
        split = nll_table.stage_budgets(total, [0.7, 0.3])
        assert sum(split) == total and min(split) >= 1
    with pytest.raises(SystemExit):
        nll_table.main(
            ["--quick", "--models", "vqvae", "--epochs", "1", "--out", str(tmp_path / "x")]
        )


def test_nll_table_recipe_warm_up_reaches_the_trainer_and_the_table(tmp_path: Path, monkeypatch):
    """A recipe's KL warm-up is the trainer's β schedule, and the table's β column says so."""
    nll_table = _load_script("nll_table")
    seen = []

    class Recording(nll_table.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append((self.config.beta_schedule, self.config.warmup_steps))

    monkeypatch.setattr(nll_table, "Trainer", Recording)
    threads = torch.get_num_threads()
    try:
        rows = nll_table.main(
            ["--quick", "--models", "vae,vae_wu", "--max-steps", "2", "--out", str(tmp_path / "t")]
        )
    finally:
        torch.set_num_threads(threads)
    assert seen == [("constant", 1000), ("linear", 5000)]
    assert [r["beta_schedule"] for r in rows] == ["constant", "linear warm-up, 5000 steps"]
    assert "linear warm-up, 5000 steps" in (tmp_path / "t.md").read_text()


class _Clock:
    """A fake ``time.process_time``: ``advance`` moves it."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Trainer:
    def __init__(self, lr: float = 0.1) -> None:
        self.should_stop, self.stopped_by, self.module = False, None, "model"
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
        self.step = type("Step", (), {"optimizer": opt})()


def test_cpu_budget_stops_at_the_budget_and_leaves_evaluations_off_the_clock(monkeypatch):
    common = _load_script("_common")
    clock = _Clock()
    monkeypatch.setattr(common.time, "process_time", clock)

    def evaluate(module):  # an evaluation that costs 5 CPU-seconds
        clock.now += 5.0
        return 42.0

    cb = common.CPUBudget(10.0, marks=[7.0, 3.0], evaluate=evaluate, offset=1.0, anneal=True)
    trainer = _Trainer(lr=0.1)
    cb.on_fit_start(trainer)
    clock.now += 1.0  # 1 s of training: 2 s on the clock with the offset; no mark yet
    cb.on_step_end(trainer, {})
    assert cb.cpu() == 2.0 and cb.points == [] and not trainer.should_stop
    # cosine over this stage's share: frac = (2 − 1) / (10 − 1)
    assert math.isclose(
        trainer.step.optimizer.param_groups[0]["lr"], 0.1 * 0.5 * (1 + math.cos(math.pi / 9))
    )
    clock.now += 2.0  # 4 s: the 3 s mark is evaluated, its 5 s are not training time
    cb.on_step_end(trainer, {})
    assert cb.points == [(4.0 / 60, 42.0)] and cb.cpu() == 4.0 and cb.eval_cpu == 5.0
    clock.now += 6.0  # 10 s: the 7 s mark, then the budget is reached
    cb.on_step_end(trainer, {})
    assert [p[0] for p in cb.points] == [4.0 / 60, 10.0 / 60]
    assert trainer.should_stop and trainer.stopped_by == "cpu_budget"
    assert trainer.step.optimizer.param_groups[0]["lr"] == 0.0  # the cosine's end


def test_cpu_budget_without_a_budget_never_stops_nor_anneals(monkeypatch):
    common = _load_script("_common")
    clock = _Clock()
    monkeypatch.setattr(common.time, "process_time", clock)
    cb = common.CPUBudget(None, anneal=True)
    trainer = _Trainer(lr=0.1)
    cb.on_fit_start(trainer)
    clock.now += 1e6
    cb.on_step_end(trainer, {})
    assert not trainer.should_stop and trainer.step.optimizer.param_groups[0]["lr"] == 0.1
    with pytest.raises(ValueError, match="needs evaluate"):
        common.CPUBudget(5.0, marks=[1.0])


def test_threads_and_machine_string():
    import argparse

    common = _load_script("_common")
    p = argparse.ArgumentParser()
    common.add_threads_argument(p)
    assert p.parse_args([]).threads == 1 and p.parse_args(["--threads", "2"]).threads == 2
    before = torch.get_num_threads()
    assert common.set_threads(None) == before  # None leaves torch's choice
    assert common.machine_string(3).endswith(", 3 thread(s)")
