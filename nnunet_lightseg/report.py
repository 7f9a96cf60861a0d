"""`nnunet-lightseg report -d D -c C`: every trainer's results on one dataset, compared.

Reads nnU-Net's own evaluation, `fold_<k>/validation/summary.json` (and the cross-validation
`crossval_results_folds_*/summary.json` where `nnUNetv2_find_best_configuration` made one), of
every `<trainer>__<plans>__<C>` folder under nnUNet_results/<dataset>, and the profile JSON of
`nnunet-lightseg profile` when there is one. Writes into the output folder:
- report.md, report.csv, report.html (self-contained: tables and plots inline), per_case.csv,
  statistics.csv;
- Dice per class and foreground mean, mean ± std over folds; HD95 and NSD (MONAI, in mm of each
  image's spacing, see `surface`) from the saved validation predictions;
- paired per-case Wilcoxon tests against the reference with Holm's correction and bootstrap
  CIs (`stats`); PNG plots of Dice against GMAC and params with the Pareto front, and per-case
  box plots (`plots`).

`make_report(ReportConfig)` is the `report` command; `build` and `write` are its two halves (the
benchmark calls them with the results it has). The output folder is claimed through
`output_folder`: a folder that is not ours is refused (or, with `force`, its files moved aside).
A results folder with no finished fold (a trainer that failed at start-up, or still training) is
a row saying so.
"""
from __future__ import annotations

import base64
import glob
import html
import json
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nnunet_lightseg import output_folder, plots, stats
from nnunet_lightseg import surface as surface_metrics
from nnunet_lightseg.baselines import DEFAULT_PLANS, Entry, network_trainer
from nnunet_lightseg.errors import ReportError, UsageError
from nnunet_lightseg.nnunet_env import results_folder
from nnunet_lightseg.schedules import seedless

SUMMARY = "summary.json"


@dataclass(frozen=True)
class ReportConfig:
    """What `make_report` reports: one dataset and configuration, and how."""

    dataset: str
    configuration: str
    reference: str | None = None  # TRAINER or TRAINER__PLANS (default: nnU-Net's default)
    profile_path: str | None = None  # default: <nnUNet_results>/<dataset>/lightseg_profile_<C>.json if present
    surface: bool = True  # HD95 and NSD
    nsd_tolerance_mm: float = 1.0
    output: str | None = None  # default: ./lightseg-report-<dataset>-<C>
    force: bool = False  # move the files of an output folder that is not ours aside instead of refusing

    def __post_init__(self):
        if not self.nsd_tolerance_mm > 0:
            raise UsageError(f"--nsd-tolerance {self.nsd_tolerance_mm} must be a positive number of mm.")


def make_report(config: ReportConfig) -> tuple[dict, list[str]]:
    """Build and write the report of a dataset's results folder; returns (`build`'s tables, files written)."""
    folder = results_folder(config.dataset)
    output = config.output or f"lightseg-report-{os.path.basename(folder)}-{config.configuration}"
    output_folder.check(output, config.force)  # refuse before the work; claimed once there is a report
    profile_path = config.profile_path or os.path.join(folder, f"lightseg_profile_{config.configuration}.json")
    profile = None
    if os.path.isfile(profile_path):
        profile = _load(profile_path)
    elif config.profile_path:
        raise ReportError(f"--profile {config.profile_path} does not exist; run nnunet-lightseg profile first.")
    built = build(folder, config.configuration, reference=config.reference, profile=profile, surface=config.surface,
                  tolerance_mm=config.nsd_tolerance_mm)
    moved = output_folder.claim(output, config.force)
    written = write(built, output, f"{os.path.basename(folder)} {config.configuration}")
    if moved:
        built["notes"].append(f"--force: moved what {output} held into {moved}.")
    return built, written


