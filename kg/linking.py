"""Linking report mentions to UMLS concepts (CUIs).

Two linkers share one interface, ``link(mentions) -> list[list[Link]]``:

* :class:`ExactLinker` matches the normalised mention against the normalised concept strings
  (:func:`normalise`: every run of characters other than ASCII letters and digits becomes one space,
  then lower-case and trimmed). Every concept with a matching string is returned with score 1.0.
* :class:`ScispacyLinker` runs scispaCy's :class:`~scispacy.candidate_generation.CandidateGenerator`
  (TF-IDF over character 3-grams plus an nmslib HNSW index) on a knowledge base built from the
  concept strings the caller passes, i.e. the user's own filtered UMLS release. Nothing is
  downloaded; the index is cached in a directory the caller names and rebuilt only when the
  concepts change. scispaCy is the ``nlp`` extra.

Both return, per mention, the concepts whose score ties the best score (ambiguous strings such as
one alias shared by two concepts keep every concept); an empty list when nothing reaches the
threshold.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kg.atomic import replace_directory
from kg.errors import InputError, MissingResourceError

LINKERS = ("scispacy", "exact")

_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")

NORMALISE_SQL = "lower(trim(regexp_replace({column}, '[^A-Za-z0-9]+', ' ', 'g')))"
"""DuckDB expression computing :func:`normalise` of ``{column}``, character for character."""

SCISPACY_THRESHOLD = 0.7
"""scispaCy's ``EntityLinker`` default: a candidate needs cosine similarity above 0.7."""
SCISPACY_NEIGHBOURS = 30
"""Aliases fetched from the ANN index per mention (scispaCy's ``EntityLinker`` default ``k``)."""
TIE_TOLERANCE = 1e-6

CACHE_FORMAT = "motor-kg scispacy linker cache"
CACHE_VERSION = 1
HNSW_PARAMS = {"M": 32, "efConstruction": 400, "post": 0, "indexThreadQty": 1}
"""HNSW build parameters. scispaCy builds its full-UMLS index with ``M=100, efConstruction=2000`` on
60 threads (about two hours); a filtered release is far smaller, so lighter parameters keep the
recall while building in seconds. One thread makes two builds of the same concepts identical."""
HNSW_EF_SEARCH = 200
MIN_DF_ALIASES = 10_000
"""Below this many aliases every character 3-gram is kept (``min_df=1``); scispaCy's ``min_df=10``
was tuned on millions of aliases and would leave a small knowledge base almost without features."""


def normalise(text: str) -> str:
    """Lower-case ``text`` and turn every run of non-ASCII-alphanumeric characters into one space.

    ``"Pleural-effusion (left)"`` becomes ``"pleural effusion left"``. :data:`NORMALISE_SQL` is the
    same function in DuckDB, so strings normalised in a query and in Python compare equal.
    """
    return _NON_ALNUM.sub(" ", text).strip().lower()


@dataclass(frozen=True)
class Link:
    """One concept a mention links to.

    Attributes:
        cui: UMLS concept unique identifier.
        score: linker confidence in [0, 1] (1.0 for an exact string match; cosine similarity of
            TF-IDF character 3-gram vectors for scispaCy).
    """

    cui: str
    score: float


@dataclass(frozen=True)
class Concept:
    """A concept of the knowledge base a linker searches.

    Attributes:
        cui: concept unique identifier.
        name: preferred name.
        aliases: every string of the concept (the preferred name included or not).
        types: semantic type ids (TUIs).
    """

    cui: str
    name: str
    aliases: tuple[str, ...]
    types: tuple[str, ...] = ()


class Linker(Protocol):
    """Anything that maps mention strings to concepts."""

    def link(self, mentions: Sequence[str]) -> list[list[Link]]:
        """Concepts of each mention, best first; ``len(result) == len(mentions)``."""
        ...


class ExactLinker:
    """Links a mention to every concept that has a string equal to it after :func:`normalise`."""

    def __init__(self, aliases: Iterable[tuple[str, str]]) -> None:
        """Build the lookup from ``(cui, string)`` pairs."""
        self._cuis_of: dict[str, set[str]] = defaultdict(set)
        for cui, string in aliases:
            key = normalise(string)
            if key:
                self._cuis_of[key].add(cui)

    def link(self, mentions: Sequence[str]) -> list[list[Link]]:
        """Concepts of each mention, sorted by CUI, each with score 1.0."""
        return [
            [Link(cui, 1.0) for cui in sorted(self._cuis_of.get(normalise(mention), ()))]
            for mention in mentions
        ]


