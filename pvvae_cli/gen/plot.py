"""The convergence plot of a ``gen train`` run: every evaluation number of ``metrics.jsonl`` against the step,
written as ``RUN/eval_curve.png`` at the end of the run (one panel per metric; ``nn_dist`` beside the noise's
distance, the bar it must get under). Needs matplotlib (``pip install matplotlib`` or the ``plot`` extra);
without it the run says so and writes nothing else differently.
"""

from __future__ import annotations

from pathlib import Path

from pvvae_cli.runtime.atomic import atomic_path

PLOTTED = ("fvd", "kvd", "nn_dist", "nn_class_acc", "mean_err", "std_err")  # in this order, those present
EVAL_CURVE = "eval_curve.png"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_eval_curves(records: list[dict], path: str | Path) -> Path | None:
    """Plot the ``kind: "eval"`` records (dicts with ``step`` and numbers) into a PNG at ``path``, atomically.
    Returns the path, or ``None`` when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    evals = sorted((r for r in records if r.get("kind") == "eval"), key=lambda r: r["step"])
    names = [n for n in PLOTTED if any(n in r for r in evals)]
    if not evals or not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        pts = [(r["step"], r[name]) for r in evals if name in r]
        ax.plot(*zip(*pts, strict=True), marker="o", label=name)
        if name == "nn_dist":
            noise = [(r["step"], r["noise_nn_dist"]) for r in evals if "noise_nn_dist" in r]
            if noise:
                ax.plot(*zip(*noise, strict=True), linestyle="--", color="grey", label="noise")
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")  # the temp name does not end in .png
    plt.close(fig)
    return path
