"""Medical VQA accuracy, split into closed-ended (yes/no, choice) and open-ended questions.

Answers are compared after the normalisation of the VQA v2 evaluation, which the VQA-RAD and SLAKE
pipelines of the BAN / MEVF family apply to their answer sets (``compute_softscore.py``):
lower-case; apostrophes dropped; a comma inside a number dropped (``1,000`` → ``1000``); a period
kept only between digits (``2.5``); other punctuation and ``_`` become spaces; number words
zero–ten (and ``none``) become digits; articles (a, an, the) are dropped; whitespace is collapsed.
Unlike VQA v2 there is no contraction table and no 10-annotator soft score: medical VQA sets have
one answer per question. A prediction is correct when its normalised form equals the normalised
form of any acceptable answer. The rules are written out here because no maintained package
ships them.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from kg.errors import InputError

ANSWER_TYPES = ("open", "closed")
_ARTICLES = frozenset({"a", "an", "the"})
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")
_NON_DECIMAL_POINT = re.compile(r"(?<!\d)\.|\.(?!\d)")
_PUNCTUATION = re.compile(r"[^\w\s.]|_")


def normalize_answer(text: str) -> str:
    """The comparable form of an answer, e.g. ``"The Left Lung."`` → ``"left lung"``, ``"Two"`` → ``"2"``."""
    text = str(text).lower().replace("'", "")
    text = _NON_DECIMAL_POINT.sub(" ", _DIGIT_COMMA.sub("", text))
    words = [_NUMBER_WORDS.get(word, word) for word in _PUNCTUATION.sub(" ", text).split() if word not in _ARTICLES]
    return " ".join(words)


def vqa_accuracy(
    predictions: Sequence[str], answers: Sequence[str | Sequence[str]], answer_types: Sequence[str],
) -> dict[str, Any]:
    """Exact-match accuracy after :func:`normalize_answer`, overall and per answer type.

    Args:
        predictions: one predicted answer per question.
        answers: the reference answer, or a list of acceptable answers, per question.
        answer_types: ``"open"`` or ``"closed"`` per question (any case, as VQA-RAD and SLAKE
            write ``OPEN`` / ``CLOSED``).

    Returns:
        ``{"open", "closed", "overall"}`` accuracies as fractions (NaN for a type with no question)
        and the counts ``n_open``, ``n_closed``.

    Raises:
        InputError: lengths differ, an unknown answer type, or a question without an answer.
    """
    if not len(predictions) == len(answers) == len(answer_types):
        raise InputError(f"{len(predictions)} predictions, {len(answers)} answers, {len(answer_types)} answer types",
                         field="predictions")
    correct = {kind: 0 for kind in ANSWER_TYPES}
    count = {kind: 0 for kind in ANSWER_TYPES}
    for index, (prediction, accepted, kind) in enumerate(zip(predictions, answers, answer_types)):
        kind = str(kind).strip().lower()
        if kind not in count:
            raise InputError(f"answer type {kind!r} is neither 'open' nor 'closed'", record=index, field="answer_types")
        options = [accepted] if isinstance(accepted, str) else list(accepted)
        if not options:
            raise InputError("no acceptable answer", record=index, field="answers")
        count[kind] += 1
        correct[kind] += normalize_answer(prediction) in {normalize_answer(option) for option in options}
    total = sum(count.values())
    result: dict[str, Any] = {
        kind: correct[kind] / count[kind] if count[kind] else float("nan") for kind in ANSWER_TYPES}
    result["overall"] = sum(correct.values()) / total if total else float("nan")
    result["n_open"], result["n_closed"] = count["open"], count["closed"]
    return result