class ScispacyLinker:
    """scispaCy TF-IDF/ANN candidate generation over a knowledge base of the caller's concepts."""

    def __init__(
        self,
        concepts: Sequence[Concept],
        cache_dir: str | os.PathLike | None = None,
        *,
        threshold: float = SCISPACY_THRESHOLD,
        neighbours: int = SCISPACY_NEIGHBOURS,
    ) -> None:
        """Build (or reuse from ``cache_dir``) the index over ``concepts``.

        Args:
            concepts: the knowledge base; must not be empty.
            cache_dir: where the TF-IDF vocabulary, vectors and HNSW index are kept between runs
                (``None``: build in memory every time). Reused only when it was built from the
                same concepts.
            threshold: minimum cosine similarity of a linked concept.
            neighbours: aliases fetched from the index per mention.

        Raises:
            MissingResourceError: scispaCy (the ``nlp`` extra) is not installed.
            InputError: ``concepts`` is empty.
        """
        modules = _import_scispacy()
        if not concepts:
            raise InputError("no concepts to link to: the filtered UMLS release has no English strings",
                             field="concepts")
        self.threshold = threshold
        self.neighbours = neighbours
        kb = modules.KnowledgeBase(
            [modules.Entity(c.cui, c.name, list(c.aliases), list(c.types)) for c in concepts]
        )
        aliases, vectorizer, index = _load_or_build_index(kb, concepts, cache_dir, modules)
        if not aliases:
            # CandidateGenerator downloads scispaCy's own UMLS index when handed an empty one.
            raise InputError("no concept string has a character 3-gram to index", field="concepts")
        self._generator = modules.CandidateGenerator(
            ann_index=index, tfidf_vectorizer=vectorizer, ann_concept_aliases_list=aliases, kb=kb
        )

    def link(self, mentions: Sequence[str]) -> list[list[Link]]:
        """Concepts of each mention whose best alias similarity ties the best and beats the threshold.

        Scoring follows scispaCy's ``EntityLinker``: a concept's score is the highest similarity
        among its aliases returned for the mention.
        """
        results: list[list[Link]] = []
        for candidates in self._generator(list(mentions), self.neighbours):
            scored = [(max(c.similarities), c.concept_id) for c in candidates if c.similarities]
            scored = [(score, cui) for score, cui in scored if score > self.threshold]
            if not scored:
                results.append([])
                continue
            best = max(score for score, _ in scored)
            results.append(
                [Link(cui, round(float(score), 6)) for score, cui in sorted(scored, key=lambda s: s[1])
                 if score >= best - TIE_TOLERANCE]
            )
        return results


def make_linker(kind: str, concepts: Sequence[Concept], cache_dir: str | os.PathLike | None = None) -> Linker:
    """The linker named ``kind`` (one of :data:`LINKERS`) over ``concepts``."""
    if kind == "exact":
        return ExactLinker((c.cui, alias) for c in concepts for alias in (c.name, *c.aliases))
    if kind == "scispacy":
        return ScispacyLinker(concepts, cache_dir)
    raise InputError(f"unknown linker {kind!r}; choose one of {', '.join(LINKERS)}", field="linker")


def scispacy_available() -> bool:
    """Whether the scispaCy linker can run here (scispaCy and nmslib import)."""
    try:
        _import_scispacy()
    except MissingResourceError:
        return False
    return True


@dataclass(frozen=True)
class _Scispacy:
    KnowledgeBase: Any
    Entity: Any
    CandidateGenerator: Any
    TfidfVectorizer: Any
    nmslib: Any


def _import_scispacy() -> _Scispacy:
    try:
        import nmslib
        from scispacy.candidate_generation import CandidateGenerator
        from scispacy.linking_utils import Entity, KnowledgeBase
        from sklearn.feature_extraction.text import TfidfVectorizer
    except ImportError as err:
        raise MissingResourceError(
            f"the scispacy linker needs scispaCy and nmslib ({err}); install the nlp extra "
            "(pip install 'motor-kg[nlp]') or use the exact linker (--linker exact)"
        ) from err
    return _Scispacy(KnowledgeBase, Entity, CandidateGenerator, TfidfVectorizer, nmslib)


