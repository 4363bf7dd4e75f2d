"""The report's classifier section, a conditional model's ELBO parts, and compare's ranks (from
1 as written; a comparison.csv of an older pyro-gen, ranked from 0, is shifted)."""

from __future__ import annotations

import json

from pyro_gen.report import build_report

CSV = (
    "rank,model,quantity,test_nll,nll_se,elbo,reconstruction,kl,gap,active_units,khat_share,"
    "d_log_px,d_log_px_se,num_datapoints,num_samples,is_bound,note\n"
    "1,a,log p(x),45.5,1.7,-58.2,-56.2,1.9,12.6,3,0.2,0.0,0.0,128,200,True,\n"
    "2,b,log p(x),46.5,1.7,-59.2,-57.2,1.9,12.6,3,0.2,1.0,0.1,128,200,True,\n"
    '1,c,"log p(x | shape)",40.1,1.7,-50.2,-48.2,1.9,12.6,3,0.2,0.0,0.0,128,200,True,\n'
)


def test_ranks_are_shown_as_written_and_different_quantities_are_flagged(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "comparison.csv").write_text(CSV)
    html = build_report(run)
    table = html[html.index("Comparison with other runs") :]
    assert "<td>1</td><td>a</td><td>log p(x)</td><td>45.50</td>" in table
    assert "<td>2</td><td>b</td>" in table and "<td>1</td><td>c</td>" in table
    assert "<td>3</td>" not in table  # not shifted a second time
    assert "densities of different things" in table


def test_classifier_section_and_conditional_elbo_parts(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    summary = {
        "train": {
            "steps": 9,
            "test_elbo": {
                "elbo": -10.0, "elbo_se": 0.5, "reconstruction": -7.0,
                "attributes_log_prob": -1.5, "attributes_per_site": {"shape": -1.5},
                "bound_on": "log p(x, shape)", "kl": 1.5, "num_datapoints": 48,
            },
            "test_classifier": {"accuracy": 0.9312, "split": "test", "num_datapoints": 48},
            "valid_classifier": {"accuracy": 0.9, "split": "valid", "num_datapoints": 48},
        }
    }  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "history.csv").write_text(
        "step,epoch,loss,valid_elbo,beta,lr,elapsed,valid_accuracy\n"
        "3,1,10.0,-12.0,1.0,0.002,0.1,0.5\n6,2,9.0,-11.0,1.0,0.002,0.2,0.75\n"
    )
    html = build_report(run)
    assert "Classifier q(y|x)" in html and "test accuracy of q(y|x) 93.12%" in html
    section = html[html.index("Classifier q(y|x)</h2>") :]
    assert "<td>valid</td><td>accuracy of q(y|x)</td><td>90.00%</td>" in section
    assert "<td>0.75</td>" in section  # the per-epoch validation accuracy
    assert "reconstruction of x -7.00 + log p(y) of the observed attributes -1.50" in html
    assert "a lower bound on log p(x, shape)" in html
    assert "log p(shape) of the observed attributes" in html


def test_the_page_over_runs_shows_the_classifier_and_what_log_p_is_of(tmp_path):
    from pyro_gen.report import build_comparison_report

    run = tmp_path / "cvae"
    run.mkdir()
    summary = {
        "train": {"steps": 3, "test_classifier": {"shape_accuracy": 0.5, "split": "test"}},
        "evaluate": {
            "elbo": -10.0, "log_px": -8.0, "log_px_is": "log p(x, shape)",
            "log_px_given_attributes": -6.9, "conditions": "shape", "split": "test",
        },
    }  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    html = build_comparison_report([run])
    assert "<th>q(y|x) accuracy</th>" in html and "shape 50.00% (test)" in html
    assert "-6.90 (given shape)" in html


def test_a_classifier_that_never_changed_in_training_is_called_untrained(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"train": {"steps": 6}}))
    head = "step,epoch,loss,valid_elbo,beta,lr,elapsed,valid_shape_accuracy\n"
    (run / "history.csv").write_text(
        head + "3,1,10,-12,1,0.002,0.1,0.3\n6,2,9,-11,1,0.002,0.2,0.3\n"
    )
    assert "most likely not trained" in build_report(run)
    (run / "history.csv").write_text(
        head + "3,1,10,-12,1,0.002,0.1,0.3\n6,2,9,-11,1,0.002,0.2,0.4\n"
    )
    assert "most likely not trained" not in build_report(run)
