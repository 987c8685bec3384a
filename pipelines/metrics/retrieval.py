"""Recall@K and ranks for report retrieval (image → text) and image retrieval (text → image).

Ranks are pessimistic about ties: a non-matching item with the same score as the best matching
one counts as ranked above it. A collapsed model whose similarities are all equal therefore scores
R@K = 0, not a lucky 100%. Recalls are fractions in [0, 1] (multiply by 100 for the percentages
papers print).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from kg.errors import InputError
from pipelines.metrics._arrays import as_float_array

Positives = np.ndarray | Sequence[Iterable[int]] | None

# Rows scored at once; bounds the (rows, items) boolean temporaries to a few hundred MB.
_CHUNK_ROWS = 1024


def positive_mask(positives: Positives, n_queries: int, n_items: int) -> np.ndarray:
    """Boolean ``(n_queries, n_items)`` matrix of the items that count as a hit for each query.

    Args:
        positives: ``None`` for the diagonal (query ``i`` matches item ``i``; the similarity
            must be square), a boolean matrix ``(n_queries, n_items)``, or one iterable of item
            indices per query (use sets when several reports are identical and any of them is a
            correct answer).
        n_queries: number of rows of the similarity matrix.
        n_items: number of columns.

    Raises:
        InputError: a shape mismatch, an index out of range, or a query with no positive item.
    """
    if positives is None:
        if n_queries != n_items:
            raise InputError(f"similarity is {n_queries}x{n_items}: a non-square matrix needs explicit positives",
                             field="positives")
        return np.eye(n_queries, dtype=bool)
    if isinstance(positives, np.ndarray) or hasattr(positives, "detach"):
        mask = as_float_array(positives, field="positives", ndim=2) != 0
        if mask.shape != (n_queries, n_items):
            raise InputError(f"positives has shape {mask.shape}, similarity ({n_queries}, {n_items})",
                             field="positives")
    else:
        if len(positives) != n_queries:
            raise InputError(f"{len(positives)} positive sets for {n_queries} queries", field="positives")
        mask = np.zeros((n_queries, n_items), dtype=bool)
        for row, items in enumerate(positives):
            for item in items:
                if not 0 <= int(item) < n_items:
                    raise InputError(f"item index {item} outside 0..{n_items - 1}", record=row, field="positives")
                mask[row, int(item)] = True
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise InputError("query has no positive item", record=int(empty[0]), field="positives")
    return mask


def ranks_of_positives(similarity: Any, positives: Positives = None) -> np.ndarray:
    """1-based rank of the best-scored positive item of each query.

    Args:
        similarity: ``(n_queries, n_items)`` scores, higher is more similar (array or tensor).
        positives: see :func:`positive_mask`.

    Returns:
        ``(n_queries,)`` int64 ranks; rank 1 is a hit at R@1. Ties with non-positives count
        against the positive.

    Raises:
        InputError: a similarity that is not 2-D or holds NaN, or malformed positives.
    """
    sim = as_float_array(similarity, field="similarity", ndim=2)
    if np.isnan(sim).any():
        row = int(np.flatnonzero(np.isnan(sim).any(axis=1))[0])
        raise InputError("similarity holds NaN", record=row, field="similarity")
    mask = positive_mask(positives, *sim.shape)
    ranks = np.empty(sim.shape[0], dtype=np.int64)
    for start in range(0, sim.shape[0], _CHUNK_ROWS):
        block, block_mask = sim[start:start + _CHUNK_ROWS], mask[start:start + _CHUNK_ROWS]
        best = np.where(block_mask, block, -np.inf).max(axis=1, keepdims=True)
        ranks[start:start + len(block)] = 1 + ((block >= best) & ~block_mask).sum(axis=1)
    return ranks


def recall_at_k(similarity: Any, positives: Positives = None, ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Recall@K, median and mean rank of a retrieval direction.

    Args:
        similarity: ``(n_queries, n_items)`` scores; rows are queries (images for report
            retrieval, reports for image retrieval).
        positives: see :func:`positive_mask`; ``None`` means query ``i`` ↔ item ``i``.
        ks: cut-offs; a K larger than ``n_items`` gives recall 1.

    Returns:
        ``{"R@1": ..., "R@5": ..., "R@10": ..., "MedR": ..., "MeanR": ..., "MRR": ..., "n_queries": n}``;
        recalls are fractions of queries with a positive in the top K; MRR is the mean reciprocal
        rank of the best-ranked positive (MedViLL reports it), in (0, 1].
    """
    if any(int(k) < 1 for k in ks):
        raise InputError(f"cut-offs must be >= 1, got {list(ks)}", field="ks")
    ranks = ranks_of_positives(similarity, positives)
    result: dict[str, Any] = {f"R@{int(k)}": float(np.mean(ranks <= int(k))) for k in ks}
    result["MedR"] = float(np.median(ranks))
    result["MeanR"] = float(np.mean(ranks))
    result["MRR"] = float(np.mean(1.0 / ranks))
    result["n_queries"] = int(ranks.size)
    return result