def _concepts_digest(concepts: Sequence[Concept]) -> str:
    digest = hashlib.sha256()
    for concept in sorted(concepts, key=lambda c: c.cui):
        line = [concept.cui, concept.name, sorted(set(concept.aliases)), list(concept.types)]
        digest.update(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


def _load_or_build_index(
    kb: Any, concepts: Sequence[Concept], cache_dir: str | os.PathLike | None, modules: _Scispacy
) -> tuple[list[str], Any, Any]:
    """``(aliases, vectorizer, ann_index)`` from ``cache_dir`` when it holds these concepts, else built.

    scispaCy's own ``create_tfidf_ann_index`` refuses scipy >= 1.11 (it saves vectors as float16,
    which newer scipy cannot multiply) and saves the vectorizer with joblib, i.e. as a pickle. The
    same recipe is therefore built here with float32 vectors, and the vectorizer is stored as its
    vocabulary (JSON) and IDF weights (``.npy``) and rebuilt on load, so nothing is unpickled.
    """
    import numpy as np
    import scipy.sparse

    digest = _concepts_digest(concepts)
    cache = None if cache_dir is None else Path(cache_dir)
    if cache is not None and _cache_digest(cache) == digest:
        vocabulary = json.loads((cache / "tfidf_vocabulary.json").read_text(encoding="utf-8"))
        vectorizer = _tfidf_vectorizer(modules, min_df=1, vocabulary=vocabulary)
        vectorizer.idf_ = np.load(cache / "tfidf_idf.npy", allow_pickle=False)
        aliases = json.loads((cache / "concept_aliases.json").read_text(encoding="utf-8"))
        vectors = scipy.sparse.load_npz(cache / "tfidf_vectors.npz").astype(np.float32)
        index = _new_index(modules)
        index.addDataPointBatch(vectors)
        index.loadIndex(str(cache / "nmslib_index.bin"))
        index.setQueryTimeParams({"efSearch": HNSW_EF_SEARCH})
        return aliases, vectorizer, index

    aliases = sorted(kb.alias_to_cuis)
    vectorizer = _tfidf_vectorizer(modules, min_df=10 if len(aliases) >= MIN_DF_ALIASES else 1)
    vectors = vectorizer.fit_transform(aliases)
    # nmslib crashes on all-zero vectors (aliases shorter than one 3-gram or with only rare ones).
    keep = np.asarray(vectors.sum(axis=1)).reshape(-1) != 0
    aliases = [alias for alias, kept in zip(aliases, keep) if kept]
    vectors = vectors[keep]
    index = _new_index(modules)
    index.addDataPointBatch(vectors)
    index.createIndex(HNSW_PARAMS, print_progress=False)
    index.setQueryTimeParams({"efSearch": HNSW_EF_SEARCH})
    if cache is not None:
        _write_cache(cache, digest, vectorizer, aliases, vectors, index)
    return aliases, vectorizer, index


def _tfidf_vectorizer(modules: _Scispacy, *, min_df: int, vocabulary: dict[str, int] | None = None) -> Any:
    import numpy as np

    # scispaCy's settings: TF-IDF over character 3-grams within word boundaries.
    return modules.TfidfVectorizer(
        analyzer="char_wb", ngram_range=(3, 3), min_df=min_df, dtype=np.float32, vocabulary=vocabulary
    )


def _new_index(modules: _Scispacy) -> Any:
    return modules.nmslib.init(
        method="hnsw", space="cosinesimil_sparse", data_type=modules.nmslib.DataType.SPARSE_VECTOR
    )


def _cache_digest(cache: Path) -> str | None:
    try:
        manifest = json.loads((cache / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("format") != CACHE_FORMAT or manifest.get("version") != CACHE_VERSION:
        return None
    return manifest.get("concepts_sha256")


def _write_cache(cache: Path, digest: str, vectorizer: Any, aliases: list[str], vectors: Any, index: Any) -> None:
    """Write the index files to a temporary directory beside ``cache``, then swap it in."""
    import numpy as np
    import scipy.sparse

    with replace_directory(cache, is_replaceable=_is_cache_or_empty, what="a linker cache directory") as tmp:
        vocabulary = {term: int(column) for term, column in sorted(vectorizer.vocabulary_.items())}
        (tmp / "tfidf_vocabulary.json").write_text(json.dumps(vocabulary), encoding="utf-8")
        np.save(tmp / "tfidf_idf.npy", np.asarray(vectorizer.idf_, dtype=np.float64), allow_pickle=False)
        (tmp / "concept_aliases.json").write_text(json.dumps(aliases, ensure_ascii=False), encoding="utf-8")
        scipy.sparse.save_npz(tmp / "tfidf_vectors.npz", vectors.astype(np.float32))
        index.saveIndex(str(tmp / "nmslib_index.bin"))
        manifest = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "concepts_sha256": digest,
                    "aliases": len(aliases), "hnsw": HNSW_PARAMS}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _is_cache_or_empty(path: Path) -> bool:
    """Whether ``path`` is a directory holding a linker cache manifest (of any version) or nothing."""
    return path.is_dir() and ((path / "manifest.json").is_file() or not any(path.iterdir()))
