"""The report in a real browser (headless Chromium, Debian's package; .ci/run installs it):
it loads without console errors, every figure decodes, the screenshot is not blank and the
headline numbers are in the rendered text. Skips only where no Chromium is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pyro_gen.report import write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]

# Loads each page in an iframe and writes, for each, its number of images, how many decoded
# (complete, naturalWidth > 0) and its rendered text into the harness's own DOM (dumped).
HARNESS = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
{frames}
<script>
window.addEventListener("load", function () {{
  var out = [];
  document.querySelectorAll("iframe").forEach(function (f) {{
    var r = {{}};
    try {{
      var doc = f.contentDocument;
      var imgs = Array.prototype.slice.call(doc.images);
      r.images = imgs.length;
      r.decoded = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length;
      r.text = doc.body.innerText;
    }} catch (e) {{ r.error = String(e); }}
    out.push(r);
  }});
  document.getElementById("result").textContent = JSON.stringify(out);
}});
</script></body></html>"""
# A page that must fail every check: the checks can fail.
BROKEN = (
    '<html><body><img src="data:image/png;base64,AAAA"><img src="missing.png">'
    '<script>console.error("boom")</script></body></html>'
)


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"no headless Chromium ({', '.join(BROWSERS)}); .ci/run installs Debian's")


def _run(browser: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, *FLAGS, *args], capture_output=True, text=True, timeout=120, check=False
    )


def _console(stderr: str, page: Path) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line and page.name in line]


def test_the_report_in_headless_chromium(evaluated_run, tmp_path):
    browser = _browser()
    report = write_report(evaluated_run)
    broken = tmp_path / "broken.html"
    broken.write_text(BROKEN)
    frames = "".join(
        f'<iframe src="{p.resolve().as_uri()}" style="width:1200px;height:900px"></iframe>'
        for p in (report, broken)
    )
    harness = tmp_path / "harness.html"
    harness.write_text(HARNESS.format(frames=frames))
    done = _run(
        browser,
        "--allow-file-access-from-files",
        "--enable-logging=stderr",
        "--v=1",
        "--virtual-time-budget=10000",
        "--dump-dom",
        harness.as_uri(),
    )
    found = re.search(r'<pre id="result">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stdout[-2000:] + done.stderr[-2000:]
    page, control = json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<")
                               .replace("&gt;", ">"))  # fmt: skip
    # the control page fails each check, so the checks can fail
    assert control["decoded"] < control["images"] == 2
    assert _console(done.stderr, broken), "console messages are not seen"
    # the report: no console message, every figure decoded, the numbers in the rendered text
    assert _console(done.stderr, report) == []
    assert "error" not in page, page
    assert page["images"] == 6 and page["decoded"] == 6
    diag = json.loads((evaluated_run / "eval" / "diagnostics.json").read_text())
    text = page["text"]
    assert f"ELBO {diag['elbo']:.2f} ± {diag['elbo_se']:.2f} nats ≈ reconstruction" in text
    assert f"{diag['log_px']:.2f} ± {diag['log_px_se']:.2f} nats" in text
    assert f"{100 * diag['khat_share_unreliable']:.1f}% of datapoints with k̂ > 0.7" in text

    shot = tmp_path / "report.png"
    done = _run(browser, "--window-size=1200,1600", f"--screenshot={shot}", report.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    ink = (pixels.mean(-1) < 0.9).mean()  # share of pixels that are not (near) white
    assert 0.02 < ink < 0.9, ink
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50
