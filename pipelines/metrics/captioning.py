"""Natural-language generation metrics for report generation: BLEU-1..4, METEOR, ROUGE-L, CIDEr.

Scores come from pycocoevalcap, the implementation report-generation papers (R2Gen and its
successors) use: BLEU is corpus-level with the closest reference length, ROUGE-L is the LCS
F-measure with beta 1.2 averaged over samples, CIDEr is CIDEr-D (Gaussian length penalty with
sigma 6, clipped counts, times 10) with document frequencies taken from the evaluated references,
so a corpus of a single report always scores 0. All scores are on pycocoevalcap's scales: [0, 1]
except CIDEr in [0, 10].

METEOR is METEOR 1.5 (``meteor-1.5.jar`` shipped with pycocoevalcap), which needs a Java runtime.
Without Java, METEOR is ``None`` with the reason, rather than a number from another
implementation that would not be comparable with published METEOR. ``meteor="nltk"`` asks for
NLTK's ``meteor_score`` instead (different parameters, no paraphrase table; WordNet synonyms
only when the WordNet corpus is already installed, since nothing is downloaded): the result
records which of these ran.

A metric that fails is ``None`` with its reason under ``errors``; the others are still returned,
so a long evaluation never ends in a traceback.
"""
from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kg.errors import InputError
from pipelines.metrics.ptb import ptb_tokenize, ptb_tokenize_java, tokenizer_description

METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
TOKENIZERS = ("python", "java", "none")
METEOR_CHOICES = ("java", "nltk", "off")

Corpus = dict[int, list[str]]


