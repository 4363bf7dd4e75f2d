"""The benchmark scripts run end to end in their --quick mode (slow: ``pytest -m slow``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.stem)
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

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_nll_table_smoke_run_on_tiny_generated_data(tmp_path: Path):
    """nll_table end to end in a few seconds: an exact model, a VQ-VAE (two stages), an absent
    model skipped with a note; table, CSV, JSON and both figures written."""
    nll_table = _load_script("nll_table")
    out = tmp_path / "t"
    threads = torch.get_num_threads()
    try:
        rows = nll_table.main(
            ["--quick", "--models", "made,vqvae,not_a_model", "--max-steps", "2", "--out", str(out)]
        )
    finally:
        torch.set_num_threads(threads)  # main() sets --threads for the process
    by_key = {r["key"]: r for r in rows}
    made, vq, absent = by_key["made"], by_key["vqvae"], by_key["not_a_model"]
    assert made["status"] == "ok" and made["nll_kind"] == "exact" and made["gap"] == 0
    assert made["test_nll"] == -made["elbo"] > 0
    assert vq["status"] == "ok" and vq["steps"] == 2  # one step per stage (joint, prior)
    assert "perplexity" in vq["note"] and vq["codebook"]["num_codes"] == 64
    assert absent["status"].startswith("skipped")
    table = out.with_suffix(".md").read_text()
    assert "MADE" in table and "not_a_model" in table and "CPU-min" in table
    saved = json.loads(out.with_suffix(".json").read_text())
    assert [r["key"] for r in saved["rows"]] == ["made", "vqvae", "not_a_model"]
    assert len(out.with_suffix(".csv").read_text().splitlines()) == 4
    for png in (out.with_suffix(".png"), tmp_path / "t_cpu.png"):
        assert png.stat().st_size > 1000
    assert all(len(r["curve"]) >= 1 for r in (made, vq))  # one point at the end of each stage
    # runs made in parallel are merged into one table (rows, samples and CPU time)
    merged = nll_table.main(["--combine", str(out), "--out", str(tmp_path / "c")])
    assert [r["key"] for r in merged] == ["made", "vqvae", "not_a_model"]
    assert (tmp_path / "c.md").read_text().count("| MADE") == 1
    assert (tmp_path / "c.png").stat().st_size > 1000
