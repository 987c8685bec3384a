"""Specific-knowledge (SK) retrieval: exact top-k search and the report knowledge base.

MOTOR retrieves, for every image, the reports whose embeddings are nearest to it and feeds the
RadGraph triplets of those reports to the SK encoder (Eq. 3). Two uses share this module:

* in training, :func:`knn` searches a feature queue ``(n_Q, d)`` with a batch of queries ``(B, d)``;
* offline, :class:`KnowledgeBase` searches a FAISS index over a store's reports and turns the hits
  into triplets and an SK sentence.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import faiss
import numpy as np

from kg import text_embedding as text_embedding_module
from kg.errors import InputError
from kg.files import sha256_file
from kg.index import IDS_FILE, IndexConfig, ReportIndex, atomic_directory, gpu_resources, read_id_lines
from kg.normalize import Triplet
from kg.sk_order import DEFAULT_SK_ORDER, SKPhrase, check_sk_order, ordered_phrases, sort_key
from kg.text_embedding import TextEmbedding

if TYPE_CHECKING:
    import duckdb
    import torch

Array = TypeVar("Array", np.ndarray, "torch.Tensor")


def knn(queries: Array, keys: Array, k: int) -> tuple[Array, Array]:
    """Exact inner-product top-k of ``queries`` against ``keys``, best first.

    Args:
        queries: ``(n, d)`` float array or tensor (L2-normalise both sides for cosine similarity).
        keys: ``(m, d)`` float array or tensor of the same kind (and, for tensors, the same device).
        k: neighbours per query, ``1 <= k <= m``. A ``k`` larger than ``m`` raises rather than
            clamps: FAISS would pad with index ``-1`` and a silent pad would poison a gather.

    Returns:
        ``(scores, indices)``: float32 ``(n, k)`` inner products and int64 ``(n, k)`` row indices
        into ``keys``, each row sorted by decreasing score. NumPy in, NumPy out; tensors in,
        tensors out on the input's device. CPU inputs use ``faiss.knn``; CUDA tensors use FAISS's
        GPU brute force when FAISS was built with GPU support, else ``torch.topk`` of the product.
        Scores carry no gradient; gather rows of ``keys`` with ``indices`` when a differentiable
        similarity is needed.

    Raises:
        InputError: ``keys`` is empty, the dimensions differ, the inputs are not 2-D, or ``k`` is
            out of range.
    """
    _check_knn_shapes(tuple(queries.shape), tuple(keys.shape), k)
    if isinstance(queries, np.ndarray) and isinstance(keys, np.ndarray):
        return _faiss_knn(np.ascontiguousarray(queries, dtype=np.float32), np.ascontiguousarray(keys, dtype=np.float32), k)
    return _knn_torch(queries, keys, k)


def _faiss_knn(queries: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``faiss.knn`` (exact inner product) that takes FAISS's BLAS path for any number of queries.

    FAISS scans batches of fewer than ``distance_compute_blas_threshold`` (20) queries one by one
    without BLAS; for a training batch (8 queries) against a 65,536-entry queue that is about 3x
    slower than its BLAS path on one thread (``benchmarks/RESULTS.md``, "Pretraining step"). The
    threshold is a process-wide setting, so it is restored afterwards.
    """
    threshold = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 1
    try:
        return faiss.knn(queries, keys, k, metric=faiss.METRIC_INNER_PRODUCT)
    finally:
        faiss.cvar.distance_compute_blas_threshold = threshold


def _check_knn_shapes(query_shape: tuple[int, ...], key_shape: tuple[int, ...], k: int) -> None:
    if len(query_shape) != 2 or len(key_shape) != 2:
        raise InputError(
            f"queries and keys must be 2-D (n, d) and (m, d); got {query_shape} and {key_shape}"
        )
    if key_shape[0] == 0:
        raise InputError("cannot search an empty set of keys (shape (0, d))", field="keys")
    if query_shape[1] != key_shape[1]:
        raise InputError(
            f"query dimension {query_shape[1]} does not match key dimension {key_shape[1]}",
            field="queries",
        )
    if not 1 <= k <= key_shape[0]:
        raise InputError(f"k must be between 1 and the number of keys ({key_shape[0]}); got {k}", field="k")