def _as_reference_lists(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    """Validate the inputs; one list of reference strings per prediction."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise InputError("expected a list of texts, got a single string", field="predictions")
    if len(predictions) != len(references):
        raise InputError(f"{len(predictions)} predictions for {len(references)} references", field="references")
    if not predictions:
        raise InputError("no predictions to score", field="predictions")
    for index, prediction in enumerate(predictions):
        if not isinstance(prediction, str):
            raise InputError(f"expected a string, got {type(prediction).__name__}", record=index, field="predictions")
    lists = []
    for index, reference in enumerate(references):
        options = [reference] if isinstance(reference, str) else list(reference)
        if not options or not all(isinstance(option, str) for option in options):
            raise InputError("expected a string or a non-empty list of strings", record=index, field="references")
        lists.append(options)
    return lists


def _tokenize(texts: list[str], tokenizer: str, errors: dict[str, str]) -> tuple[list[str], str]:
    """Tokenised texts and the tokenizer that actually ran (Java failures fall back to Python)."""
    if tokenizer == "java":
        try:
            return ptb_tokenize_java(texts), "java"
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
            errors["tokenizer"] = f"Java PTB tokenizer failed, used the Python one: {err}"
            tokenizer = "python"
    if tokenizer == "python":
        return [ptb_tokenize(text) for text in texts], "python"
    return [" ".join(text.split()) for text in texts], "none"


def _bleu(gts: Corpus, res: Corpus) -> list[float]:
    from pycocoevalcap.bleu.bleu import Bleu

    scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return [float(score) for score in scores]


def _rouge(gts: Corpus, res: Corpus) -> float:
    from pycocoevalcap.rouge.rouge import Rouge

    return float(Rouge().compute_score(gts, res)[0])


def _cider(gts: Corpus, res: Corpus) -> float:
    from pycocoevalcap.cider.cider import Cider

    return float(Cider().compute_score(gts, res)[0])


def meteor_java(gts: Corpus, res: Corpus, timeout_s: float = 1800.0) -> float:
    """Corpus METEOR 1.5 with pycocoevalcap's jar and command line (``-l en -norm``).

    The jar is driven here rather than through ``pycocoevalcap.meteor.Meteor`` because that
    wrapper has no timeout and never releases its lock when Java dies mid-evaluation, which then
    hangs the interpreter when the object is garbage-collected.

    Args:
        gts: ``{id: [reference, ...]}`` tokenised references.
        res: ``{id: [prediction]}`` tokenised predictions, same ids.
        timeout_s: seconds before the Java process is killed.

    Raises:
        RuntimeError: no Java, or the METEOR process failed or timed out.
    """
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("no Java runtime ('java' not on PATH); METEOR 1.5 is a Java program. Install a JRE, "
                           "or pass meteor='nltk' for NLTK's approximation (not comparable with published METEOR)")
    import pycocoevalcap.meteor.meteor as meteor_module

    def clean(text: str) -> str:
        # "|||" separates fields and a newline ends a request in METEOR's line protocol.
        return " ".join(text.replace("|||", " ").split())

    command = [java, "-jar", "-Xmx2G", meteor_module.METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]
    with tempfile.TemporaryFile() as stderr, subprocess.Popen(
            command, cwd=Path(meteor_module.__file__).parent,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr) as process:
        timer = threading.Timer(timeout_s, process.kill)
        timer.start()

        def read_line() -> str:
            line = process.stdout.readline().decode().strip()
            if not line:
                stderr.seek(0)
                tail = stderr.read().decode(errors="replace").strip()[-300:]
                why = "was killed after the timeout" if not timer.is_alive() else "ended early"
                raise RuntimeError(f"METEOR process {why}: {tail}")
            return line

        try:
            stats = []
            for key in gts:
                request = " ||| ".join(["SCORE", *(clean(r) for r in gts[key]), clean(res[key][0])])
                process.stdin.write(f"{request}\n".encode())
                process.stdin.flush()
                stats.append(read_line())
            process.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
            process.stdin.flush()
            for _ in stats:
                read_line()  # per-sample scores; the corpus score follows them
            return float(read_line())
        finally:
            timer.cancel()
            process.kill()


class _NoSynonyms:
    """Stands in for NLTK's WordNet reader when the corpus is not installed: no synonym matches."""

    def synsets(self, word: str) -> list:
        return []


def meteor_nltk(gts: Corpus, res: Corpus) -> tuple[float, str]:
    """Mean sentence METEOR from NLTK (alpha 0.9, beta 3, gamma 0.5) and a description of what ran.

    Uses WordNet synonyms only when the corpus is installed locally; otherwise exact and stem
    matches only. Not comparable with METEOR 1.5.
    """
    from nltk.corpus import wordnet
    from nltk.translate.meteor_score import meteor_score

    try:
        wordnet.ensure_loaded()
        reader: Any = wordnet
        stages = "exact, Porter-stem and WordNet-synonym matches"
    except LookupError:
        reader = _NoSynonyms()
        stages = "exact and Porter-stem matches only (WordNet corpus not installed)"
    scores = [meteor_score([r.split() for r in gts[key]], res[key][0].split(), wordnet=reader) for key in gts]
    version = importlib.metadata.version("nltk")
    return float(np.mean(scores)), f"NLTK {version} meteor_score, {stages}; not comparable with METEOR 1.5"


def _record(result: dict[str, Any], errors: dict[str, str], names: Sequence[str], compute: Callable[[], Any]) -> None:
    """Store ``compute()`` under ``names``, or ``None`` for each with the reason when it fails."""
    try:
        values = compute()
    except Exception as err:  # noqa: BLE001 - one failing scorer must not lose the others' results
        for name in names:
            result[name] = None
            errors[name] = f"{type(err).__name__}: {err}"
        return
    values = values if isinstance(values, list) else [values]
    for name, value in zip(names, values):
        result[name] = value


def caption_metrics(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    tokenizer: str = "python",
    meteor: str = "java",
    meteor_timeout_s: float = 1800.0,
) -> dict[str, Any]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of generated reports against references.

    Args:
        predictions: one generated text per sample.
        references: one reference text, or a list of references, per sample.
        tokenizer: ``"python"`` (default; :func:`pipelines.metrics.ptb.ptb_tokenize`, no Java,
            the same result on every machine), ``"java"`` (the Stanford PTB tokenizer of
            pycocoevalcap; falls back to ``"python"`` with a note under ``errors`` when it fails) or
            ``"none"`` (texts are already tokenised: split on whitespace only, as R2Gen scores its
            cleaned reports).
        meteor: ``"java"`` (METEOR 1.5; ``None`` with the reason when there is no Java),
            ``"nltk"`` (NLTK's approximation) or ``"off"``.
        meteor_timeout_s: seconds before the METEOR Java process is killed.

    Returns:
        ``{"BLEU-1", ..., "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}`` (``None`` where a metric could
        not be computed), ``n``, ``tokenizer`` (what ran), ``implementations`` (name and version
        per metric) and ``errors`` (``{metric: reason}``; empty when everything ran).

    Raises:
        InputError: lengths differ, no samples, a non-string text, or an unknown option.
    """
    if tokenizer not in TOKENIZERS:
        raise InputError(f"unknown tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}", field="tokenizer")
    if meteor not in METEOR_CHOICES:
        raise InputError(f"unknown METEOR choice {meteor!r}; choose one of {', '.join(METEOR_CHOICES)}",
                         field="meteor")
    reference_lists = _as_reference_lists(predictions, references)
    errors: dict[str, str] = {}
    flat = list(predictions) + [text for options in reference_lists for text in options]
    tokens, tokenizer_ran = _tokenize(flat, tokenizer, errors)
    tokenized_predictions, rest = tokens[:len(predictions)], iter(tokens[len(predictions):])
    gts = {i: [next(rest) for _ in options] for i, options in enumerate(reference_lists)}
    res = {i: [prediction] for i, prediction in enumerate(tokenized_predictions)}

    coco = f"pycocoevalcap {importlib.metadata.version('pycocoevalcap')}"
    implementations = {"BLEU": f"{coco} Bleu", "ROUGE-L": f"{coco} Rouge", "CIDEr": f"{coco} Cider (CIDEr-D)"}
    result: dict[str, Any] = {}
    _record(result, errors, METRIC_NAMES[:4], lambda: _bleu(gts, res))
    if meteor == "java":
        implementations["METEOR"] = f"METEOR 1.5 jar ({coco}, Java)"
        _record(result, errors, ["METEOR"], lambda: meteor_java(gts, res, meteor_timeout_s))
    elif meteor == "nltk":
        implementations["METEOR"] = f"NLTK {importlib.metadata.version('nltk')} meteor_score"

        def nltk_score() -> float:
            score, implementations["METEOR"] = meteor_nltk(gts, res)
            return score

        _record(result, errors, ["METEOR"], nltk_score)
    else:
        implementations["METEOR"] = "not computed"
        result["METEOR"] = None
        errors["METEOR"] = "not requested (meteor='off')"
    _record(result, errors, ["ROUGE-L"], lambda: _rouge(gts, res))
    _record(result, errors, ["CIDEr"], lambda: _cider(gts, res))

    ordered: dict[str, Any] = {name: result[name] for name in METRIC_NAMES}
    ordered.update(n=len(predictions), tokenizer=tokenizer_description(tokenizer_ran),
                   implementations={key: implementations[key] for key in ("BLEU", "METEOR", "ROUGE-L", "CIDEr")},
                   errors=errors)
    return ordered
