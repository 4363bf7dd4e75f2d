"""Lightning stays optional: pyro_gen imports without it and says how to install it."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_pyro_gen_does_not_import_lightning():
    code = "import sys, pyro_gen.infer, pyro_gen.cli, pyro_gen.infer.lightning; "
    code += "print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_missing_lightning_gives_an_install_hint(monkeypatch):
    from pyro_gen.infer import lightning

    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    with pytest.raises(ImportError, match=r"pyro-gen\[lightning\]"):
        lightning.require_lightning()