@dataclass
class Run:
    """One `<trainer>__<plans>__<configuration>` results folder."""

    entry: Entry
    folder: str
    folds: dict[int, dict] = field(default_factory=dict)  # fold -> validation summary.json
    crossval: dict | None = None
    error: str | None = None  # set by the benchmark when training failed

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def model(self) -> str:
        """The row this run belongs to: its name without the seed (runs of several seeds share one)."""
        return Entry(seedless(self.entry.trainer)[0], self.entry.plans).name

    @property
    def seed(self) -> str:
        """The seed of its trainer name, "" when it has none."""
        seed = seedless(self.entry.trainer)[1]
        return "" if seed is None else str(seed)


def collect(folder: str, configuration: str) -> list[Run]:
    """Every run of `configuration` under a dataset's results folder, with its finished folds."""
    runs = []
    for path in sorted(glob.glob(os.path.join(folder, f"*__*__{configuration}"))):
        trainer, plans, _ = os.path.basename(path).split("__", 2)
        run = Run(Entry(trainer, plans), path)
        for summary in glob.glob(os.path.join(path, "fold_*", "validation", SUMMARY)):
            fold = re.fullmatch(r"fold_(\d+)", os.path.basename(os.path.dirname(os.path.dirname(summary))))
            if fold:
                run.folds[int(fold[1])] = _load(summary)
        crossval = sorted(glob.glob(os.path.join(path, "crossval_results_folds_*", SUMMARY)))
        if crossval:
            run.crossval = _load(crossval[-1])
        runs.append(run)
    return sorted(runs, key=lambda r: (r.entry.trainer, r.entry.plans))


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def case_id(file: str) -> str:
    name = os.path.basename(file)
    return re.sub(r"(\.nii\.gz|\.[A-Za-z0-9]+)$", "", name)


def per_case_rows(run: Run) -> list[dict]:
    """One row per validation case and label: Dice from nnU-Net's summary.json."""
    rows = []
    for fold, summary in sorted(run.folds.items()):
        for case in summary["metric_per_case"]:
            for label, metrics in case["metrics"].items():
                rows.append({"model": run.model, "seed": run.seed, "fold": fold,
                             "case": case_id(case["reference_file"]), "label": label, "Dice": metrics["Dice"], "prediction_file": case["prediction_file"],
                             "reference_file": case["reference_file"]})
    return rows


def add_surface_metrics(cases: pd.DataFrame, tolerance_mm: float) -> pd.DataFrame:
    """HD95 and NSD per case and label (integer labels only), computed from the saved files."""
    cases = cases.copy()
    cases["HD95"], cases["NSD"], cases["spacing"] = math.nan, math.nan, ""
    integer = cases["label"].str.fullmatch(r"\d+")
    for (prediction, reference), group in cases[integer].groupby(["prediction_file", "reference_file"]):
        labels = sorted(int(label) for label in group["label"])
        for path in (prediction, reference):
            if not os.path.isfile(path):
                raise ReportError(f"{path} is missing (moved since validation?): run nnUNetv2_train ... --val again, "
                                  f"or report with --no-surface.")
        result = surface_metrics.case_metrics(prediction, reference, labels, tolerance_mm)
        for index, label in zip(group.index, group["label"]):
            cases.loc[index, ["HD95", "NSD"]] = [result["per_label"][label]["HD95"], result["per_label"][label]["NSD"]]
            cases.loc[index, "spacing"] = "x".join(f"{s:g}" for s in result["spacing"])
    return cases


