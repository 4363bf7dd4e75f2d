"""Every script in ``examples/`` runs with ``--smoke`` (a tiny budget) and writes what it says.

Scripts are discovered by globbing, so a new example is covered without editing this file; the
contract every example keeps: a module docstring that documents ``--smoke``, the flags
``--smoke`` and ``--out FOLDER``, exit status 0, and a line ``wrote PATH`` for each output.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))

# outputs (relative to --out) that particular examples must write, beyond the generic checks
EXPECTED = {
    "vae.py": [
        "run/config.json",
        "run/model.safetensors",
        "figures/samples.png",
        "figures/reconstructions.png",
        "figures/training_curves.png",
        "summary.json",
    ],
    "beta_vae.py": ["beta_tradeoff.md", "results.json", "figures/beta_tradeoff.png"],
    "custom_model.py": [
        "callables/model.safetensors",
        "run/config.json",
        "figures/samples_per_component.png",
        "summary.json",
    ],
}


def test_examples_exist():
    assert {p.name for p in SCRIPTS} >= set(EXPECTED)


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_docstring_documents_smoke(script):
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8")))
    assert doc, f"{script.name} has no module docstring"
    assert "--smoke" in doc and "Usage" in doc


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_example_runs_with_a_tiny_budget(script, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(script), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout}\n{proc.stderr}"
    wrote = [Path(p) for p in re.findall(r"^wrote (.+)$", proc.stdout, flags=re.M)]
    assert wrote, f"{script.name} printed no 'wrote PATH' line"
    for path in wrote:
        assert path.is_file() and path.stat().st_size > 0, f"{path} was announced, not written"
        assert out in path.parents, f"{path} is outside --out"
    assert list(out.rglob("*.png")), "no figure written"
    for rel in EXPECTED.get(script.name, []):
        assert (out / rel).is_file(), rel
    for path in out.rglob("*.json"):  # strict JSON: no NaN or Infinity
        constants: list[str] = []
        json.loads(path.read_text(), parse_constant=constants.append)
        assert not constants, f"{path} holds {constants}: not strict JSON"

    if script.name == "beta_vae.py":
        table = (out / "beta_tradeoff.md").read_text()
        rows = [line for line in table.splitlines() if re.match(r"^\| [0-9.]+ \|", line)]
        assert [r.split("|")[1].strip() for r in rows] == ["0", "0.5", "1", "4"]
        assert "n/a" in rows[0] and "recon" in rows[0]  # β = 0: reconstruction only
        results = json.loads((out / "results.json").read_text())["rows"]
        assert results[0]["kl"] is None and all(r["kl"] > 0 for r in results[1:])
    if script.name in ("vae.py", "custom_model.py"):
        assert json.loads((out / "summary.json").read_text())["reload_identical"] is True