def chance_recall(n_items: int, k: int, n_positives: int = 1) -> float:
    """Expected R@K of a uniformly random ranking: P(at least one of the positives is in the top K).

    Args:
        n_items: items ranked per query.
        k: cut-off.
        n_positives: items that count as a hit.

    Returns:
        ``1 - C(n - p, k) / C(n, k)``; ``k / n`` for a single positive.
    """
    if not 1 <= n_positives <= n_items or k < 1:
        raise InputError(f"need 1 <= n_positives <= n_items and k >= 1, got n={n_items}, p={n_positives}, k={k}")
    k = min(k, n_items)
    return 1.0 - math.comb(n_items - n_positives, k) / math.comb(n_items, k)


def chance_mrr(n_items: int, n_positives: int = 1) -> float:
    """Expected reciprocal rank of the best-ranked positive under a uniformly random ranking.

    The best positive sits at rank r with probability ``C(n - r, p - 1) / C(n, p)``, so the value
    is ``sum_r C(n - r, p - 1) / (r · C(n, p))``; ``H_n / n`` for a single positive.
    """
    if not 1 <= n_positives <= n_items:
        raise InputError(f"need 1 <= n_positives <= n_items, got n={n_items}, p={n_positives}")
    total = math.comb(n_items, n_positives)
    return sum(math.comb(n_items - r, n_positives - 1) / r for r in range(1, n_items - n_positives + 2)) / total


def retrieval_metrics(sim_i2t: Any, positives: Positives = None, ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """Both retrieval directions from one image–text similarity matrix, as BLIP reports them.

    Args:
        sim_i2t: ``(n_images, n_texts)`` similarity; its transpose ranks images for each text.
        positives: matches as in :func:`positive_mask`, seen from the images (rows).
        ks: cut-offs.

    Returns:
        ``i2t_R@K`` (report retrieval), ``t2i_R@K`` (image retrieval), ``i2t_MedR``, ``t2i_MedR``,
        ``i2t_MRR``, ``t2i_MRR`` (mean reciprocal rank), ``mean_R`` (mean of all recalls, BLIP's ``r_mean``), ``n_images``, ``n_texts`` and
        ``chance``: the expected value of each recall and MRR under a random ranking, averaged over
        queries (accounts for several positives per query).
    """
    sim = as_float_array(sim_i2t, field="similarity", ndim=2)
    mask = positive_mask(positives, *sim.shape)
    result: dict[str, Any] = {}
    chance: dict[str, float] = {}
    for direction, matrix, hits in (("i2t", sim, mask), ("t2i", sim.T, mask.T)):
        scores = recall_at_k(matrix, hits, ks)
        n_items = matrix.shape[1]
        counts, queries = np.unique(hits.sum(axis=1), return_counts=True)
        for k in ks:
            result[f"{direction}_R@{int(k)}"] = scores[f"R@{int(k)}"]
            expected = sum(q * chance_recall(n_items, int(k), int(p)) for p, q in zip(counts, queries))
            chance[f"{direction}_R@{int(k)}"] = float(expected / matrix.shape[0])
        result[f"{direction}_MedR"] = scores["MedR"]
        result[f"{direction}_MRR"] = scores["MRR"]
        expected = sum(q * chance_mrr(n_items, int(p)) for p, q in zip(counts, queries))
        chance[f"{direction}_MRR"] = float(expected / matrix.shape[0])
    recalls = [result[f"{d}_R@{int(k)}"] for d in ("i2t", "t2i") for k in ks]
    result["mean_R"] = float(np.mean(recalls))
    result["n_images"], result["n_texts"] = int(sim.shape[0]), int(sim.shape[1])
    result["chance"] = chance
    return result