def fold_means(cases: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per model, seed, fold and label: the mean over cases (NaN-aware, as nnU-Net's summary)."""
    return cases.groupby(["model", "seed", "fold", "label"])[metrics].mean().reset_index()


def summary_table(runs: list[Run], cases: pd.DataFrame, metrics: list[str], profile: dict | None) -> pd.DataFrame:
    """One row per model (its seeds together): folds, seeds, per-class metrics and their foreground
    mean as mean ± std over the (seed, fold) pairs."""
    per_fold = fold_means(cases, metrics) if len(cases) else pd.DataFrame(
        columns=["model", "seed", "fold", "label", *metrics])
    rows = []
    for model in dict.fromkeys(run.model for run in runs):
        mine_runs = [run for run in runs if run.model == model]
        folds = sorted({fold for run in mine_runs for fold in run.folds})
        seeds = [run.seed for run in mine_runs if run.seed and run.folds]
        row = {"model": model, "folds": ",".join(map(str, folds)) or "-"}
        if seeds:
            row["seeds"] = ",".join(sorted(seeds, key=int))
        mine = per_fold[per_fold["model"] == model]
        for metric in metrics:
            for label, group in mine.groupby("label"):
                row[f"{metric} {label}"] = _mean_std(group[metric])
            foreground = mine.groupby(["seed", "fold"])[metric].mean()
            row[f"{metric} mean"] = _mean_std(foreground)
        crossval = [run.crossval["foreground_mean"]["Dice"] for run in mine_runs if run.crossval is not None]
        if crossval:
            row["Dice cross-val"] = _mean_std(pd.Series(crossval))
        row.update(_profile_columns(mine_runs[0].entry, profile))
        errors = [f"{run.name}: {run.error}" if len(mine_runs) > 1 else run.error for run in mine_runs if run.error]
        row["error"] = "; ".join(errors) or ("" if folds else "no finished fold")
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    return f"{values.mean():.4f}" + (f" ± {values.std(ddof=1):.4f}" if len(values) > 1 else "")


def architecture(entry: Entry) -> tuple[str, str]:
    """What the profile measures: the network, i.e. the trainer without its schedule, on its plans."""
    return network_trainer(entry.trainer), entry.plans


PROFILE_COLUMNS = {"params": "params", "gmac": "GMAC", "latency_s": "latency s/patch", "gmac_per_s": "GMAC/s",
                   "speedup_vs_reference": "speed-up", "mac_ratio_vs_reference": "MAC ratio",
                   "predictor_s_per_case": "predictor s/case", "predictor_speedup_vs_reference": "predictor speed-up",
                   "train_step_s": "train step s", "peak_memory_inference_mb": "peak MB inference",
                   "peak_memory_training_mb": "peak MB training"}


def profile_row(entry: Entry, profile: dict | None) -> dict | None:
    if not profile:
        return None
    for row in profile["results"]:
        candidate = Entry(*row["entry"].split("__")) if "__" in row["entry"] else Entry(row["entry"])
        if architecture(candidate) == architecture(entry) and "error" not in row:
            return row
    return None


def _profile_columns(entry: Entry, profile: dict | None) -> dict:
    row = profile_row(entry, profile)
    if row is None:
        return {}
    return {label: row[key] for key, label in PROFILE_COLUMNS.items() if key in row}


def case_scores(cases: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per model: each (case, seed)'s foreground-mean Dice (the quantity the paired tests compare, so
    that pairs match on case and seed), keyed "case" or "case@seed<S>"."""
    means = cases.groupby(["model", "case", "seed"])["Dice"].mean()
    return {model: {(case if not seed else f"{case}@seed{seed}"): value
                    for (_, case, seed), value in group.items()} for model, group in means.groupby(level=0)}


def choose_reference(runs: list[Run], requested: str | None) -> str | None:
    names = list(dict.fromkeys(r.model for r in runs if r.folds))
    if requested:
        if requested not in names:
            raise ReportError(f"reference {requested!r} has no finished fold here; the trainers with results are: "
                              f"{', '.join(names) or 'none'}.")
        return requested
    return next((r.model for r in runs if r.folds and r.entry.is_nnunet_default), None)


def build(folder: str, configuration: str, reference: str | None = None, profile: dict | None = None,
          surface: bool = True, tolerance_mm: float = 1.0, errors: dict[str, str] | None = None) -> dict:
    """Everything the report shows, as tables (pandas) and notes."""
    runs = collect(folder, configuration)
    for name, message in (errors or {}).items():
        run = next((r for r in runs if r.name == name), None)
        if run is None:
            trainer, _, plans = name.partition("__")
            run = Run(Entry(trainer, plans or DEFAULT_PLANS), "")
            runs.append(run)
        run.error = message
    if not runs:
        raise ReportError(f"no results of configuration {configuration!r} in {folder}: train first "
                          f"(nnUNetv2_train or nnunet-lightseg benchmark).")
    cases = pd.DataFrame([row for run in runs for row in per_case_rows(run)],
                         columns=["model", "seed", "fold", "case", "label", "Dice", "prediction_file",
                                  "reference_file"])
    metrics = ["Dice"]
    notes = []
    if surface and len(cases):
        cases = add_surface_metrics(cases, tolerance_mm)
        metrics += ["HD95", "NSD"]
        spacings = sorted(set(cases["spacing"]) - {""})
        notes.append(f"HD95 (mm) and NSD at {tolerance_mm:g} mm computed with {surface_metrics.library_version()} "
                     f"(compute_hausdorff_distance, compute_surface_dice) in the images' spacing: "
                     f"{', '.join(spacings) or '-'} mm (z×y×x). NaN where a class is absent.")
    reference = choose_reference(runs, reference)
    comparisons = pd.DataFrame()
    if reference is None:
        notes.append("No reference (nnUNetTrainer on nnUNetPlans) has results: no paired tests. Name one with "
                     "--reference.")
    elif len(runs) > 1:
        scores = case_scores(cases)
        comparisons = pd.DataFrame(stats.compare(scores, reference))
        intervals = {m: stats.bootstrap_ci(list(v.values())) for m, v in scores.items()}
        comparisons.insert(1, "Dice mean", [float(np.nanmean(list(scores[m].values()))) for m in comparisons["model"]])
        comparisons.insert(2, "Dice CI low", [intervals[m][0] for m in comparisons["model"]])
        comparisons.insert(3, "Dice CI high", [intervals[m][1] for m in comparisons["model"]])
        notes.append(f"Paired two-sided Wilcoxon signed-rank tests of per-case foreground-mean Dice against "
                     f"{reference} (runs under several seeds pair on (case, seed)) "
                     f"(scipy), Holm-corrected over {len(comparisons)} tests (statsmodels), alpha 0.05; 95% "
                     f"percentile bootstrap CIs ({stats.BOOTSTRAP_RESAMPLES} resamples) of the mean.")
    if profile:
        m = profile["machine"]
        memory = ("CUDA allocator peak" if profile["device"].startswith("cuda") else
                  "peak resident set size of a fresh process, Python and torch included")
        notes.append(f"Profile: patch size of each plan, device {profile['device']}, {m['torch_threads']} threads, "
                     f"{m.get('gpu', m['cpu'])}, torch {m['torch']}; speed-up and MAC ratio against "
                     f"{profile['reference']}; peak MB: {memory}.")
    return {"summary": summary_table(runs, cases, metrics, profile), "cases": cases, "comparisons": comparisons,
            "notes": notes, "reference": reference, "configuration": configuration, "folder": folder}


def model_means(cases: pd.DataFrame) -> pd.Series:
    """Per model: mean foreground Dice, the mean over its (seed, fold) pairs of each fold's mean."""
    per_fold = fold_means(cases, ["Dice"]).groupby(["model", "seed", "fold"])["Dice"].mean()
    return per_fold.groupby(level="model").mean()


def cross_dataset_table(reports: dict[str, dict]) -> pd.DataFrame:
    """One row per model over several datasets' reports (`build`), as "nnU-Net Revisited" (Isensee et
    al. 2024) summarises a benchmark: its rank by mean foreground Dice on each dataset (1 = best, ties
    share the mean rank), the mean of those ranks, and wins / ties / losses against each dataset's
    reference (a win: Holm-corrected paired test significant at 0.05 and a positive mean difference)."""
    ranks, verdicts = {}, {}
    for dataset, built in reports.items():
        if len(built["cases"]):
            for model, rank in model_means(built["cases"]).rank(ascending=False, method="average").items():
                ranks.setdefault(model, {})[dataset] = rank
        for row in built["comparisons"].to_dict("records") if len(built["comparisons"]) else []:
            verdict = "ties" if not row["significant"] else ("wins" if row["mean_difference"] > 0 else "losses")
            verdicts.setdefault(row["model"], []).append(verdict)
    rows = []
    for model, by_dataset in ranks.items():
        row = {"model": model, "datasets": len(by_dataset), "mean rank": float(np.mean(list(by_dataset.values())))}
        row.update({f"rank {dataset}": by_dataset.get(dataset, math.nan) for dataset in reports})
        mine = verdicts.get(model)
        row.update({kind: (mine.count(kind) if mine is not None else "-") for kind in ("wins", "ties", "losses")})
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["mean rank", "model"]).reset_index(drop=True) if rows else pd.DataFrame()


def write(report: dict, output: str, title: str) -> list[str]:
    """report.md, report.csv, per_case.csv, statistics.csv, the PNG plots and report.html."""
    os.makedirs(output, exist_ok=True)
    summary, comparisons = report["summary"], report["comparisons"]
    written = []

    def path(name):
        written.append(os.path.join(output, name))
        return written[-1]

    summary.to_csv(path("report.csv"), index=False)
    report["cases"].to_csv(path("per_case.csv"), index=False)
    comparisons.to_csv(path("statistics.csv"), index=False)
    images = write_plots(report, output)
    written += images
    with open(path("report.md"), "w") as f:
        f.write(f"# {title}\n\n" + summary.to_markdown(index=False, floatfmt=".4g") + "\n\n")
        if len(comparisons):
            f.write(f"## Against {report['reference']}\n\n" + comparisons.to_markdown(index=False, floatfmt=".4g")
                    + "\n\n")
        f.write("".join(f"- {note}\n" for note in report["notes"]))
        f.write("".join(f"\n![{os.path.basename(i)}]({os.path.basename(i)})\n" for i in images))
    with open(path("report.html"), "w") as f:
        f.write(_html(report, title, images))
    return written


def write_plots(report: dict, output: str) -> list[str]:
    """The plots the report's data allow: box plots need cases, cost plots a profile."""
    cases, summary = report["cases"], report["summary"]
    if len(cases) == 0:
        return []
    written = [plots.per_case_boxes(case_scores(cases), os.path.join(output, "dice_per_case.png"))]
    if "GMAC" in summary:
        means = model_means(cases)
        for column, label, name in (("GMAC", "GMAC per patch", "dice_vs_gmac.png"),
                                    ("params", "parameters", "dice_vs_params.png")):
            rows = summary.dropna(subset=[column])
            points = [(m, float(c), float(means[m])) for m, c in zip(rows["model"], rows[column]) if m in means]
            if points:
                written.append(plots.dice_against_cost(points, label, os.path.join(output, name)))
    return written


def _html(report: dict, title: str, images: list[str]) -> str:
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:90%}"
             "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:48%}</style>",
             f"<h1>{html.escape(title)}</h1>", report["summary"].to_html(index=False, float_format="{:.4g}".format)]
    if len(report["comparisons"]):
        parts += [f"<h2>Against {html.escape(report['reference'])}</h2>",
                  report["comparisons"].to_html(index=False, float_format="{:.4g}".format)]
    parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report["notes"]) + "</ul>")
    for image in images:
        with open(image, "rb") as f:
            parts.append(f"<img alt='{os.path.basename(image)}' src='data:image/png;base64,"
                         f"{base64.b64encode(f.read()).decode()}'>")
    return "\n".join(parts)
