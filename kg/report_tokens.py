"""Report text → RadGraph-XL tokens, the tokens every extracted record's spans index.

RadGraph-XL (the ``radgraph`` package's ``radgraph-xl`` model) annotates a report after collapsing
its whitespace and splitting it with NLTK's ``wordpunct_tokenize`` (runs of word characters, runs of
other non-space characters), then separating a few punctuation pairs that the regular expression
keeps together: ``).``, ``%.``, ``.'``, ``%,`` and ``%)``. The extractor tokenises the same way, so
its records can be compared with, merged with and stored beside a RadGraph-XL annotation of the
same report.

Tokenising is idempotent: text that is already tokenised so (every RadGraph-XL record's ``text``)
comes back with exactly its own tokens ("cannot", "___", ".:" stay as they are).

Typical use::

    from kg.report_tokens import radgraph_tokens
    radgraph_tokens("Small (2.5%).")   # ['Small', '(', '2', '.', '5', '%', ')', '.']
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from nltk.tokenize import wordpunct_tokenize
from spacy.tokens import Doc
from spacy.vocab import Vocab

# Punctuation runs wordpunct_tokenize keeps as one token and RadGraph-XL separates, with the
# separated form. Applied in this order, as the radgraph package does.
_PUNCTUATION_SPLITS = ((").", ") ."), ("%.", "% ."), (".'", ". '"), ("%,", "% ,"), ("%)", "% )"))
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
#: ``Doc.user_data`` key: word indices that start a paragraph (the word after a blank line)
PARAGRAPH_STARTS = "kg_paragraph_starts"
#: ``Doc.user_data`` key: the doc's words as strings, token ``i`` being word ``i``
WORDS = "kg_words"


def radgraph_tokens(text: str) -> list[str]:
    """The tokens RadGraph-XL reads ``text`` as (see the module docstring); ``" ".join`` them for its text."""
    tokens: list[str] = []
    for chunk in text.split():
        if chunk.isalnum() and "_" not in chunk:
            tokens.append(chunk)  # the common case: a plain word is its own token
            continue
        joined = " ".join(wordpunct_tokenize(chunk))
        for together, apart in _PUNCTUATION_SPLITS:
            joined = joined.replace(together, apart)
        tokens.extend(joined.split())
    return tokens


def is_radgraph_tokenised(text: str) -> bool:
    """Whether ``text.split()`` already are the RadGraph-XL tokens of ``text``."""
    return radgraph_tokens(text) == text.split()


def doc_words(doc: Doc) -> list[str]:
    """The words of a doc made by :class:`RadGraphTokenizer` (token ``i`` is word ``i``)."""
    words = doc.user_data.get(WORDS)
    return words if words is not None else [token.text for token in doc]


class RadGraphTokenizer:
    """A spaCy tokenizer producing :func:`radgraph_tokens`, one space after every token.

    The doc's ``user_data[PARAGRAPH_STARTS]`` lists the words that follow a blank line, so the
    pipeline can start a sentence there although the tokens themselves carry no line breaks;
    ``user_data[WORDS]`` keeps the words as strings, which later stages read without making a
    spaCy ``Token`` per word (``doc.text`` costs about as much as tokenising again).
    """

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    def __call__(self, text: str) -> Doc:
        words: list[str] = []
        starts: list[int] = []
        for paragraph in _BLANK_LINE.split(text):
            tokens = radgraph_tokens(paragraph)
            if tokens:
                starts.append(len(words))
                words.extend(tokens)
        doc = Doc(self.vocab, words=words)
        doc.user_data[PARAGRAPH_STARTS] = starts[1:]
        doc.user_data[WORDS] = words
        return doc

    def pipe(self, texts: Iterable[str], batch_size: int = 1000) -> Iterator[Doc]:
        """Tokenise many texts (spaCy's tokenizer interface)."""
        for text in texts:
            yield self(text)
