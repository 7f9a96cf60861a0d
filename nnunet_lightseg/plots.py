"""The report's PNG plots (matplotlib, Agg backend): Dice against cost with the Pareto front, and
per-case box plots of foreground-mean Dice. Each takes plain data (names and numbers) and a path."""
from __future__ import annotations

from nnunet_lightseg import stats


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def dice_against_cost(points: list[tuple[str, float, float]], cost_label: str, path: str) -> str:
    """Scatter of (model, cost, Dice), log cost axis, the Pareto front (cheaper and better) joined."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    names, costs, scores = zip(*points)
    axes.scatter(costs, scores, color="tab:blue")
    for name, cost, score in points:
        axes.annotate(name.replace("nnUNetTrainer", "") or "nnUNetTrainer", (cost, score), fontsize=7,
                      xytext=(3, 3), textcoords="offset points")
    front = stats.pareto_front(costs, scores)
    axes.plot([costs[i] for i in front], [scores[i] for i in front], color="tab:red", marker="o",
              label="Pareto front")
    axes.set_xscale("log")
    axes.set_xlabel(cost_label)
    axes.set_ylabel("Dice (foreground mean over folds)")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def per_case_boxes(scores: dict[str, dict[str, float]], path: str) -> str:
    """One box per model of its per-case scores ({model: {case: Dice}}); NaN cases left out."""
    plt = _pyplot()
    names = list(scores)
    figure, axes = plt.subplots(figsize=(max(5.0, 1.1 * len(names)), 4.5))
    axes.boxplot([[v for v in scores[n].values() if v == v] for n in names])
    axes.set_xticks(range(1, len(names) + 1), [n.replace("nnUNetTrainer", "") or "nnUNetTrainer" for n in names],
                    rotation=30, ha="right", fontsize=8)
    axes.set_ylabel("per-case Dice (foreground mean)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
