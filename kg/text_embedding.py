"""Built-in report text embedding: TF-IDF followed by truncated SVD (latent semantic analysis).

It lets a knowledge base be searched by text before any MOTOR model has been trained: reports and
queries are mapped to L2-normalised float32 vectors of ``dim`` (at most 256) dimensions, so inner
product is cosine similarity. Fitting is scikit-learn's; the fitted state is saved as JSON and
``.npy`` arrays, never pickled, so loading cannot run code.

Files written by :meth:`TextEmbedding.save` into a directory:

* ``text_embedding.json``: format version, TF-IDF options, output dimension, vocabulary (term
  list in column order);
* ``text_embedding_idf.npy``: float64 ``(V,)`` inverse document frequencies;
* ``text_embedding_components.npy``: float32 ``(dim, V)`` SVD components.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from kg.errors import InputError
from kg.files import read_json

FORMAT_VERSION = 1
CONFIG_FILE = "text_embedding.json"
IDF_FILE = "text_embedding_idf.npy"
COMPONENTS_FILE = "text_embedding_components.npy"
NAME = "tfidf-svd"
"""Embedding name recorded in an index's ``meta.json`` when the index holds these vectors."""


@dataclass(frozen=True)
class TextEmbeddingConfig:
    """TF-IDF and SVD options.

    Attributes:
        dim: requested output dimension; the fitted one is ``min(dim, n_reports - 1, n_terms - 1)``
            because a rank-r SVD of an ``(n, V)`` matrix needs ``r < min(n, V)``.
        ngram_max: longest word n-gram (bigrams catch phrases such as "pleural effusion").
        max_features: vocabulary cap, most frequent terms kept.
        token_pattern: regular expression of a token; letters only, so dates, sizes and
            de-identification digits do not become terms.
        stop_words: scikit-learn stop-word list name, or ``None``.
        sublinear_tf: use ``1 + log(tf)`` so a repeated word does not dominate a report.
        seed: random state of the randomized SVD, for identical rebuilds.
    """

    dim: int = 256
    ngram_max: int = 2
    max_features: int = 50_000
    token_pattern: str = r"(?u)\b[^\W\d_]{2,}\b"
    stop_words: str | None = "english"
    sublinear_tf: bool = True
    seed: int = 0

    def vectorizer(self, vocabulary: Sequence[str] | None = None) -> TfidfVectorizer:
        """A TF-IDF vectorizer with these options (and a fixed vocabulary when given)."""
        return TfidfVectorizer(
            lowercase=True,
            ngram_range=(1, self.ngram_max),
            max_features=None if vocabulary is not None else self.max_features,
            token_pattern=self.token_pattern,
            stop_words=self.stop_words,
            sublinear_tf=self.sublinear_tf,
            vocabulary=vocabulary,
            dtype=np.float64,
        )


class TextEmbedding:
    """A fitted TF-IDF + SVD text embedding.

    Use :meth:`fit` on a corpus or :meth:`load` from a directory, then :meth:`encode`.
    """

    def __init__(
        self,
        config: TextEmbeddingConfig,
        vocabulary: list[str],
        idf: np.ndarray,
        components: np.ndarray,
    ) -> None:
        if components.ndim != 2 or components.shape[1] != len(vocabulary) or idf.shape != (len(vocabulary),):
            raise InputError(
                f"text embedding arrays do not match its vocabulary of {len(vocabulary)} terms: "
                f"idf {idf.shape}, components {components.shape}"
            )
        self.config = config
        self.vocabulary = vocabulary
        self.components = components.astype(np.float32, copy=False)
        self._vectorizer = config.vectorizer(vocabulary)
        self._vectorizer.idf_ = idf

    @property
    def dim(self) -> int:
        """Output dimension of :meth:`encode`."""
        return int(self.components.shape[0])

    @property
    def idf(self) -> np.ndarray:
        """float64 ``(V,)`` inverse document frequencies, in vocabulary order."""
        return self._vectorizer.idf_

    @classmethod
    def fit(cls, texts: Sequence[str], config: TextEmbeddingConfig | None = None) -> TextEmbedding:
        """Fit TF-IDF and a truncated SVD on ``texts`` (the store's reports).

        Raises:
            InputError: fewer than two texts, or no text contains a single term.
        """
        config = config or TextEmbeddingConfig()
        if len(texts) < 2:
            raise InputError(f"the text embedding needs at least 2 reports to fit; got {len(texts)}")
        vectorizer = config.vectorizer()
        try:
            tfidf = vectorizer.fit_transform(texts)
        except ValueError as err:  # scikit-learn's "empty vocabulary" message
            raise InputError(f"cannot fit the text embedding: {err}") from err
        dim = min(config.dim, tfidf.shape[0] - 1, tfidf.shape[1] - 1)
        if dim < 1:
            raise InputError(
                f"cannot fit the text embedding: {tfidf.shape[0]} reports with {tfidf.shape[1]} "
                "distinct terms leave no dimension"
            )
        svd = TruncatedSVD(n_components=dim, algorithm="randomized", random_state=config.seed)
        svd.fit(tfidf)
        vocabulary = vectorizer.get_feature_names_out().tolist()
        return cls(config, vocabulary, vectorizer.idf_, svd.components_)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts.

        Args:
            texts: ``n`` strings.

        Returns:
            float32 ``(n, dim)``, each row L2-normalised; a text with no known term maps to zeros.
        """
        if isinstance(texts, str):
            raise InputError("encode takes a list of texts, not a single string")
        tfidf = self._vectorizer.transform(texts)
        # TruncatedSVD.transform is this product; keeping the components as an array is what lets
        # the embedding be saved without pickle.
        vectors = np.asarray(tfidf @ self.components.T, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)

    def save(self, directory: str | Path) -> None:
        """Write the three files described in the module docstring into an existing directory."""
        directory = Path(directory)
        header = {
            "format": "motor-kg text embedding",
            "version": FORMAT_VERSION,
            "name": NAME,
            "dim": self.dim,
            "config": asdict(self.config),
            "vocabulary": self.vocabulary,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(header, indent=1) + "\n", encoding="utf-8")
        np.save(directory / IDF_FILE, self.idf)
        np.save(directory / COMPONENTS_FILE, self.components)

    @classmethod
    def load(cls, directory: str | Path) -> TextEmbedding:
        """Read an embedding written by :meth:`save`.

        Raises:
            InputError: a file is missing, malformed or of another format version.
        """
        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        header = read_json(config_path, missing="text embedding file is missing")
        if header.get("format") != "motor-kg text embedding" or header.get("version") != FORMAT_VERSION:
            raise InputError(
                f"not a motor-kg text embedding of format version {FORMAT_VERSION}", file=config_path
            )
        try:
            config = TextEmbeddingConfig(**header["config"])
            vocabulary = list(header["vocabulary"])
        except (KeyError, TypeError) as err:
            raise InputError(f"malformed header ({err})", file=config_path) from err
        arrays = []
        for name in (IDF_FILE, COMPONENTS_FILE):
            try:
                arrays.append(np.load(directory / name, allow_pickle=False))
            except (OSError, ValueError) as err:
                raise InputError(f"cannot read array ({err})", file=directory / name) from err
        return cls(config, vocabulary, *arrays)
