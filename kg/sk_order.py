"""The order of the triplets in an SK sentence (``sk_order``), one policy for every writer of one.

MOTOR's SK encoder reads a fixed number of tokens (90), so the order of a report's triplets decides
which of them survive the cut. :func:`kg.retrieval.compose_sk_sentence` (the SK sentences of
``kg lookup``, ``KnowledgeBase.sk_sentence`` and pretraining) and ``kg export-motor`` (the
``triplet`` lists of the reference code's annotation file) order them by the same policy:

==================  ==============================================================================
``sk_order``        triplets first
==================  ==============================================================================
``report``          in the order the report states them (first mention; several reports: the
                    first report's, then the next one's), as the reference code reads a study's
                    own triplet list. The default.
``specific_first``  stated as present before hedged before negated, then those the fewest store
                    reports share: what says most about this study (a rare finding rather than
                    "no pneumothorax").
``frequent_first``  those the most store reports share: the corpus' common statements.
==================  ==============================================================================

Ties keep report order. A phrase stated by several triplets (label variants that read the same)
counts once, with their store frequencies added up, the most certain tier, and its first position.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kg.errors import InputError
from kg.normalize import Triplet

SK_ORDERS = ("report", "specific_first", "frequent_first")
DEFAULT_SK_ORDER = "report"


def check_sk_order(order: str) -> str:
    """``order`` when it is one of :data:`SK_ORDERS`, else an :class:`InputError` naming ``sk_order``."""
    if order not in SK_ORDERS:
        raise InputError(f"must be one of {', '.join(SK_ORDERS)}; got {order!r}", field="sk_order")
    return order


def certainty_tier(triplet: Triplet) -> int:
    """0 when no entity is hedged or negated, 1 when one is uncertain (``-U``), 2 when one is negated (``-DA``)."""
    labels = (triplet.head_label, triplet.tail_label)
    if any(label.endswith("-DA") for label in labels):
        return 2
    return 1 if any(label.endswith("-U") for label in labels) else 0


@dataclass
class SKPhrase:
    """One distinct phrase of an SK sentence with what the policies sort by.

    Attributes:
        phrase: ``"head relation tail"``. position: index of its first mention.
        frequency: store reports stating it (summed over the triplets that read the same).
        tier: :func:`certainty_tier` (lowest of those triplets).
    """

    phrase: str
    position: int
    frequency: int
    tier: int = 0


def sort_key(order: str):
    """The sort key of ``order`` over :class:`SKPhrase` items."""
    check_sk_order(order)
    if order == "report":
        return lambda p: p.position
    if order == "specific_first":
        return lambda p: (p.tier, p.frequency, p.position)
    return lambda p: (-p.frequency, p.position)


def collect_phrases(triplets: Iterable[tuple[Triplet, int]]) -> list[SKPhrase]:
    """Distinct phrases of ``(triplet, store frequency)`` pairs given in report order."""
    phrases: dict[str, SKPhrase] = {}
    for triplet, frequency in triplets:
        text = triplet.phrase()
        found = phrases.get(text)
        if found is None:
            phrases[text] = SKPhrase(text, len(phrases), int(frequency), certainty_tier(triplet))
        else:
            found.frequency += int(frequency)
            found.tier = min(found.tier, certainty_tier(triplet))
    return list(phrases.values())


def ordered_phrases(triplets: Iterable[tuple[Triplet, int]], order: str = DEFAULT_SK_ORDER) -> list[str]:
    """The distinct phrases of ``(triplet, store frequency)`` pairs (in report order) in ``order``."""
    return [p.phrase for p in sorted(collect_phrases(triplets), key=sort_key(order))]
