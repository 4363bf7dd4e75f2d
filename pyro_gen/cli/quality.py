"""``pyro-gen quality RUN``: sample quality of any run (GAN, VAE, ...) against real images.

Draws ``--num`` samples from the run's model and as many real images of a split, and writes
the two-sample test accuracy, Fréchet distance, k-NN precision/recall and MMD
(:mod:`pyro_gen.evaluate.quality`) to ``eval/quality.json`` and ``summary.json``, with
``figures/quality_samples.png`` and, for labelled data, the class histogram of the samples
(``figures/class_histogram.png``: mode collapse shows as empty classes).

The features are those of a judge (:func:`pyro_gen.evaluate.judge.train_judge`) trained on the
run's labelled training images — an FID-like distance in a small classifier's features, not
Inception's — kept in ``eval/judge/`` (``--judge DIR`` reuses one, so several runs are compared
in the same features). Data without labels fall back to pixel features (said in the output).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from pyro_gen.cli.common import load_data, open_run, run_data_spec, subset, update_summary
from pyro_gen.errors import ConfigError
from pyro_gen.io import write_json

__all__ = ["add_parser", "cmd_quality", "JUDGE_TARGET", "judge_digest"]

JUDGE_TARGET = "label"


def add_parser(verbs: Any, run_verb) -> argparse.ArgumentParser:
    p = run_verb(
        verbs,
        "quality",
        "sample quality: two-sample test, Fréchet distance, precision/recall, MMD, classes",
        "Compare the run's samples with real images of a split: classifier two-sample test "
        "accuracy (0.5 = indistinguishable), Fréchet distance in a judge classifier's features "
        "(lower is better), k-NN precision (fidelity) and recall (coverage), MMD² with a "
        "Gaussian RBF kernel (median-heuristic bandwidth), and the class histogram of the "
        "samples (mode collapse). Works for likelihood-free models (GANs) and VAEs alike. "
        "Writes eval/quality.json, summary.json, figures/quality_samples.png and "
        "figures/class_histogram.png.",
        data=True,
    )
    p.add_argument("--split", default="test", help="real images from this split (default test)")
    p.add_argument("--num", type=int, default=1000, help="samples and real images (default 1000)")
    p.add_argument(
        "--no-mean",
        dest="mean",
        action="store_false",
        help="draw x ~ p(x|z) instead of E[x|z] for models with a likelihood (a VAE's samples "
        "are shown as E[x|z] by default, as in figures/samples.png)",
    )
    p.add_argument(
        "--judge", type=Path, help="a saved judge folder to reuse (default: eval/judge of the run)"
    )
    p.add_argument(
        "--judge-train", type=int, default=10000, help="training images for a new judge (10000)"
    )
    p.add_argument("--judge-epochs", type=int, default=2, help="epochs of a new judge (default 2)")
    p.add_argument("--k", type=int, default=3, help="neighbours for precision/recall (default 3)")
    return p


def judge_digest(judge) -> str:
    """``"sha256:<16 hex>"`` of a judge's weights (names, shapes and values): two quality.json
    files with the same digest were measured in the same features."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(judge.network.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{list(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return "sha256:" + h.hexdigest()[:16]


def _judge(args: argparse.Namespace, ds) -> tuple[Any, Path | None]:
    """The judge to use and its folder: --judge, the run's eval/judge, or a new one trained on
    the run's labelled training images (saved to eval/judge). (None, None) without labels."""
    from pyro_gen.evaluate.judge import load_judge, train_judge

    if args.judge is not None:
        return load_judge(args.judge), Path(args.judge)
    saved = args.run / "eval" / "judge"
    if (saved / "judge.json").is_file():
        return load_judge(saved), saved
    if not ds.labels or "train" not in ds.labels:
        return None, None
    x = subset(ds.split("train"), args.judge_train, args.seed)
    y = subset(ds.labels["train"], args.judge_train, args.seed)
    judge = train_judge(
        x.float(),
        {JUDGE_TARGET: y.long()},
        num_classes={JUDGE_TARGET: len(ds.label_names) if ds.label_names else int(y.max()) + 1},
        epochs=args.judge_epochs,
        seed=args.seed,
        device="cpu",
    )
    judge.save(saved)
    return judge, saved


def _samples(model, n: int, seed: int, mean: bool) -> torch.Tensor:
    if not callable(getattr(model, "sample", None)):
        raise ConfigError(f"{type(model).__name__} has no sample() method; nothing to judge.")
    try:
        return model.sample(n, seed=seed, mean=mean)
    except TypeError:  # a sample() without mean=
        return model.sample(n, seed=seed)


