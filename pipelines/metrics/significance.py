"""Uncertainty of a test-set metric: bootstrap confidence intervals and paired tests over studies.

A test set of a few hundred studies measures a metric with an error of several points; two model
variants scored on the same studies differ by less than that more often than not. This module
answers the two questions a reader of an ablation table asks:

* how precise is this figure? :func:`bootstrap_ci` resamples the test studies with replacement
  and recomputes the metric (SciPy's :func:`scipy.stats.bootstrap`), giving a confidence interval;
* is this variant better than the baseline, beyond chance? :func:`paired_test` swaps, study by
  study, the variant's and the baseline's outputs at random (a paired permutation test,
  :func:`scipy.stats.permutation_test` with ``permutation_type="samples"``) and reports how often a
  difference at least as large as the observed one arises; with it comes a bootstrap interval of
  the difference, resampling the studies of both at once.

Inputs are *per-study tables*: a mapping from a column name to an array whose first axis is the
test study (``{"study_id": (N,), "i2t_rank": (N,)}``, ``{"y_true": (N, C), "y_prob": (N, C)}``),
and a *metric*: any function of one such table returning a number. A metric that is a mean of
per-study values (recall at K, VQA accuracy) and one that is not (AUROC, median rank, corpus BLEU)
are handled alike: the studies are resampled and the metric recomputed on each resample.

Seeds pooled: a run repeated with several seeds gives one table per seed, over the same studies.
The statistic is then the metric averaged over seeds, and resampling (or swapping) acts on whole
studies, the same draw in every seed, so the study-to-study variation is counted once and the
seed-to-seed variation is averaged out. The spread between seeds is a different quantity (report it
as mean ± std). In a paired test the variant's and the baseline's seeds are paired in order.

Tables with an ``id_column`` (``study_id`` by default) are aligned by it: every table is put in
the first table's study order, and tables over different studies are an error.

Everything is seeded: the same inputs and ``seed`` give the same interval and p-value.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kg.errors import InputError

Table = Mapping[str, Any]
Metric = Callable[[Table], float]
CI_METHODS = ("percentile", "basic", "BCa")


@dataclass(frozen=True)
class Interval:
    """A metric with its bootstrap confidence interval.

    Attributes:
        value: the metric on the full test set (averaged over seeds).
        low, high: the interval's bounds at ``confidence``.
        confidence: e.g. 0.95.
        n_studies: studies resampled. n_seeds: tables pooled per resample.
        n_resamples: bootstrap resamples. method: SciPy's interval method.
    """

    value: float
    low: float
    high: float
    confidence: float
    n_studies: int
    n_seeds: int
    n_resamples: int
    method: str


@dataclass(frozen=True)
class PairedComparison:
    """A variant against a baseline over the same test studies.

    Attributes:
        difference: metric(variant) - metric(baseline) on the full test set (seeds averaged).
        low, high: bootstrap interval of the difference at ``confidence`` (studies resampled
            jointly for both).
        p_value: two-sided paired permutation p-value of "no difference" (1.0 when the two are
            identical on every study).
        confidence: the interval's level. n_studies, n_seeds: as in :class:`Interval`.
        n_permutations: permutations drawn (all ``2**n_studies`` when that is fewer: exact test).
        n_resamples: bootstrap resamples of the interval.
    """

    difference: float
    low: float
    high: float
    p_value: float
    confidence: float
    n_studies: int
    n_seeds: int
    n_permutations: int
    n_resamples: int


# ---------------------------------------------------------------------- metrics over tables
def column_mean(column: str) -> Metric:
    """Metric: the mean of a per-study column (e.g. a 0/1 ``correct`` column → accuracy)."""

    def metric(table: Table) -> float:
        return float(np.mean(table[column]))

    metric.__name__ = f"mean({column})"
    return metric


def recall_at(k: int, rank_column: str) -> Metric:
    """Metric: the fraction of studies whose 1-based rank in ``rank_column`` is at most ``k`` (R@K)."""

    def metric(table: Table) -> float:
        return float(np.mean(np.asarray(table[rank_column]) <= k))

    metric.__name__ = f"R@{k}({rank_column})"
    return metric


# ---------------------------------------------------------------------- table handling
def _as_tables(records: Table | Sequence[Table], what: str) -> list[dict[str, np.ndarray]]:
    tables = [records] if isinstance(records, Mapping) else list(records)
    if not tables:
        raise InputError("no per-study table given", field=what)
    out = []
    for seed, table in enumerate(tables):
        if not isinstance(table, Mapping) or not table:
            raise InputError("a per-study table must be a non-empty mapping of column → array",
                             record=f"seed {seed}", field=what)
        columns = {name: np.asarray(values) for name, values in table.items()}
        lengths = {name: (len(values) if values.ndim else -1) for name, values in columns.items()}
        if len(set(lengths.values())) != 1 or -1 in lengths.values():
            raise InputError(f"columns must all have one row per study; lengths {lengths}",
                             record=f"seed {seed}", field=what)
        out.append(columns)
    return out


def _align(tables: list[dict[str, np.ndarray]], id_column: str | None, what: str,
           reference: np.ndarray | None = None) -> tuple[list[dict[str, np.ndarray]], int]:
    """Put every table in the reference study order (by ``id_column`` when all have it)."""
    n = len(next(iter(tables[0].values())))
    has_ids = id_column is not None and all(id_column in t for t in tables)
    if not has_ids:
        for seed, table in enumerate(tables):
            if len(next(iter(table.values()))) != n:
                raise InputError(f"{len(next(iter(table.values())))} studies, the first table has {n}",
                                 record=f"seed {seed}", field=what)
        return tables, n
    order = reference if reference is not None else tables[0][id_column]
    if len(set(order.tolist())) != len(order):
        raise InputError(f"repeated study ids in {id_column!r}", field=what)
    aligned = []
    for seed, table in enumerate(tables):
        ids = table[id_column]
        position = {sid: i for i, sid in enumerate(ids.tolist())}
        if len(position) != len(ids) or set(position) != set(order.tolist()):
            extra = sorted(set(position) - set(order.tolist()))[:3]
            absent = sorted(set(order.tolist()) - set(position))[:3]
            raise InputError(f"not the same test studies (only here: {extra}, missing: {absent})",
                             record=f"seed {seed}", field=what)
        index = np.array([position[sid] for sid in order.tolist()], dtype=np.int64)
        aligned.append({name: values[index] for name, values in table.items()})
    return aligned, len(order)


def _take(table: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[index] for name, values in table.items()}


def _pooled(tables: list[dict[str, np.ndarray]], metric: Metric, index: np.ndarray) -> float:
    """The metric on the studies ``index`` of every seed, averaged over seeds."""
    return float(np.mean([metric(_take(table, index)) for table in tables]))


def _check(confidence: float, n_resamples: int, method: str) -> None:
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1), got {confidence}", field="confidence")
    if n_resamples < 1:
        raise InputError(f"n_resamples must be >= 1, got {n_resamples}", field="n_resamples")
    if method not in CI_METHODS:
        raise InputError(f"method must be one of {', '.join(CI_METHODS)}, got {method!r}", field="method")


def _interval(statistic: Callable[[np.ndarray], float], n: int, *, confidence: float, n_resamples: int,
              method: str, rng: np.random.Generator) -> tuple[float, float]:
    from scipy.stats import bootstrap

    if n < 2:
        raise InputError(f"a bootstrap interval needs at least 2 studies, got {n}", field="records")
    result = bootstrap((np.arange(n),), statistic, n_resamples=n_resamples, vectorized=False,
                       confidence_level=confidence, method=method, rng=rng)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


# ---------------------------------------------------------------------- public API
def bootstrap_ci(
    records: Table | Sequence[Table],
    metric: Metric,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "percentile",
    id_column: str | None = "study_id",
) -> Interval:
    """Bootstrap confidence interval of ``metric`` over the test studies.

    Args:
        records: a per-study table, or one table per seed over the same studies (pooled, see the
            module docstring).
        metric: function of a table → number (:func:`column_mean`, :func:`recall_at`, or e.g.
            ``lambda t: classification_metrics(t["y_true"], t["y_prob"], names)["mean_auroc"]``).
        confidence: the interval's level.
        n_resamples: bootstrap resamples; the metric runs ``n_resamples * n_seeds`` times.
        seed: seed of the resampling.
        method: ``"percentile"`` (default: robust for any metric), ``"basic"`` or ``"BCa"``
            (better coverage for skewed metrics; runs the metric ``n_studies`` more times).
        id_column: column aligning the seeds' tables (see module docstring); ``None`` trusts the order.

    Returns:
        The :class:`Interval`.

    Raises:
        InputError: empty or ragged tables, seeds over different studies, fewer than 2 studies,
            or a bad option.
    """
    _check(confidence, n_resamples, method)
    tables, n = _align(_as_tables(records, "records"), id_column, "records")
    low, high = _interval(lambda index: _pooled(tables, metric, index), n, confidence=confidence,
                          n_resamples=n_resamples, method=method, rng=np.random.default_rng(seed))
    return Interval(value=_pooled(tables, metric, np.arange(n)), low=low, high=high, confidence=confidence,
                    n_studies=n, n_seeds=len(tables), n_resamples=n_resamples, method=method)


def paired_test(
    variant: Table | Sequence[Table],
    baseline: Table | Sequence[Table],
    metric: Metric,
    *,
    n_permutations: int = 2000,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    id_column: str | None = "study_id",
) -> PairedComparison:
    """Paired permutation test and bootstrap interval of ``metric(variant) - metric(baseline)``.

    Under "no difference", a study's outputs from the variant and from the baseline are
    exchangeable; each permutation swaps them for a random subset of studies (in every seed at
    once) and recomputes the pooled difference. The p-value is two-sided.

    Args:
        variant, baseline: per-study tables (one per seed; the same number of seeds, paired in
            order) over the same test studies.
        metric: as in :func:`bootstrap_ci`.
        n_permutations: random permutations; with ``2**n_studies`` or fewer the test is exact.
        confidence, n_resamples: the difference's bootstrap interval (percentile method).
        seed: seed of the permutations and the resampling.
        id_column: as in :func:`bootstrap_ci`; both sides are aligned to the variant's first table.

    Returns:
        The :class:`PairedComparison`.

    Raises:
        InputError: different numbers of seeds, tables over different studies, or the errors of
            :func:`bootstrap_ci`.
    """
    from scipy.stats import permutation_test

    _check(confidence, n_resamples, "percentile")
    if n_permutations < 1:
        raise InputError(f"n_permutations must be >= 1, got {n_permutations}", field="n_permutations")
    ours, n = _align(_as_tables(variant, "variant"), id_column, "variant")
    reference = ours[0].get(id_column) if id_column is not None else None
    theirs, n_theirs = _align(_as_tables(baseline, "baseline"), id_column, "baseline", reference)
    if len(ours) != len(theirs):
        raise InputError(f"{len(ours)} variant seeds against {len(theirs)} baseline seeds; pair them one to one",
                         field="baseline")
    if n_theirs != n:
        raise InputError(f"{n_theirs} baseline studies against {n} variant studies", field="baseline")
    if set(ours[0]) != set(theirs[0]):
        raise InputError(f"different columns: {sorted(ours[0])} against {sorted(theirs[0])}", field="baseline")
    # Rows 0..n-1 of a stacked table are the variant's studies, rows n..2n-1 the baseline's; a
    # permutation hands the statistic, for each study, which of the two rows plays "variant".
    stacked = [{name: np.concatenate([a[name], b[name]]) for name in a} for a, b in zip(ours, theirs)]

    def difference(rows_a: np.ndarray, rows_b: np.ndarray) -> float:
        return _pooled(stacked, metric, rows_a) - _pooled(stacked, metric, rows_b)

    rng = np.random.default_rng(seed)
    observed = difference(np.arange(n), np.arange(n) + n)
    test = permutation_test((np.arange(n), np.arange(n) + n), difference, permutation_type="samples",
                            vectorized=False, n_resamples=n_permutations, rng=rng)
    low, high = _interval(lambda index: difference(index, index + n), n, confidence=confidence,
                          n_resamples=n_resamples, method="percentile", rng=rng)
    return PairedComparison(
        difference=observed, low=low, high=high, p_value=float(min(1.0, test.pvalue)), confidence=confidence,
        n_studies=n, n_seeds=len(ours), n_permutations=int(min(n_permutations, 2 ** n)),
        n_resamples=n_resamples,
    )
