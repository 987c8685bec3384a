"""FAISS index over report embeddings, with the report ids its rows stand for.

Vectors are L2-normalised on the way in (indexed vectors and queries alike), so the inner product
FAISS ranks by is cosine similarity. Three index types:

* ``flat``: ``IndexFlatIP``, exact search.
* ``ivf``: ``IndexIVFFlat`` (spherical k-means coarse quantiser). ``nlist`` defaults to
  ``round(4 * sqrt(N))``, lowered to ``N // 39`` when FAISS would have fewer than 39 training points
  per list. ``nprobe`` defaults to the smallest power of two whose recall@3 against exact search
  reaches ``target_recall`` (0.95) on a leave-one-out sample of the indexed vectors.
* ``hnsw``: ``IndexHNSWFlat`` with ``M = 32`` links per node and ``efConstruction = 40`` (FAISS's
  default). ``efSearch`` defaults to the smallest power of two from 16 to 4096 reaching
  ``target_recall`` the same way (and is raised to ``k`` when ``k`` is larger). HNSW inserts
  vectors from several threads, so two builds can link the graph differently; flat and IVF builds
  are identical.

The recall@3 reached is recorded in ``meta.json`` as ``recall_at_3_estimate``.

Flat and IVF indexes run on a GPU when FAISS sees one; every index is saved in CPU form.

An index directory holds ``index.faiss`` (``faiss.write_index``), ``ids.txt`` (one report id per
line, line ``i`` for row ``i``) and ``meta.json`` (type, parameters, dimension, count, embedding
name, build information). It is written to a temporary directory and renamed into place.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from functools import lru_cache
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import yaml

from kg.atomic import has_format_marker, replace_directory
from kg.errors import InputError
from kg.files import read_json

FORMAT = "motor-kg report index"
FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.txt"
META_FILE = "meta.json"
INDEX_TYPES = ("flat", "ivf", "hnsw")
CALIBRATION_K = 3
"""Neighbours per query in recall estimates: MOTOR retrieves the top-3 reports per image."""
CALIBRATION_QUERIES = 1000
EF_SEARCH_MAX = 4096
"""Largest HNSW ``efSearch`` the calibration tries."""
IVF_MIN_POINTS_PER_LIST = 39
"""FAISS warns that k-means is unreliable below 39 training points per centroid."""
IVF_MAX_POINTS_PER_LIST = 64
"""k-means trains on at most this many points per list: the centroids barely move beyond it while
training time grows linearly (FAISS's own cap is 256)."""
FAISS_DEFAULT_BLAS_THRESHOLD = 128_000
BLAS_THRESHOLD_PER_THREAD = 800


def _tune_blas_threshold() -> None:
    """Let exact search use BLAS for small query batches on machines with few threads.

    FAISS switches from its sequential scan to a BLAS matrix product when ``nq * d`` reaches
    ``distance_compute_blas_threshold``; the default of 128,000 was tuned for many OpenMP threads and
    keeps a batch of 32 queries of dimension 256 on the scan, about 4x slower than BLAS on 2 cores.
    FAISS's own analysis (pull request 5109) puts the crossover near 800 per thread. A value the
    user has set is left alone.
    """
    if faiss.cvar.distance_compute_blas_threshold == FAISS_DEFAULT_BLAS_THRESHOLD:
        faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD_PER_THREAD * faiss.omp_get_max_threads()


_tune_blas_threshold()


@dataclass(frozen=True)
class IndexConfig:
    """How to build an index.

    Attributes:
        index_type: ``"flat"``, ``"ivf"`` or ``"hnsw"``.
        nlist: IVF lists; ``None`` picks the default in the module docstring.
        nprobe: IVF lists visited per query; ``None`` calibrates it to ``target_recall``.
        hnsw_m: HNSW links per node.
        ef_construction: HNSW candidate-list size while building.
        ef_search: HNSW candidate-list size while searching; ``None`` calibrates it to
            ``target_recall``.
        target_recall: recall@3 the ``nprobe`` / ``ef_search`` calibration aims for, in ``(0, 1]``.
    """

    index_type: str = "flat"
    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int | None = None
    target_recall: float = 0.95

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise InputError(f"unknown index type {self.index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
        for name in ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InputError(f"{name} must be a positive integer; got {value!r}", field=name)
        if not 0 < self.target_recall <= 1:
            raise InputError(f"target_recall must be in (0, 1]; got {self.target_recall}", field="target_recall")

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, file: str | os.PathLike | None = None) -> IndexConfig:
        """Build from a mapping with the attribute names as keys; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise InputError(f"unknown option; expected one of {', '.join(sorted(known))}", file=file, field=key)
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> IndexConfig:
        """Read a YAML mapping of attribute names to values."""
        try:
            values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise InputError(f"not valid YAML ({err})", file=path) from err
        if not isinstance(values, dict):
            raise InputError("expected a mapping of option names to values", file=path)
        return cls.from_dict(values, file=path)


def default_nlist(count: int) -> int:
    """Default number of IVF lists for ``count`` vectors (see the module docstring)."""
    return max(1, min(round(4 * math.sqrt(count)), count // IVF_MIN_POINTS_PER_LIST))


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 copy of ``(n, d)`` vectors with each non-zero row scaled to unit L2 norm."""
    vectors = np.array(vectors, dtype=np.float32, order="C")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def as_numpy(vectors: Any) -> np.ndarray:
    """A NumPy view of an array or tensor (CPU or GPU, with or without gradient)."""
    if hasattr(vectors, "detach"):
        vectors = vectors.detach().cpu().numpy()
    return np.asarray(vectors)


class ReportIndex:
    """A FAISS index whose row ``i`` is the report ``ids[i]``.

    Build one with :meth:`build` or read one with :meth:`load`; :meth:`search` returns rows,
    :attr:`ids` maps them to report ids.
    """

    def __init__(self, index: faiss.Index, ids: list[str], meta: dict[str, Any]) -> None:
        self.index = index
        self.ids = ids
        self.meta = meta

    @property
    def dim(self) -> int:
        """Dimension of the indexed vectors."""
        return int(self.meta["dim"])

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: Sequence[str],
        config: IndexConfig | None = None,
        *,
        embedding: str,
        source: str | os.PathLike | None = None,
        use_gpu: bool | None = None,
    ) -> ReportIndex:
        """Index ``vectors`` under ``ids``.

        Args:
            vectors: float ``(N, d)``; rows are L2-normalised here (all-zero rows stay zero).
            ids: ``N`` distinct report ids, none empty or containing a line break.
            config: index type and parameters; ``IndexConfig()`` (flat) when ``None``.
            embedding: name of the embedding the vectors come from, recorded in ``meta.json``.
            source: file the vectors were read from, named in errors.
            use_gpu: build and search on GPU 0; ``None`` does so when FAISS sees a GPU.

        Raises:
            InputError: empty input, wrong shape or dtype, a non-finite row, an id count that does
                not match the rows, a duplicate or malformed id.
        """
        config = config or IndexConfig()
        vectors = as_numpy(vectors)
        ids = list(ids)
        check_vectors(vectors, ids, source=source)
        vectors = normalize_rows(vectors)
        count, dim = vectors.shape
        params: dict[str, Any] = {}
        if config.index_type == "flat":
            index = faiss.IndexFlatIP(dim)
        elif config.index_type == "ivf":
            nlist = min(config.nlist or default_nlist(count), count)
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.max_points_per_centroid = IVF_MAX_POINTS_PER_LIST
            params["nlist"] = nlist
        else:
            index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = config.ef_construction
            params.update(hnsw_m=config.hnsw_m, ef_construction=config.ef_construction)
        index = _to_device(index, use_gpu)
        if not index.is_trained:
            index.train(vectors)
        index.add(vectors)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "type": config.index_type,
            "params": params,
            "metric": "inner_product",
            "normalized": True,
            "dim": dim,
            "count": count,
            "embedding": embedding,
            "faiss_version": faiss.__version__,
        }
        built = cls(index, ids, meta)
        sample, truth = _leave_one_out_truth(vectors)
        if config.index_type == "ivf":
            ladder = [2**i for i in range(nlist.bit_length()) if 2**i < nlist] + [nlist]
            params["nprobe"] = config.nprobe or built._calibrate("nprobe", ladder, vectors[sample], truth, config)
        elif config.index_type == "hnsw":
            ladder = [2**i for i in range(4, EF_SEARCH_MAX.bit_length())]
            params["ef_search"] = config.ef_search or built._calibrate(
                "ef_search", ladder, vectors[sample], truth, config
            )
        meta["recall_at_3_estimate"] = built._recall(vectors[sample], truth)
        return built

    def search(self, vectors: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest indexed reports by cosine similarity.

        Args:
            vectors: float ``(n, d)`` array or tensor of queries; normalised here.
            k: hits per query, ``1 <= k <= len(self)``.

        Returns:
            ``(scores, rows)``: float32 ``(n, k)`` cosine similarities, best first, and int64
            ``(n, k)`` rows (``self.ids[row]`` is the report id).

        Raises:
            InputError: empty index, ``k`` out of range, wrong shape, dimension or non-finite query.
        """
        queries = as_numpy(vectors)
        if len(self) == 0:
            raise InputError("the index is empty")
        if queries.ndim != 2:
            raise InputError(f"queries must be 2-D (n, {self.dim}); got shape {queries.shape}", field="vectors")
        if queries.shape[1] != self.dim:
            raise InputError(
                f"queries have dimension {queries.shape[1]} but the index holds {self.dim}-dimensional "
                f"{self.meta['embedding']!r} vectors",
                field="vectors",
            )
        if not np.isfinite(queries).all():
            raise InputError("queries contain NaN or infinite values", field="vectors")
        if not 1 <= k <= len(self):
            raise InputError(f"k must be between 1 and the index size ({len(self)}); got {k}", field="k")
        queries = normalize_rows(queries)
        self._apply_search_params(k)
        scores, rows = self.index.search(queries, k)
        missing = (rows < 0).any(axis=1)
        if missing.any():
            # IVF returns fewer than k hits when the probed lists hold fewer than k vectors, HNSW
            # when its candidate list reaches fewer than k nodes; the exhaustive setting fills k.
            self._apply_search_params(k, exhaustive=True)
            scores[missing], rows[missing] = self.index.search(queries[missing], k)
        return scores, rows

    def _recall(self, queries: np.ndarray, truth: np.ndarray) -> float:
        """Recall@3 of searching indexed ``queries`` against ``truth`` from :func:`_leave_one_out_truth`."""
        if len(truth) == 0:
            return 1.0
        _, found = self.search(queries, CALIBRATION_K + 1)
        hits = 0
        for own_and_truth, approx in zip(truth, found):
            own, exact = own_and_truth[0], own_and_truth[1:]
            approx = [row for row in approx if row != own][:CALIBRATION_K]
            hits += len(set(exact) & set(approx))
        return hits / truth[:, 1:].size

    def _calibrate(
        self, name: str, ladder: list[int], queries: np.ndarray, truth: np.ndarray, config: IndexConfig
    ) -> int:
        """The first value of ``ladder`` for search parameter ``name`` reaching the target recall
        (the last value when none does; ``meta.json`` records the recall reached)."""
        for value in ladder:
            self.meta["params"][name] = value
            if self._recall(queries, truth) >= config.target_recall:
                return value
        return ladder[-1]

    def _apply_search_params(self, k: int, exhaustive: bool = False) -> None:
        params = self.meta["params"]
        if self.meta["type"] == "ivf":
            self.index.nprobe = params["nlist"] if exhaustive else params["nprobe"]
        elif self.meta["type"] == "hnsw":
            self.index.hnsw.efSearch = len(self) if exhaustive else max(params["ef_search"], k)

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``index.faiss``, ``ids.txt`` and ``meta.json`` into an existing directory.

        Use :func:`atomic_directory` to make the directory appear whole or not at all.
        """
        directory = Path(directory)
        index = self.index
        if hasattr(faiss, "GpuIndex") and isinstance(index, faiss.GpuIndex):
            index = faiss.index_gpu_to_cpu(index)
        faiss.write_index(index, str(directory / INDEX_FILE))
        (directory / IDS_FILE).write_text("".join(f"{i}\n" for i in self.ids), encoding="utf-8")
        (directory / META_FILE).write_text(json.dumps(self.meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | os.PathLike, *, use_gpu: bool | None = None) -> ReportIndex:
        """Read an index directory written by :meth:`save`.

        Raises:
            InputError: a file is missing or malformed, or the files disagree on the count or
                dimension.
        """
        directory = Path(directory)
        meta = read_meta(directory)
        ids_path = directory / IDS_FILE
        try:
            ids = read_id_lines(ids_path)
        except FileNotFoundError as err:
            raise InputError("report id list is missing", file=ids_path) from err
        if len(ids) != meta["count"]:
            raise InputError(f"{len(ids)} ids but meta.json records {meta['count']} vectors", file=ids_path)
        index_path = directory / INDEX_FILE
        if not index_path.is_file():
            raise InputError("FAISS index file is missing", file=index_path)
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as err:
            raise InputError(f"not a readable FAISS index ({err})", file=index_path) from err
        if index.ntotal != meta["count"] or index.d != meta["dim"]:
            raise InputError(
                f"index holds {index.ntotal} vectors of dimension {index.d} but meta.json records "
                f"{meta['count']} of dimension {meta['dim']}",
                file=index_path,
            )
        return cls(_to_device(index, use_gpu), ids, meta)


def _leave_one_out_truth(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sampled query rows and, per row, ``[row, exact top-3 other rows]`` (shape ``(n, 4)``).

    Up to 1,000 indexed vectors (fixed seed) serve as queries; removing each query's own row keeps
    the estimate honest for queries that are not indexed. Empty when there are too few vectors.
    """
    count = len(vectors)
    if count <= CALIBRATION_K:
        return np.zeros(0, np.int64), np.zeros((0, CALIBRATION_K + 1), np.int64)
    sample = np.random.default_rng(0).choice(count, size=min(CALIBRATION_QUERIES, count), replace=False)
    _, exact = faiss.knn(vectors[sample], vectors, CALIBRATION_K + 1, metric=faiss.METRIC_INNER_PRODUCT)
    truth = np.empty((len(sample), CALIBRATION_K + 1), np.int64)
    for i, (own, rows) in enumerate(zip(sample, exact)):
        truth[i] = [own, *[row for row in rows if row != own][:CALIBRATION_K]]
    return sample, truth


def read_id_lines(path: Path) -> list[str]:
    """Lines of an id file split on ``"\\n"`` only (``str.splitlines`` also splits on rarer
    Unicode separators an id may contain); a final line break is optional."""
    text = path.read_text(encoding="utf-8")
    return text.removesuffix("\n").split("\n") if text else []


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``meta.json`` of an index directory, checked for format and required keys."""
    path = Path(directory) / META_FILE
    meta = read_json(path, missing="index metadata is missing; build the index with `kg index STORE`")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"not a {FORMAT} metadata file", file=path)
    if meta.get("version") != FORMAT_VERSION:
        raise InputError(f"index format version {meta.get('version')} is not {FORMAT_VERSION}; rebuild it", file=path)
    for key in ("type", "params", "dim", "count", "embedding"):
        if key not in meta:
            raise InputError("missing key", file=path, field=key)
    if meta["type"] not in INDEX_TYPES:
        raise InputError(f"unknown index type {meta['type']!r}", file=path, field="type")
    return meta


def check_vectors(vectors: np.ndarray, ids: Sequence[str], *, source: str | os.PathLike | None = None) -> None:
    """Validate embeddings and their ids before indexing; errors name ``source`` and the row.

    Raises:
        InputError: see :meth:`ReportIndex.build`.
    """
    if vectors.ndim != 2:
        raise InputError(f"embeddings must be a 2-D (N, d) array; got shape {vectors.shape}", file=source)
    if not np.issubdtype(vectors.dtype, np.floating):
        raise InputError(f"embeddings must be floating point; got dtype {vectors.dtype}", file=source)
    if vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise InputError(f"nothing to index: embeddings have shape {vectors.shape}", file=source)
    if len(ids) != vectors.shape[0]:
        raise InputError(f"{vectors.shape[0]} embedding rows but {len(ids)} report ids", file=source)
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise InputError("embedding contains NaN or infinite values", file=source, record=f"{row} ({ids[row]})")
    seen: set[str] = set()
    for row, report_id in enumerate(ids):
        # Padding (which includes "\r") and "\n" would not survive a round trip through ids.txt.
        if not isinstance(report_id, str) or not report_id or report_id != report_id.strip() or "\n" in report_id:
            message = f"report id {report_id!r} is empty, padded or contains a line break"
            raise InputError(message, file=source, record=row)
        if report_id in seen:
            raise InputError(f"report id {report_id!r} appears twice", file=source, record=row)
        seen.add(report_id)


def atomic_directory(path: str | os.PathLike) -> AbstractContextManager[Path]:
    """Yield a fresh temporary directory beside ``path`` that replaces ``path`` on normal exit.

    On an exception the temporary directory is removed and ``path`` is untouched. An existing
    ``path`` is replaced only when it is an index directory (has a ``meta.json`` of this format) or
    empty, so a mistyped ``--out`` cannot delete unrelated files.
    """
    return replace_directory(path, is_replaceable=_replaceable, what="a motor-kg index directory")


def _replaceable(path: Path) -> bool:
    return has_format_marker(path, META_FILE, FORMAT)


def _to_device(index: faiss.Index, use_gpu: bool | None) -> faiss.Index:
    """Move a flat or IVF index to GPU 0 when asked (or, for ``None``, when FAISS sees a GPU)."""
    if use_gpu is None:
        use_gpu = faiss.get_num_gpus() > 0
    if not use_gpu or isinstance(index, faiss.IndexHNSW):
        return index
    if faiss.get_num_gpus() == 0:
        raise InputError("use_gpu=True but FAISS sees no GPU")
    return faiss.index_cpu_to_gpu(gpu_resources(), 0, index)


@lru_cache(maxsize=1)
def gpu_resources() -> Any:
    """One FAISS GPU resource object (scratch memory, streams) per process, made on first use."""
    return faiss.StandardGpuResources()