def histogram_figure(fake: list[float], real: list[float], names: list[str], title: str):
    """Bars of the samples' class proportions beside the real data's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 3.0))
    pos = torch.arange(len(names)).float()
    ax.bar(pos - 0.2, real, width=0.4, label="real", color="0.6")
    ax.bar(pos + 0.2, fake, width=0.4, label="samples", color="C0")
    ax.set_xticks(pos.tolist(), names, rotation=45 if len(names) > 6 else 0)
    ax.set_ylabel("share")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def cmd_quality(args: argparse.Namespace) -> int:
    from pyro_gen import plots
    from pyro_gen.evaluate.quality import sample_quality

    if args.num < 10:
        raise ConfigError(f"--num must be >= 10 for the metrics to mean anything; got {args.num}.")
    start = time.perf_counter()
    model, config = open_run(args.run, args.device)
    ds = load_data(run_data_spec(args.run, config, args))
    real = subset(ds.split(args.split), args.num, args.seed).float()
    fake = _samples(model, real.shape[0], args.seed, args.mean).detach().cpu().float()
    judge, judge_dir = _judge(args, ds)
    kw: dict[str, Any] = {}
    judge_info: dict[str, Any] | None = None
    if judge is not None:
        size = next(h["size"] for h in judge.heads if h["name"] == JUDGE_TARGET)
        kw = dict(
            features=judge.features,
            classify=lambda x: judge.predict(x)[JUDGE_TARGET],
            num_classes=int(size),
        )
        judge_info = {"path": str(Path(judge_dir).resolve()), "digest": judge_digest(judge)}
        if ds.labels and args.split in ds.labels:
            # the class-histogram reference is the split's true labels, not the judge's guesses;
            # the same rows as `real` (subset is seeded by the number of rows)
            y = subset(ds.labels[args.split], args.num, args.seed).long()
            kw["real_labels"] = y
            score = judge.score(real, {JUDGE_TARGET: y})
            judge_info["heldout_accuracy"] = float(score[f"{JUDGE_TARGET}_accuracy"])
            judge_info["heldout_split"] = args.split
    result = sample_quality(real, fake, k=args.k, seed=args.seed, **kw)
    if judge_info is not None:
        result["judge"] = judge_info
        result["judge_digest"] = judge_info["digest"]
    result.update(
        split=args.split,
        samples="E[x|z]" if args.mean and not getattr(model, "likelihood_free", False) else "x",
        wall_seconds=round(time.perf_counter() - start, 2),
    )
    write_json(args.run / "eval" / "quality.json", result)
    update_summary(
        args.run,
        "quality",
        {k: v for k, v in result.items() if not isinstance(v, (list, dict))},
    )
    figures = args.run / "figures"
    written = ["figures/quality_samples.png"]
    plots.save_figure(
        plots.image_grid(fake[:64], title=f"{type(model).__name__} samples ({result['samples']})"),
        figures / "quality_samples.png",
    )
    if "classes_proportions" in result:
        names = list(ds.label_names) if ds.label_names else [str(i) for i in range(size)]
        plots.save_figure(
            histogram_figure(
                result["classes_proportions"],
                result["classes_real_proportions"],
                names,
                f"judged classes of {real.shape[0]} samples: {result['classes_covered']} of "
                f"{len(names)} covered",
            ),
            figures / "class_histogram.png",
        )
        written.append("figures/class_histogram.png")
    feats = (
        f"the features of judge {judge_info['digest']} ({judge_dir}"
        + (
            f", held-out accuracy {judge_info['heldout_accuracy']:.3f})"
            if "heldout_accuracy" in judge_info
            else ")"
        )
        if judge_info is not None
        else "pixels (no labels for a judge)"
    )
    print(
        f"pyro-gen: {real.shape[0]} samples vs {args.split} images, in {feats}: two-sample "
        f"accuracy {result['c2st_accuracy']:.3f} (0.5 = indistinguishable), Fréchet distance "
        f"{result['frechet_distance']:.3f}, precision {result['precision']:.3f}, recall "
        f"{result['recall']:.3f}, MMD² {result['mmd2']:.4f}"
        + (
            f", classes covered {result['classes_covered']}/{len(result['classes_counts'])}"
            if "classes_counts" in result
            else ""
        )
    )
    print(f"pyro-gen: wrote {args.run}/eval/quality.json, summary.json, {', '.join(written)}")
    return 0
