"""The report's PNG plots (matplotlib, Agg backend): Dice against cost with the Pareto front, and
per-case box plots of foreground-mean Dice."""
from __future__ import annotations

import os

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


def write_all(report: dict, output: str) -> list[str]:
    """The plots the report's data allow: cost plots need a profile, box plots need cases."""
    from nnunet_lightseg.report import case_scores

    written = []
    cases = report["cases"]
    if len(cases) == 0:
        return written
    scores = case_scores(cases)
    written.append(per_case_boxes(scores, os.path.join(output, "dice_per_case.png")))
    summary = report["summary"]
    if "GMAC" in summary:
        means = cases.groupby(["model", "fold", "label"])["Dice"].mean().groupby("model").mean()
        for column, label, name in (("GMAC", "GMAC per patch", "dice_vs_gmac.png"),
                                    ("params", "parameters", "dice_vs_params.png")):
            rows = summary.dropna(subset=[column])
            points = [(m, float(c), float(means[m])) for m, c in zip(rows["model"], rows[column]) if m in means]
            if points:
                written.append(dice_against_cost(points, label, os.path.join(output, name)))
    return written
