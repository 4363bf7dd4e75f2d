"""``pyro-gen report`` and the pages the other verbs write."""

from __future__ import annotations

import shutil

import pytest

from pyro_gen.cli import main
from tests.report.conftest import embedded_images


def test_help_explains_the_verb(capsys):
    with pytest.raises(SystemExit) as e:
        main(["report", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "self-contained HTML" in out and "--out" in out


def test_train_and_evaluate_wrote_the_report(evaluated_run):
    html = (evaluated_run / "report.html").read_text()
    assert "<h2>Evaluation</h2>" in html  # written again by evaluate, after train's


def test_report_verb_one_and_several_runs(evaluated_run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(evaluated_run, other)
    (other / "report.html").unlink()
    assert main(["report", str(other)]) == 0
    assert f"wrote {other / 'report.html'}" in capsys.readouterr().out
    out = tmp_path / "both.html"
    assert main(["report", str(evaluated_run), str(other), "--out", str(out)]) == 0
    html = out.read_text()
    assert evaluated_run.name in html and "other" in html and "<h2>Runs</h2>" in html
    assert "other/report.html" in html  # links relative to the page
    assert main(["report", str(evaluated_run), str(other)]) == 0
    assert (evaluated_run / "eval" / "runs.html").is_file()
    assert main(["report", str(other), "--out", str(out)]) == 2
    assert "--out names the page over several runs" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_compare_writes_a_page_over_the_runs(evaluated_run, tmp_path, capsys):
    other = tmp_path / "twin"
    shutil.copytree(evaluated_run, other)
    out = tmp_path / "cmp"
    argv = ["compare", str(evaluated_run), str(other), "--num-samples", "25", "--limit", "16"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    share = max(float(line.split("|")[12]) for line in printed.splitlines()[2:4])  # k̂ share
    assert (f"caution: {other.name}: Pareto k̂ > 0.7" in printed) == (share > 0.1)
    html = (out / "comparison.html").read_text()
    assert "<h2>Ranking on the same test points</h2>" in html
    assert "same 16 test points with K = 25" in html
    assert len(embedded_images(html)) == 2  # validation curves, the ranking figure