def _knn_torch(queries: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    if not (isinstance(queries, torch.Tensor) and isinstance(keys, torch.Tensor)):
        raise InputError(
            "queries and keys must both be NumPy arrays or both be torch tensors; "
            f"got {type(queries).__name__} and {type(keys).__name__}"
        )
    if queries.device != keys.device:
        raise InputError(f"queries are on {queries.device} but keys are on {keys.device}")
    with torch.no_grad():
        queries = queries.detach().float().contiguous()
        keys = keys.detach().float().contiguous()
        if keys.is_cuda:
            if faiss.get_num_gpus() > 0:
                from faiss.contrib import torch_utils  # noqa: F401  (lets faiss.knn_gpu take tensors)

                return faiss.knn_gpu(
                    gpu_resources(),
                    queries,
                    keys,
                    k,
                    metric=faiss.METRIC_INNER_PRODUCT,
                    device=keys.device.index or 0,
                )
            # A CPU-only FAISS build cannot read device memory and a host round trip of the whole
            # queue every step would cost more than the search, so the GPU does it with matmul.
            scores, indices = torch.topk(queries @ keys.T, k, dim=1)
            return scores, indices
        scores, indices = _faiss_knn(queries.numpy(), keys.numpy(), k)
        return torch.from_numpy(scores), torch.from_numpy(indices)


SK_SEPARATOR = "; "


@dataclass
class LookupResult:
    """The hits of one query, best first, and the SK sentence made from them.

    Attributes:
        query: the query text (``None`` for a vector query).
        report_ids: ``k`` report ids.
        scores: ``k`` cosine similarities.
        texts: ``k`` report texts.
        triplets: ``k`` lists of the reports' triplets.
        sk_sentence: see :meth:`KnowledgeBase.sk_sentence`.
    """

    query: str | None
    report_ids: list[str]
    scores: list[float]
    texts: list[str]
    triplets: list[list[Triplet]]
    sk_sentence: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; triplets become ``{"head", "relation", "tail", ...}`` objects."""
        return {
            "query": self.query,
            "hits": [
                {
                    "rank": rank,
                    "report_id": report_id,
                    "score": score,
                    "text": text,
                    "triplets": [t._asdict() for t in triplets],
                }
                for rank, (report_id, score, text, triplets) in enumerate(
                    zip(self.report_ids, self.scores, self.texts, self.triplets), start=1
                )
            ],
            "sk_sentence": self.sk_sentence,
        }


TokenCounter = Callable[[str], int]


def token_counter(tokenizer: Any = None) -> TokenCounter:
    """A function giving the number of tokens of a string.

    Args:
        tokenizer: ``None`` for whitespace tokens; an object with ``encode`` (a ``transformers``
            tokenizer or a ``tokenizers.Tokenizer``), counted without special tokens; or any
            callable ``str -> int``.
    """
    if tokenizer is None:
        return lambda text: len(text.split())
    if hasattr(tokenizer, "encode"):
        return lambda text: len(tokenizer.encode(text, add_special_tokens=False))
    if callable(tokenizer):
        return lambda text: int(tokenizer(text))
    raise InputError(f"tokenizer must be None, a tokenizer with .encode or a callable; got {type(tokenizer).__name__}")


def compose_sk_sentence(
    phrase_counts: Mapping[str, int], max_tokens: int = 90, tokenizer: Any = None, order: str = DEFAULT_SK_ORDER
) -> str:
    """Join SK phrases into one sentence under a token budget (the SK encoder's input, Eq. 3).

    Phrases are ordered by the ``sk_order`` policy (:mod:`kg.sk_order`): ``report`` keeps the
    mapping's order (the order the report states them), ``specific_first`` puts the rarest in
    the corpus first, ``frequent_first`` the most frequent; ties keep the mapping's order. They
    are joined with ``"; "``; whole phrases are kept while the sentence fits ``max_tokens``, and
    the first phrase that does not fit ends it, so the sentence is always a prefix of that order
    (possibly empty).

    Args:
        phrase_counts: phrase → corpus frequency, in the report's order.
        max_tokens: token budget of the sentence.
        tokenizer: how tokens are counted, see :func:`token_counter`.
        order: one of :data:`kg.sk_order.SK_ORDERS`.
    """
    phrases = [SKPhrase(phrase, i, int(count)) for i, (phrase, count) in enumerate(phrase_counts.items())]
    return _pack([p.phrase for p in sorted(phrases, key=sort_key(order))], max_tokens, tokenizer)


def _pack(phrases: Sequence[str], max_tokens: int, tokenizer: Any) -> str:
    """The longest prefix of ``phrases`` joined with ``"; "`` that fits ``max_tokens``."""
    if max_tokens < 1:
        raise InputError(f"max_tokens must be positive; got {max_tokens}", field="max_tokens")
    count_tokens = token_counter(tokenizer)
    sentence = ""
    for phrase in phrases:
        candidate = f"{sentence}{SK_SEPARATOR}{phrase}" if sentence else phrase
        if count_tokens(candidate) > max_tokens:
            break
        sentence = candidate
    return sentence


def _sk_sentence(
    ordered_triplets: Iterable[list[tuple[Triplet, int]]], max_tokens: int, tokenizer: Any, order: str
) -> str:
    """SK sentence from per-report ``(triplet, store frequency)`` lists in report order
    (see ``KnowledgeBase.sk_sentence``)."""
    everything = [pair for report_triplets in ordered_triplets for pair in report_triplets]
    return _pack(ordered_phrases(everything, order), max_tokens, tokenizer)


def default_index_path(store_path: str | os.PathLike) -> Path:
    """Where the index of store ``X.duckdb`` lives unless told otherwise: ``X.duckdb.index/``."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.name + ".index")


class KnowledgeBase:
    """A report store opened read-only, with its FAISS index and text embedding when built.

    Open one with :meth:`open`; it holds a DuckDB connection, so use it as a context manager or
    call :meth:`close`.
    """

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        *,
        store_path: Path,
        index_path: Path,
        index: ReportIndex | None = None,
        text_embedding: TextEmbedding | None = None,
    ) -> None:
        self.connection = connection
        self.store_path = store_path
        self.index_path = index_path
        self._index = index
        self.text_embedding = text_embedding

    @classmethod
    def open(
        cls,
        store_path: str | os.PathLike,
        index_path: str | os.PathLike | None = None,
        *,
        use_gpu: bool | None = None,
    ) -> KnowledgeBase:
        """Open a store and, when present, its index.

        Args:
            store_path: a DuckDB store written by ``kg build``.
            index_path: index directory; ``None`` uses :func:`default_index_path` and tolerates
                its absence (searching then raises), an explicit path must exist.
            use_gpu: move a flat or IVF index to GPU; ``None`` does so when FAISS sees a GPU.

        Raises:
            InputError: the store is missing or not a store; the index is malformed or names
                reports the store does not hold.
        """
        from kg.store import open_store

        store_path = Path(store_path)
        explicit = index_path is not None
        index_path = Path(index_path) if explicit else default_index_path(store_path)
        connection = open_store(store_path, read_only=True)
        try:
            index = text_embedding = None
            if explicit or index_path.exists():
                index = ReportIndex.load(index_path, use_gpu=use_gpu)
                _check_ids_in_store(connection, index.ids, store_path, index_path / IDS_FILE)
                if (index_path / text_embedding_module.CONFIG_FILE).exists():
                    text_embedding = TextEmbedding.load(index_path)
                    if text_embedding.dim != index.dim:
                        raise InputError(
                            f"text embedding has dimension {text_embedding.dim} but the index {index.dim}; rebuild "
                            f"with `kg index {store_path}`",
                            file=index_path / text_embedding_module.CONFIG_FILE,
                        )
        except BaseException:
            connection.close()
            raise
        return cls(connection, store_path=store_path, index_path=index_path, index=index, text_embedding=text_embedding)

    def close(self) -> None:
        """Close the store connection."""
        self.connection.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def index(self) -> ReportIndex:
        """The report index; raises :class:`InputError` when none has been built."""
        if self._index is None:
            raise InputError(f"no index at {self.index_path}; build one with `kg index {self.store_path}`")
        return self._index

    def search(self, vectors: Any, k: int) -> tuple[list[list[str]], np.ndarray]:
        """Nearest reports by cosine similarity.

        Args:
            vectors: float ``(n, d)`` NumPy array or torch tensor, ``d`` the index dimension.
            k: hits per query, ``1 <= k <=`` number of indexed reports (a larger ``k`` raises).

        Returns:
            ``(ids, scores)``: ``n`` lists of ``k`` report ids and float32 ``(n, k)`` scores, best
            first.

        Raises:
            InputError: no index, empty index, ``k`` out of range, wrong shape or dimension.
        """
        scores, rows = self.index.search(vectors, k)
        ids = self.index.ids
        return [[ids[row] for row in query_rows] for query_rows in rows], scores

    def reports(self, report_ids: Sequence[str]) -> list[str]:
        """Texts of ``report_ids``, in order.

        Raises:
            InputError: an id is not in the store (the first one is named).
        """
        rows = dict(
            self.connection.execute(
                "SELECT report_id, text FROM reports WHERE report_id IN (SELECT unnest(?::VARCHAR[]))",
                [list(report_ids)],
            ).fetchall()
        )
        self._check_known(report_ids, rows)
        return [rows[report_id] for report_id in report_ids]

    def triplets(self, report_ids: Sequence[str]) -> list[list[Triplet]]:
        """Triplets of each report (table ``report_triplets``), most frequent in the corpus first.

        Returns:
            one list per id, in order; ties in corpus count are broken alphabetically.

        Raises:
            InputError: an id is not in the store.
        """
        by_report = self._triplets_with_counts(report_ids)
        return [[triplet for triplet, _ in by_report[report_id]] for report_id in report_ids]

    def sk_sentence(
        self, report_ids: Sequence[str], max_tokens: int = 90, tokenizer: Any = None, order: str = DEFAULT_SK_ORDER
    ) -> str:
        """The SK encoder's input (Eq. 3) for retrieved reports: their triplets as one sentence.

        Each triplet becomes a phrase (:meth:`Triplet.phrase`); phrases shared by several reports
        appear once, in the ``sk_order`` policy's order (:mod:`kg.sk_order`; ``report``: each
        report's triplets as it states them, the reports in the order given; the frequency of the
        other policies is the number of store reports stating the triplet, table ``triplets``),
        and are joined with ``"; "`` up to ``max_tokens`` (see :func:`compose_sk_sentence`).

        Args:
            report_ids: the retrieved reports, e.g. the top-k of :meth:`search`.
            max_tokens: token budget; 90 is MOTOR's text length.
            tokenizer: token counting, see :func:`token_counter` (whitespace tokens by default).
            order: one of :data:`kg.sk_order.SK_ORDERS`.

        Raises:
            InputError: an id is not in the store, ``max_tokens`` is not positive, or ``order`` is unknown.
        """
        check_sk_order(order)
        return _sk_sentence(self.triplets_in_report_order(report_ids).values(), max_tokens, tokenizer, order)

    def triplets_in_report_order(self, report_ids: Sequence[str]) -> dict[str, list[tuple[Triplet, int]]]:
        """Each report's triplets in the order the report states them, with their store frequency.

        Returns:
            ``{report_id: [(triplet, n_reports), ...]}`` in the order of ``report_ids``;
            ``n_reports`` counts the store reports stating the triplet (table ``triplets``).

        Raises:
            InputError: an id is not in the store.
        """
        # report_triplets is written report by report, each in order of first mention, so its
        # row ids are the report's own order.
        rows = self.connection.execute(
            """
            SELECT rt.report_id, rt.head, rt.relation, rt.tail, rt.head_label, rt.tail_label,
                   coalesce(t.n_reports, 0) AS n_reports
            FROM report_triplets rt
            LEFT JOIN triplets t USING (head, relation, tail, head_label, tail_label)
            WHERE rt.report_id IN (SELECT unnest(?::VARCHAR[]))
            ORDER BY rt.rowid
            """,
            [list(report_ids)],
        ).fetchall()
        by_report: dict[str, list[tuple[Triplet, int]]] = {}
        for report_id, *fields_, n_reports in rows:
            by_report.setdefault(report_id, []).append((Triplet(*fields_), int(n_reports)))
        self._check_known(report_ids, self._known(report_ids))
        return {report_id: by_report.get(report_id, []) for report_id in report_ids}

    def lookup_vectors(
        self, vectors: Any, k: int = 3, *, max_tokens: int = 90, tokenizer: Any = None, order: str = DEFAULT_SK_ORDER
    ) -> list[LookupResult]:
        """Search with embeddings (from a model or :attr:`text_embedding`) and gather the knowledge.

        Args:
            vectors: float ``(n, d)`` queries in the index's embedding space.
            k: hits per query.
            max_tokens, tokenizer, order: SK sentence budget and triplet order, see :meth:`sk_sentence`.

        Returns:
            ``n`` results, in query order.
        """
        check_sk_order(order)
        hit_ids, scores = self.search(vectors, k)
        wanted = sorted({report_id for ids in hit_ids for report_id in ids})
        texts = dict(zip(wanted, self.reports(wanted)))
        counted = self._triplets_with_counts(wanted)
        in_order = self.triplets_in_report_order(wanted)
        return [
            LookupResult(
                query=None,
                report_ids=ids,
                scores=[float(s) for s in query_scores],
                texts=[texts[i] for i in ids],
                triplets=[[triplet for triplet, _ in counted[i]] for i in ids],
                sk_sentence=_sk_sentence([in_order[i] for i in ids], max_tokens, tokenizer, order),
            )
            for ids, query_scores in zip(hit_ids, scores)
        ]

    def lookup_text(
        self, text: str | Sequence[str], k: int = 3, *, max_tokens: int = 90, tokenizer: Any = None,
        order: str = DEFAULT_SK_ORDER,
    ) -> list[LookupResult]:
        """Search with free text through the built-in TF-IDF + SVD embedding.

        Args:
            text: one query or a list of queries.
            k: hits per query.
            max_tokens, tokenizer, order: SK sentence budget and triplet order, see :meth:`sk_sentence`.

        Returns:
            one result per query, in order.

        Raises:
            InputError: the index was built from other embeddings, or a query has no word the
                store's reports use (it would match every report equally).
        """
        queries = [text] if isinstance(text, str) else list(text)
        if self.text_embedding is None:
            raise InputError(
                f"the index holds {self.index.meta['embedding']!r} vectors, not the built-in text "
                f"embedding; search it with lookup_vectors, or rebuild with `kg index {self.store_path}`",
                file=self.index_path,
            )
        vectors = self.text_embedding.encode(queries)
        empty = np.flatnonzero(~vectors.any(axis=1))
        if len(empty):
            first = int(empty[0])
            message = f"query {queries[first]!r} shares no word with the store's reports"
            raise InputError(message, record=first, field="text")
        results = self.lookup_vectors(vectors, k, max_tokens=max_tokens, tokenizer=tokenizer, order=order)
        for query, result in zip(queries, results):
            result.query = query
        return results

    def _triplets_with_counts(self, report_ids: Sequence[str]) -> dict[str, list[tuple[Triplet, int]]]:
        rows = self.connection.execute(
            """
            SELECT rt.report_id, rt.head, rt.relation, rt.tail, rt.head_label, rt.tail_label,
                   coalesce(t.count, 0) AS count
            FROM report_triplets rt
            LEFT JOIN triplets t USING (head, relation, tail, head_label, tail_label)
            WHERE rt.report_id IN (SELECT unnest(?::VARCHAR[]))
            ORDER BY rt.report_id, count DESC, rt.head, rt.relation, rt.tail, rt.head_label, rt.tail_label
            """,
            [list(report_ids)],
        ).fetchall()
        by_report: dict[str, list[tuple[Triplet, int]]] = {}
        for report_id, *fields_, count in rows:
            by_report.setdefault(report_id, []).append((Triplet(*fields_), int(count)))
        self._check_known(report_ids, self._known(report_ids))
        return {report_id: by_report.get(report_id, []) for report_id in report_ids}

    def _known(self, report_ids: Sequence[str]) -> set[str]:
        return {
            row[0]
            for row in self.connection.execute(
                "SELECT report_id FROM reports WHERE report_id IN (SELECT unnest(?::VARCHAR[]))", [list(report_ids)]
            ).fetchall()
        }

    def _check_known(self, report_ids: Sequence[str], known: Container[str]) -> None:
        for report_id in report_ids:
            if report_id not in known:
                raise InputError(f"report {report_id!r} is not in the store", file=self.store_path, field="report_id")


def build_index(
    store_path: str | os.PathLike,
    *,
    embeddings: str | os.PathLike | np.ndarray | None = None,
    ids: str | os.PathLike | Sequence[str] | None = None,
    index_type: str = "flat",
    out: str | os.PathLike | None = None,
    use_gpu: bool | None = None,
    **params: Any,
) -> Path:
    """Build the report index of a store and write it atomically.

    By default every report of the store is embedded with the built-in text embedding
    (:class:`~kg.text_embedding.TextEmbedding`, fitted on those reports and saved beside the
    index so :meth:`KnowledgeBase.lookup_text` works). With ``embeddings`` the given vectors are
    indexed instead, e.g. image or report embeddings from a trained model.

    Args:
        store_path: DuckDB store written by ``kg build``.
        embeddings: float ``(N, d)`` array, or a ``.npy`` file holding one.
        ids: the ``N`` report ids of the rows: a sequence, or a text file with one id per line.
            Required with ``embeddings``; every id must be in the store's ``reports`` table.
        index_type: ``"flat"``, ``"ivf"`` or ``"hnsw"``.
        out: index directory; default :func:`default_index_path`. An existing index there is
            replaced only once the new one is complete.
        use_gpu: build on GPU 0; ``None`` does so when FAISS sees a GPU.
        **params: further :class:`~kg.index.IndexConfig` fields (``nlist``, ``nprobe``,
            ``hnsw_m``, ``ef_construction``, ``ef_search``, ``target_recall``).

    Returns:
        The index directory.

    Raises:
        InputError: bad store, embeddings or ids (the first unknown id and its file are named),
            or an unknown parameter.
    """
    from kg.store import open_store, read_metadata

    config = IndexConfig.from_dict({"index_type": index_type, **params})
    store_path = Path(store_path)
    out = Path(out) if out is not None else default_index_path(store_path)
    connection = open_store(store_path, read_only=True)
    try:
        store_meta = read_metadata(connection)
        if embeddings is None:
            if ids is not None:
                raise InputError("report ids were given without embeddings", field="ids")
            rows = connection.execute("SELECT report_id, text FROM reports ORDER BY report_id").fetchall()
            if not rows:
                raise InputError("the store holds no reports to index", file=store_path)
            report_ids = [report_id for report_id, _ in rows]
            embedding = TextEmbedding.fit([text or "" for _, text in rows])
            vectors = embedding.encode([text or "" for _, text in rows])
            embedding_name, source = text_embedding_module.NAME, store_path
        else:
            if ids is None:
                raise InputError("embeddings need their report ids (one per row)", field="ids")
            vectors, source = _read_embeddings(embeddings)
            report_ids, ids_source = _read_ids(ids)
            _check_ids_in_store(connection, report_ids, store_path, ids_source)
            embedding, embedding_name = None, Path(source).stem if source else "user"
    finally:
        connection.close()
    index = ReportIndex.build(vectors, report_ids, config, embedding=embedding_name, source=source, use_gpu=use_gpu)
    index.meta["store"] = {
        "file": store_path.name,
        "sha256": sha256_file(store_path),
        "created_by": store_meta.get("created_by"),
    }
    with atomic_directory(out) as tmp:
        index.save(tmp)
        if embedding is not None:
            embedding.save(tmp)
    return out


def _read_embeddings(embeddings: str | os.PathLike | np.ndarray) -> tuple[np.ndarray, str | None]:
    if isinstance(embeddings, (str, os.PathLike)):
        path = Path(embeddings)
        try:
            return np.load(path, allow_pickle=False), str(path)
        except FileNotFoundError as err:
            raise InputError("embeddings file not found", file=path) from err
        except (OSError, ValueError) as err:
            raise InputError(f"not a NumPy .npy array without objects ({err})", file=path) from err
    return np.asarray(embeddings), None


def _read_ids(ids: str | os.PathLike | Sequence[str]) -> tuple[list[str], str | None]:
    if isinstance(ids, (str, os.PathLike)):
        path = Path(ids)
        try:
            lines = read_id_lines(path)
        except FileNotFoundError as err:
            raise InputError("report id file not found", file=path) from err
        except UnicodeDecodeError as err:
            raise InputError(f"not UTF-8 text ({err})", file=path) from err
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                raise InputError("blank line; expected one report id per line", file=path, record=f"line {line_number}")
        return [line.strip() for line in lines], str(path)
    return list(ids), None


def _check_ids_in_store(
    connection: duckdb.DuckDBPyConnection, report_ids: list[str], store_path: Path, ids_source: str | os.PathLike | None
) -> None:
    """Raise naming the first of ``report_ids`` (in list order) that the store's reports lack."""
    missing = connection.execute(
        """
        SELECT i.pos, i.report_id
        FROM (SELECT unnest($ids) AS report_id, generate_subscripts($ids, 1) AS pos) i
        ANTI JOIN reports r ON i.report_id = r.report_id
        ORDER BY i.pos LIMIT 1
        """,
        {"ids": list(report_ids)},
    ).fetchall()
    if missing:
        position, report_id = missing[0]
        raise InputError(
            f"report id {report_id!r} is not in the store {store_path}",
            file=ids_source,
            record=f"line {position}" if ids_source else position - 1,
        )
