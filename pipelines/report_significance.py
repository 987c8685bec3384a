"""Confidence intervals and paired tests for ``motor report`` rows, from the runs' per-study outputs.

For a metric key of ``metrics.json`` that a per-study file can recompute (:func:`metric_for_key`),
each row (a group of runs, seeds pooled) gets a bootstrap confidence interval over the test
studies, and, against a baseline row, the difference with its interval and a paired permutation
p-value (:mod:`pipelines.metrics.significance`). Keys recomputed:

* ``<where>.{itc,itm}.{i2t,t2i}_R@K``, ``..._MedR`` and ``<where>.{itc,itm}.mean_R`` (retrieval
  ranks; ``mean_R`` over R@1/5/10 of both directions);
* ``<where>.model.{overall,open,closed}`` (VQA accuracy);
* ``<where>.mean_auroc`` (diagnosis, over classes with both labels in the resample).

``<where>`` names the per-study file, ``RUN/per_study/<where>.jsonl``. Other keys (generation
scores, training figures) get no interval. A row whose runs lack the file (older runs) gets none
either. A row is paired with the baseline run by run, in seed order; rows with another number of
runs than the baseline are not tested.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kg.errors import InputError
from pipelines.metrics.significance import (
    Interval,
    Metric,
    PairedComparison,
    Table,
    bootstrap_ci,
    paired_test,
    recall_at,
)
from pipelines.metrics.tables import MISSING, metrics_table
from pipelines.per_study import PER_STUDY_DIR, read_per_study
from pipelines.run_report import RunGroup

_RETRIEVAL = re.compile(r"^(?P<where>.+)\.(?P<head>itc|itm)\.(?:(?P<dir>i2t|t2i)_(?P<what>R@(?P<k>\d+)|MedR)|mean_R)$")
_VQA = re.compile(r"^(?P<where>.+)\.model\.(?P<kind>overall|open|closed)$")
_AUROC = re.compile(r"^(?P<where>.+)\.mean_auroc$")
MEAN_R_KS = (1, 5, 10)


def _median_rank(column: str) -> Metric:
    return lambda table: float(np.median(table[column]))


def _mean_recall(head: str) -> Metric:
    recalls = [recall_at(k, f"{head}_{d}_rank") for d in ("i2t", "t2i") for k in MEAN_R_KS]
    return lambda table: float(np.mean([recall(table) for recall in recalls]))


def _accuracy(kind: str) -> Metric:
    def metric(table: Table) -> float:
        correct = np.asarray(table["correct"], dtype=float)
        if kind != "overall":
            correct = correct[np.char.lower(np.asarray(table["answer_type"]).astype(str)) == kind]
        return float(correct.mean()) if correct.size else float("nan")

    return metric


def _mean_auroc(table: Table) -> float:
    from sklearn.metrics import roc_auc_score

    truth, prob = np.asarray(table["y_true"], dtype=float), np.asarray(table["y_prob"], dtype=float)
    scores = []
    for column in range(truth.shape[1]):
        known = ~np.isnan(truth[:, column])
        labels = truth[known, column]
        if np.unique(labels).size == 2:
            scores.append(roc_auc_score(labels, prob[known, column]))
    return float(np.mean(scores)) if scores else float("nan")


def metric_for_key(key: str) -> tuple[str, Metric] | None:
    """``(per-study file stem, metric)`` recomputing metrics key ``key``, or ``None`` (see module docstring)."""
    match = _RETRIEVAL.match(key)
    if match:
        head = match["head"]
        if match["dir"] is None:
            return match["where"], _mean_recall(head)
        column = f"{head}_{match['dir']}_rank"
        return match["where"], recall_at(int(match["k"]), column) if match["k"] else _median_rank(column)
    match = _VQA.match(key)
    if match:
        return match["where"], _accuracy(match["kind"])
    match = _AUROC.match(key)
    if match:
        return match["where"], _mean_auroc
    return None


@dataclass
class SignificanceCell:
    """One row × metric: the interval, and the comparison with the baseline (``None`` when not computed)."""

    group: str
    metric: str
    interval: Interval | None
    versus_baseline: PairedComparison | None


def _seed_order(run: Any) -> tuple:
    return tuple(sorted((str(k), str(v)) for k, v in run.seeds.items()))


def _tables(group: RunGroup, stem: str) -> list[dict[str, np.ndarray]] | None:
    runs = sorted(group.runs, key=_seed_order)
    paths = [run.path / PER_STUDY_DIR / f"{stem}.jsonl" for run in runs]
    if not all(path.is_file() for path in paths):
        return None
    return [read_per_study(path) for path in paths]


def find_baseline(groups: Sequence[RunGroup], name: str) -> RunGroup:
    """The group called ``name``, or the only one whose name contains it.

    Raises:
        InputError: no group or several match (the names are listed).
    """
    exact = [g for g in groups if g.name == name]
    matches = exact or [g for g in groups if name in g.name]
    if len(matches) != 1:
        raise InputError(f"{'several' if matches else 'no'} rows match {name!r}; rows: "
                         f"{', '.join(g.name for g in groups)}", field="--baseline")
    return matches[0]


def significance(
    groups: Sequence[RunGroup],
    metrics: Sequence[str],
    *,
    baseline: str | None = None,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[SignificanceCell]:
    """Intervals (and tests against ``baseline``) of every recomputable metric of every group.

    Returns:
        One cell per group and metric that :func:`metric_for_key` knows, in group then metric order.
    """
    base = find_baseline(groups, baseline) if baseline is not None else None
    cells = []
    for key in metrics:
        found = metric_for_key(key)
        if found is None:
            continue
        stem, metric = found
        base_tables = _tables(base, stem) if base is not None else None
        for group in groups:
            tables = _tables(group, stem)
            if tables is None:
                cells.append(SignificanceCell(group.name, key, None, None))
                continue
            interval = bootstrap_ci(tables, metric, confidence=confidence, n_resamples=n_resamples, seed=seed)
            comparison = None
            if base_tables is not None and group is not base and len(base_tables) == len(tables):
                comparison = paired_test(tables, base_tables, metric, n_permutations=n_resamples,
                                         confidence=confidence, n_resamples=n_resamples, seed=seed)
            cells.append(SignificanceCell(group.name, key, interval, comparison))
    return cells


def significance_table(cells: Sequence[SignificanceCell], baseline: str | None, digits: int = 3) -> str:
    """Markdown: a row per group and metric with the value, its interval and, with a baseline, the
    difference, its interval and the p-value."""
    if not cells:
        return "No metric of these runs can be recomputed from per-study outputs.\n"
    level = next((c.interval.confidence for c in cells if c.interval is not None), 0.95)
    columns = ["value", f"{level:.0%} CI"]
    if baseline is not None:
        columns += [f"Δ vs {baseline}", "Δ CI", "p"]
    rows: dict[str, dict[str, Any]] = {}
    for cell in cells:
        row: dict[str, Any] = {"value": MISSING, f"{level:.0%} CI": MISSING}
        if cell.interval is not None:
            row["value"] = f"{cell.interval.value:.{digits}f}"
            row[f"{level:.0%} CI"] = f"[{cell.interval.low:.{digits}f}, {cell.interval.high:.{digits}f}]"
        if baseline is not None:
            test = cell.versus_baseline
            row[f"Δ vs {baseline}"] = MISSING if test is None else f"{test.difference:+.{digits}f}"
            row["Δ CI"] = MISSING if test is None else f"[{test.low:+.{digits}f}, {test.high:+.{digits}f}]"
            row["p"] = MISSING if test is None else f"{test.p_value:.3f}"
        rows[f"{cell.group} · {cell.metric}"] = row
    table = metrics_table(rows, columns=columns, row_header="group · metric")
    note = (f"\nIntervals: bootstrap over test studies, seeds pooled. "
            + ("Δ: paired permutation test against the baseline over the same studies (two-sided p).\n"
               if baseline is not None else "\n"))
    return table + note


def significance_json(cells: Sequence[SignificanceCell]) -> list[dict[str, Any]]:
    """The cells as plain data (``interval`` / ``versus_baseline`` ``null`` when not computed)."""
    return [asdict(cell) for cell in cells]


@dataclass
class AblationSignificance:
    """Zero-shot recalls of an ablation's variants with their uncertainty.

    Attributes:
        n_studies: test studies.
        baseline: the variant compared against.
        intervals: variant → ``"i2t_R@K"`` / ``"t2i_R@K"`` → bootstrap :class:`Interval`.
        tests: variant → key → :class:`PairedComparison` against ``baseline`` (not for the
            baseline itself, and empty when the baseline was not run).
        n_seeds: training seeds pooled in every interval and test.
    """

    n_studies: int
    baseline: str
    intervals: dict[str, dict[str, Interval]]
    tests: dict[str, dict[str, PairedComparison]]
    n_seeds: int = 1


def ablation_significance(
    run_dirs: dict[str, Any],
    *,
    baseline: str = "none",
    ks: Sequence[int] = (1, 5, 10),
    n_resamples: int = 1000,
    seed: int = 0,
    stem: str = "zero_shot_retrieval",
) -> AblationSignificance | None:
    """Intervals of each variant's ITC recalls and paired tests against ``baseline``, seeds pooled.

    Args:
        run_dirs: variant → its pretraining run directory (holding ``per_study/<stem>.jsonl``), or
            a list of them, one per training seed in the same seed order for every variant.
        baseline: the variant compared against.

    Returns:
        The figures, or ``None`` when a run has no per-study file.
    """
    from pathlib import Path

    tables: dict[str, list[dict[str, np.ndarray]]] = {}
    for variant, dirs in run_dirs.items():
        paths = [Path(d) / PER_STUDY_DIR / f"{stem}.jsonl" for d in ([dirs] if isinstance(dirs, (str, Path)) else dirs)]
        if not paths or not all(path.is_file() for path in paths):
            return None
        tables[variant] = [read_per_study(path) for path in paths]
    keys = [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in ks]
    found = AblationSignificance(len(next(iter(tables.values()))[0]["study_id"]), baseline, {}, {},
                                 n_seeds=len(next(iter(tables.values()))))

    def ranked_by(seeds: list[dict]) -> str:
        # The ranks a row's tables report: ITC, or ITM for a method without ITC (M3AE, ARL).
        return "itc" if "itc_i2t_rank" in seeds[0] else "itm"

    for variant, seeds in tables.items():
        found.intervals[variant], found.tests[variant] = {}, {}
        for key in keys:
            direction, k = key.split("_R@")
            metric = recall_at(int(k), f"{ranked_by(seeds)}_{direction}_rank")
            found.intervals[variant][key] = bootstrap_ci(seeds, metric, n_resamples=n_resamples, seed=seed)
            base = tables.get(baseline)
            if (base is not None and variant != baseline and ranked_by(seeds) == ranked_by(base)
                    and len(seeds) == len(base)):
                found.tests[variant][key] = paired_test(seeds, base, metric, n_permutations=n_resamples,
                                                        n_resamples=n_resamples, seed=seed)
    return found


def ablation_significance_table(found: AblationSignificance | None) -> str:
    """Markdown for ``ablation.md``: each variant's recalls with 95 % intervals, and its difference
    from the baseline with the paired permutation p-value (recalls in percent); ``""`` for ``None``."""
    if found is None:
        return ""
    names = {"i2t": "Report", "t2i": "Image"}
    some = next(iter(found.intervals.values()))
    columns = {key: f"{names[key.split('_')[0]]} {key.split('_')[1]}" for key in some}
    intervals = {variant: {key: f"{100 * ci.value:.1f} [{100 * ci.low:.1f}, {100 * ci.high:.1f}]"
                           for key, ci in row.items()} for variant, row in found.intervals.items()}
    n = found.n_studies
    pooled = f", {found.n_seeds} training seeds pooled" if found.n_seeds > 1 else ""
    text = (f"\n95 % bootstrap intervals over the {n} test studies{pooled} (recall in percent; one study is "
            f"{100 / n:.1f} points):\n\n" + metrics_table(intervals, columns=columns, row_header="Variant"))
    # round(...) + 0.0 turns a -1e-17 difference of equal recalls into +0.0, not -0.0.
    compared = {variant: {key: f"{round(100 * test.difference, 1) + 0.0:+.1f} (p={test.p_value:.2f})"
                          for key, test in row.items()}
                for variant, row in found.tests.items() if row}
    if compared:
        text += (f"\nDifference from {found.baseline} (points) and two-sided paired permutation p-value over the "
                 f"same studies{pooled}:\n\n" + metrics_table(compared, columns=columns, row_header="Variant"))
    return text
