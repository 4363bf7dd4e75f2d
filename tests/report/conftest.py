"""A tiny trained and evaluated run folder, shared by the report tests (about 3 s)."""

from __future__ import annotations

import base64
import re
import struct
from pathlib import Path

import pytest

from pyro_gen.cli import main

TINY = (
    "--num-train 256 --num-valid 64 --num-test 64 --image-size 16 --batch-size 32 --hidden 32 "
    "--latent-dim 3 --no-progress"
).split()
IMG_SRC = re.compile(r'<img[^>]*\bsrc="([^"]*)"')


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (AssertionError when it is no PNG)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def embedded_images(html: str) -> list[bytes]:
    """The bytes of every <img> of a page; each must be a base64 PNG data: URI."""
    out = []
    for src in IMG_SRC.findall(html):
        assert src.startswith("data:image/png;base64,"), src[:60]
        out.append(base64.b64decode(src.split(",", 1)[1], validate=True))
    return out


@pytest.fixture(scope="session")
def evaluated_run(tmp_path_factory) -> Path:
    """Trained one epoch by the CLI, then evaluated with K = 30 importance samples."""
    run = tmp_path_factory.mktemp("report") / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    assert main(["evaluate", str(run), "--num-samples", "30", "--limit", "40"]) == 0
    return run
