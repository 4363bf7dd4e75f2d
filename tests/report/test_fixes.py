"""What a new user found misleading in the report (issue 14 review): an evaluation of older
weights shown as the run's, a raw comparison table, a folder that is no run."""

from __future__ import annotations

import json
import shutil

from pyro_gen.cli import main
from pyro_gen.report import build_report, load_run


def _summary(run) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_the_report_drops_an_evaluation_of_the_weights_before_a_resume(evaluated_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    before = json.loads((run / "eval" / "diagnostics.json").read_text())
    step = _summary(run)["train"]["steps"]
    assert before["weights_step"] == step and len(before["weights_digest"]) == 16
    assert load_run(run).evaluation()["source"] == "eval/diagnostics.json"  # current: shown

    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    summary = _summary(run)
    now = summary["train"]["steps"]
    assert now > step
    note = f"evaluated at step {step}; the weights are now at step {now}"
    assert summary["evaluate"]["stale"].startswith(note)  # the summary says it too
    record = load_run(run)
    ev = record.evaluation()
    assert ev["source"] == "summary.json (train, test split)"  # the new weights' own ELBO
    assert ev["elbo"] == summary["train"]["test_elbo"]["elbo"]
    html = build_report(run)
    assert note + ": run pyro-gen evaluate again" in html
    assert f"log p(x)</td><td>{before['log_px']:.2f}" not in html  # not in the headline

    # a later ELBO-only evaluate is the newest evaluation of the current weights: shown
    assert main(["evaluate", str(run), "--limit", "20"]) == 0
    new = _summary(run)["evaluate"]
    assert "stale" not in new and new["weights_step"] == now
    ev = load_run(run).evaluation()
    assert ev["source"] == "summary.json (evaluate)" and ev["elbo"] == new["elbo"]
    assert "20 datapoints; from summary.json (evaluate)" in build_report(run)


def test_a_newer_elbo_only_evaluate_of_the_same_weights_is_the_headline(evaluated_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    assert main(["evaluate", str(run), "--limit", "17"]) == 0
    record = load_run(run)
    assert record.evaluation()["num_datapoints"] == 17
    assert record.stale_notes() == []  # the same weights: nothing is called stale


def test_the_report_verb_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a run folder" in err and "config.json" in err and "summary.json" in err
    assert not (tmp_path / "report.html").exists()


def test_a_malformed_summary_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "summary.json").write_text(json.dumps({"train": 5}))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "section 'train' is 5, not a JSON object" in err and "Traceback" not in err
    (tmp_path / "summary.json").write_text("[1, 2]")
    assert main(["report", str(tmp_path)]) == 2
    assert "holds list" in capsys.readouterr().err


def test_one_latent_dimension_is_one_row(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    diag = {"elbo": -1.0, "kl_per_dim": [0.5], "kl_names": ["z"], "split": "test"}
    (run / "eval" / "diagnostics.json").write_text(json.dumps(diag))
    html = build_report(run)
    assert "KL per latent dimension (1 row)" in html


def test_a_broken_pipe_ends_quietly(monkeypatch, capsys):
    import pyro_gen.cli as cli

    def reader_left(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setitem(cli.COMMANDS, "report", reader_left)
    assert cli.main(["report", "x"]) == 141
    assert "Traceback" not in capsys.readouterr().err


COMPARISON_CSV = (
    "rank,model,test_nll,nll_se,elbo,reconstruction,kl,gap,active_units,khat_share,d_log_px,"
    "d_log_px_se,num_datapoints,num_samples,is_bound,note\n"
    "0,c,45.5614821475915,1.6928459414324248,-58.191353052556515,-56.25,1.95,12.629870904965017,"
    "3,0.2109375,0.0,0.0,128,200,True,\n"
    "1,a,45.665408869341135,1.786204442814804,-55.586470461785794,-53.8,1.77,9.921061592444659,"
    "4,0.265625,0.10392672174963774,0.15898155930988375,128,200,True,\n"
    ',b0,nan,nan,nan,-71.74,nan,nan,,nan,nan,nan,128,,False,"not a bound"\n'
)


def test_the_comparison_section_is_formatted_for_a_person(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "comparison.csv").write_text(COMPARISON_CSV)
    html = build_report(run)
    table = html[html.index("Comparison with other runs") :]
    assert "<th>test NLL</th>" in table and "<th>share k̂ &gt; 0.7</th>" in table
    assert "test_nll" not in table and "45.5614821" not in table  # no raw CSV
    row = "<td>1</td><td>c</td><td>45.56</td><td>1.69</td><td>-58.19</td><td>12.63</td>"
    assert row + "<td>21.1%</td><td>0.00</td>" in table  # ranks from 1, 2 decimals
    assert "<td>2</td><td>a</td><td>45.67</td>" in table
    assert "<td>–</td><td>b0</td><td>–</td>" in table and "nan" not in table


def test_the_page_over_runs_links_each_run_s_report(tmp_path):
    from pyro_gen.report import build_comparison_report

    runs = []
    for name in ("r1", "r2"):
        run = tmp_path / name
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"train": {"steps": 3}}))
        (run / "report.html").write_text("<html></html>")
        runs.append(run)
    html = build_comparison_report(runs, links_from=tmp_path / "r1" / "eval")
    assert '<a href="../report.html">r1</a>' in html
    assert '<a href="../../r2/report.html">r2</a>' in html


def test_the_training_paragraph_puts_the_loop_s_time_beside_its_rate(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    train = {"steps": 48, "steps_this_session": 24, "steps_per_second": 8.0, "wall_seconds": 9.0}
    (run / "summary.json").write_text(json.dumps({"train": train}))
    html = build_report(run)
    assert (
        "48 steps; 24 of them in the last session, 3.0 s of training at 8.0 steps/s; "
        "9.0 s with setup" in html
    )


def _inside(fig, artist) -> bool:
    fig.canvas.draw()
    box, page = artist.get_window_extent(), fig.bbox
    return box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y1 <= page.y1 + 1


def test_figures_keep_their_titles_labels_and_first_points_on_the_page():
    import matplotlib.pyplot as plt

    from pyro_gen import plots

    history = [
        {"step": s, "epoch": s // 5, "loss": 500.0 / (s + 1) + 40.0, "valid_elbo": "",
         "valid_reconstruction": -40.0 - 10 / (s + 1) if s % 5 == 4 else ""}
        for s in range(30)
    ]  # fmt: skip
    fig = plots.training_curves(history, "b0")
    loss_ax, valid_ax = fig.axes
    lo, hi = loss_ax.get_ylim()
    assert lo <= min(r["loss"] for r in history) and hi >= 540.0  # the first point is shown
    assert _inside(fig, valid_ax.yaxis.label) and _inside(fig, valid_ax.title)
    plt.close(fig)
    fig = plots.compare_curves({"a-long-run-name": history, "b": [dict(r) for r in history]})
    assert _inside(fig, fig.axes[0].title)
    plt.close(fig)


def test_a_beta_zero_run_s_curves_are_not_called_an_elbo(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.csv").write_text(
        "step,epoch,loss,valid_elbo,beta,lr,elapsed,valid_reconstruction\n"
        "10,1,50.0,,0.0,0.001,1.0,-49.0\n"
    )
    html = build_report(run)
    assert "β-weighted −ELBO" not in html and "validation reconstruction term" in html
