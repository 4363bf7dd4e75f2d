"""The benchmark scripts run end to end in their --quick mode (slow: ``pytest -m slow``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
