"""Paired comparisons against a reference, and the accuracy-cost Pareto front.

- Paired per-case Wilcoxon signed-rank tests (`scipy.stats.wilcoxon`, two-sided), one per model
  against the reference, on the cases both have;
- Holm's step-down correction over those tests (`statsmodels.stats.multitest.multipletests`,
  method "holm");
- percentile bootstrap confidence intervals (`scipy.stats.bootstrap`) of the mean, for a model's
  per-case Dice and for the paired per-case difference to the reference.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

BOOTSTRAP_RESAMPLES = 2000


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; (nan, nan) for fewer than two values."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan, math.nan
    if np.all(values == values[0]):  # no spread: the interval is the value itself
        return float(values[0]), float(values[0])
    result = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                             method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired(per_case: dict[str, float], reference: dict[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The cases both have (and neither scored NaN), in sorted order, with both models' values."""
    cases = sorted(c for c in per_case.keys() & reference.keys()
                   if not (math.isnan(per_case[c]) or math.isnan(reference[c])))
    return cases, np.array([per_case[c] for c in cases]), np.array([reference[c] for c in cases])


def wilcoxon_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided paired Wilcoxon signed-rank p-value; NaN when there is nothing to test."""
    if len(x) < 1 or np.all(x == y):
        return math.nan
    return float(stats.wilcoxon(x, y).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values over the tests that have one (NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = ~np.isnan(p)
    if tested.any():
        adjusted[tested] = multipletests(p[tested], method="holm")[1]
    return adjusted.tolist()


def compare(per_case: dict[str, dict[str, float]], reference: str, alpha: float = 0.05) -> list[dict]:
    """Each model against `reference`: paired cases, mean difference with its bootstrap CI, p, Holm p."""
    rows = []
    for model, values in per_case.items():
        if model == reference:
            continue
        cases, x, y = paired(values, per_case[reference])
        low, high = bootstrap_ci(x - y)
        rows.append({"model": model, "reference": reference, "paired_cases": len(cases),
                     "mean_difference": float(np.mean(x - y)) if cases else math.nan,
                     "difference_ci_low": low, "difference_ci_high": high, "wilcoxon_p": wilcoxon_p(x, y)})
    for row, adjusted in zip(rows, holm([r["wilcoxon_p"] for r in rows])):
        row["holm_p"] = adjusted
        row["significant"] = bool(adjusted < alpha) if not math.isnan(adjusted) else False
    return rows


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (lower or equal cost and higher score), by cost."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -scores[i]))
    front, best = [], -math.inf
    for i in order:
        if scores[i] > best:
            front.append(i)
            best = scores[i]
    return front
