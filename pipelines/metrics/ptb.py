"""Caption tokenisation as the COCO caption evaluation does it: PTB tokens, lower-case, no punctuation.

pycocoevalcap tokenises with the Stanford CoreNLP 3.4.1 ``PTBTokenizer`` (``-preserveLines
-lowerCase``, a Java program) and then drops the tokens in its ``PUNCTUATIONS`` list.
:func:`ptb_tokenize` reproduces that in pure Python with NLTK's Treebank tokenizer, so scores do not
depend on a Java runtime; :func:`ptb_tokenize_java` runs the original when Java is there.

The two differ where the Stanford lexer knows more than the Treebank rules:

* a period inside a line is split off a word unless the word is an abbreviation; Stanford's lexer
  has a long, partly case-sensitive abbreviation list, this module a short one
  (:data:`ABBREVIATIONS`: titles, months, ``vs``, ``etc``, ``ct``) plus every word that already holds
  a period (``e.g.``, ``a.m.``);
* Stanford splits ``+`` and a trailing ``/`` off words (``w/`` → ``w /``) and splits some codes
  (``v76.12`` → ``v76 .12``); Treebank keeps them whole;
* Stanford's further normalisations (British → American spelling, currency, fractions, HTML
  entities) are not reproduced.

Like the Java path, brackets become ``-lrb-``/``-rrb-``/``-lsb-``/... tokens and stay: pycocoevalcap's
punctuation list names them in upper case, but the Java tokenizer has already lower-cased them.
``benchmarks/bench_caption_metrics.py`` measures the agreement on real reports (99.8% of IU-Xray
findings sections tokenise identically; BLEU, ROUGE-L and CIDEr move by less than 1e-4).
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import pycocoevalcap.tokenizer.ptbtokenizer as coco_ptb

# What the COCO evaluation removes after tokenising.
PUNCTUATIONS = frozenset(coco_ptb.PUNCTUATIONS)

# Words the Stanford lexer keeps with their period (case-insensitive here; the lexer's lists are
# longer and partly case-sensitive). "ct" is a US state abbreviation to the lexer and common in reports.
ABBREVIATIONS = frozenset("""
mr mrs ms dr drs prof st sr jr gen col rev maj mt ave vs etc al ft ct dept univ inc corp co ltd
jan feb mar apr jun jul aug sep sept oct nov dec
""".split())
# Abbreviations the Stanford lexer keeps only before a number ("No. 4", "Fig. 2").
NUMBER_ABBREVIATIONS = frozenset("no nos fig figs ph tel".split())

_DIGIT = re.compile(r"\d")
_TRAILING_PERIODS = re.compile(r"(.*?[^.])(\.+)")


@lru_cache(maxsize=1)
def _treebank():
    from nltk.tokenize import TreebankWordTokenizer

    return TreebankWordTokenizer()


def _keeps_period(stem: str, next_token: str | None) -> bool:
    """Whether the lexer leaves ``stem + "."`` as one token (an abbreviation such as ``e.g.``)."""
    key = stem.lower()
    if "." in stem and any(c.isalpha() for c in stem):
        return True
    if key in ABBREVIATIONS:
        return True
    return key in NUMBER_ABBREVIATIONS and next_token is not None and bool(_DIGIT.match(next_token))


def _split_periods(tokens: list[str]) -> list[str]:
    """Split periods off words inside a line as the Stanford lexer does, keeping abbreviations.

    The Treebank tokenizer only splits the period that ends the whole string, so that split is
    undone first and every word is then treated alike.
    """
    if len(tokens) >= 2 and tokens[-1] == "." and not tokens[-2].endswith("."):
        tokens = tokens[:-2] + [tokens[-2] + "."]
    out: list[str] = []
    for i, token in enumerate(tokens):
        match = _TRAILING_PERIODS.fullmatch(token)
        if match is None:
            out.append(token)
            continue
        stem, periods = match.groups()
        next_token = tokens[i + 1] if i + 1 < len(tokens) else None
        if len(periods) == 1 and _keeps_period(stem, next_token):
            out.append(token)
        else:
            out.extend([stem, *periods])
    return out


def ptb_tokens(text: str) -> list[str]:
    """PTB tokens of one caption, lower-cased, with pycocoevalcap's punctuation tokens removed.

    Args:
        text: a caption or report; newlines count as spaces.

    Returns:
        The tokens, e.g. ``"No pleural effusion. Heart (normal)."`` →
        ``["no", "pleural", "effusion", "heart", "-lrb-", "normal", "-rrb-"]``.
    """
    tokens = _split_periods(_treebank().tokenize(text.replace("\n", " "), convert_parentheses=True))
    return [t for t in (token.lower() for token in tokens) if t not in PUNCTUATIONS]


def ptb_tokenize(text: str) -> str:
    """:func:`ptb_tokens` joined by single spaces (the form pycocoevalcap's scorers split on)."""
    return " ".join(ptb_tokens(text))


def ptb_tokenize_java(texts: list[str], timeout_s: float = 600.0) -> list[str]:
    """Tokenise with pycocoevalcap's Stanford CoreNLP jar, exactly as its ``PTBTokenizer`` does.

    Unlike ``PTBTokenizer.tokenize`` this writes its temporary file outside the (possibly read-only)
    package directory and does not lose lines when a caption is empty.

    Args:
        texts: captions; newlines count as spaces.
        timeout_s: seconds before the Java process is killed.

    Returns:
        One space-joined token string per caption.

    Raises:
        RuntimeError: no ``java`` on ``PATH``, or the tokenizer failed.
    """
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("no 'java' on PATH; the Stanford PTB tokenizer is a Java program")
    jar = Path(coco_ptb.__file__).with_name(coco_ptb.STANFORD_CORENLP_3_4_1_JAR)
    # An empty line would vanish from the tokenizer's output and shift every later caption.
    lines = [" ".join(text.split()) or "." for text in texts]
    fd, tmp = tempfile.mkstemp(suffix=".txt", text=True)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        done = subprocess.run(
            [java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase",
             "-encoding", "utf-8", tmp],
            capture_output=True, timeout=timeout_s, check=False,
        )
    finally:
        Path(tmp).unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"Stanford PTB tokenizer exited with {done.returncode}: "
                           f"{done.stderr.decode(errors='replace').strip()[-300:]}")
    out = done.stdout.decode("utf-8").split("\n")
    if len(out) < len(lines):
        raise RuntimeError(f"Stanford PTB tokenizer returned {len(out)} lines for {len(lines)} captions")
    return [" ".join(t for t in line.rstrip().split(" ") if t and t not in PUNCTUATIONS) for line in out[:len(lines)]]


def tokenizer_description(name: str) -> str:
    """Human-readable name and version of a tokenizer choice, for result records."""
    if name == "python":
        return f"NLTK {importlib.metadata.version('nltk')} Treebank + PTB period rules (pure Python)"
    if name == "java":
        return f"Stanford CoreNLP 3.4.1 PTBTokenizer (pycocoevalcap {importlib.metadata.version('pycocoevalcap')})"
    return "whitespace split (inputs already tokenised)"
