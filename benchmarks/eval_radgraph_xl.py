"""Agreement of the offline extractor (`kg extract --backend rules`) with RadGraph-XL.

Each report of a RadGraph-XL file (``{id: {text, entities}}``) is annotated by the extractor from
its own ``text`` and compared with RadGraph-XL's annotation by F1-RadGraph's definitions:

* **RG_E**: entity F1 over each report's multiset of ``(entity tokens, coarse label)``;
* **RG_ER**: relation F1 over each report's multiset of
  ``(head tokens, head label, relation, tail tokens, tail label)``.

Counts are summed over reports before precision, recall and F1 are taken (micro average). The
RadGraph-XL labels are mapped to the extractor's coarse labels by :func:`kg.radgraph_labels.coarse_label`
(``Observation::definitely present`` → OBS-DP, ``::definitely absent`` → OBS-DA, ``::uncertain`` →
OBS-U, ``Anatomy::*`` → ANAT-DP, a measurement variant to its base type and assertion); a label of
neither set stops the run with the report, entity and label named.

The reports are split in two halves by position in numerically sorted id order (even positions:
half A, odd: half B), so rules can be developed on A's errors and B read as unseen reports.

Usage::

    python benchmarks/eval_radgraph_xl.py [--data PATH] [--errors A|B|all] [--top N]

Prints, as markdown, RG_E / RG_ER with precision and recall for half A, half B and all reports,
then for the ``--errors`` reports per-label and per-relation F1 and the most frequent missed and
spurious entities.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from kg.radgraph_labels import coarse_label, describe_labels  # noqa: E402

DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "radgraph_xl" / "dev.json"
HALVES = ("A", "B", "all")

Entity = tuple[str, str]
Relation = tuple[str, str, str, str, str]


def _coarse(label: str, report_id: str, entity_id: str) -> str:
    """The coarse label of ``label`` (:func:`kg.radgraph_labels.coarse_label`), or a clear error."""
    coarse = coarse_label(label)
    if coarse is None:
        raise ValueError(f"report {report_id!r}, entity {entity_id!r}, field 'label': unknown label {label!r}; "
                         f"expected {describe_labels()}")
    return coarse


def report_sets(entities: dict[str, dict], report_id: str = "?") -> tuple[Counter[Entity], Counter[Relation]]:
    """The multisets of ``(tokens, label)`` and of ``(head, head label, relation, tail, tail label)``.

    Args:
        entities: a record's ``entities`` as RadGraph writes them (id → tokens, label, relations).
        report_id: the record's id, named in the error for an unknown label.
    """
    labelled = {i: (e["tokens"], _coarse(e["label"], report_id, i)) for i, e in entities.items()}
    relations: Counter[Relation] = Counter()
    for i, entity in entities.items():
        for relation, target in entity["relations"]:
            if target in labelled:
                relations[(*labelled[i], relation, *labelled[target])] += 1
    return Counter(labelled.values()), relations


@dataclass
class Tally:
    """True positives and predicted / reference counts of one kind of item."""

    tp: int = 0
    predicted: int = 0
    reference: int = 0

    def add(self, predicted: Counter, reference: Counter) -> None:
        self.tp += sum((predicted & reference).values())
        self.predicted += sum(predicted.values())
        self.reference += sum(reference.values())

    @property
    def precision(self) -> float:
        return self.tp / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.tp / self.reference if self.reference else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class Agreement:
    """RG_E / RG_ER tallies plus per-label, per-relation and error counts over a set of reports."""

    reports: int = 0
    entities: Tally = field(default_factory=Tally)
    relations: Tally = field(default_factory=Tally)
    by_label: dict[str, Tally] = field(default_factory=dict)
    by_relation: dict[str, Tally] = field(default_factory=dict)
    missed: Counter[Entity] = field(default_factory=Counter)
    spurious: Counter[Entity] = field(default_factory=Counter)
    text_mismatches: int = 0

    def add(self, predicted: dict[str, dict], reference: dict[str, dict], report_id: str = "?") -> None:
        pred_entities, pred_relations = report_sets(predicted, report_id)
        ref_entities, ref_relations = report_sets(reference, report_id)
        self.reports += 1
        self.entities.add(pred_entities, ref_entities)
        self.relations.add(pred_relations, ref_relations)
        for label in {k[1] for k in pred_entities} | {k[1] for k in ref_entities}:
            self.by_label.setdefault(label, Tally()).add(
                Counter({k: n for k, n in pred_entities.items() if k[1] == label}),
                Counter({k: n for k, n in ref_entities.items() if k[1] == label}),
            )
        for relation in {k[2] for k in pred_relations} | {k[2] for k in ref_relations}:
            self.by_relation.setdefault(relation, Tally()).add(
                Counter({k: n for k, n in pred_relations.items() if k[2] == relation}),
                Counter({k: n for k, n in ref_relations.items() if k[2] == relation}),
            )
        self.missed.update({(t.lower(), lab): n for (t, lab), n in (ref_entities - pred_entities).items()})
        self.spurious.update({(t.lower(), lab): n for (t, lab), n in (pred_entities - ref_entities).items()})


def halves(ids: Iterable[str]) -> dict[str, list[str]]:
    """Report ids split by position in numerically sorted order: even → ``A``, odd → ``B``."""
    ordered = sorted(ids, key=lambda i: (len(i), i))
    return {"A": ordered[0::2], "B": ordered[1::2], "all": ordered}


def evaluate(reference: dict[str, dict], ids: list[str], predicted: dict[str, dict]) -> Agreement:
    """Agreement of ``predicted`` (id → record JSON) with ``reference`` over ``ids``."""
    agreement = Agreement()
    for report_id in ids:
        ours, theirs = predicted[report_id], reference[report_id]
        if ours["text"].split() != theirs["text"].split():
            agreement.text_mismatches += 1
        agreement.add(ours["entities"], theirs["entities"], report_id)
    return agreement


def annotate(reference: dict[str, dict]) -> dict[str, dict]:
    """The extractor's record JSON for every reference report, from the report's own text."""
    from kg.extract import Extractor
    from kg.reports_io import RawReport

    extractor = Extractor("rules")
    reports = [RawReport(i, r["text"]) for i, r in reference.items()]
    return {e.record.report_id: e.record.to_json() for e in extractor.annotate(reports)}


def _row(name: str, agreement: Agreement) -> str:
    e, r = agreement.entities, agreement.relations
    return (
        f"| {name} | {agreement.reports} | **{e.f1:.3f}** | {e.precision:.3f} | {e.recall:.3f} "
        f"| **{r.f1:.3f}** | {r.precision:.3f} | {r.recall:.3f} | {agreement.text_mismatches} |"
    )


def _tally_table(title: str, tallies: dict[str, Tally]) -> list[str]:
    lines = [f"| {title} | reference | predicted | P | R | F1 |", "|---|---:|---:|---:|---:|---:|"]
    for name in sorted(tallies):
        t = tallies[name]
        lines.append(f"| {name} | {t.reference} | {t.predicted} | {t.precision:.3f} | {t.recall:.3f} | {t.f1:.3f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="RadGraph-XL JSON (id → record)")
    parser.add_argument("--errors", choices=HALVES, default="A", help="reports whose errors are listed")
    parser.add_argument("--top", type=int, default=25, help="missed / spurious entities listed")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"error: {args.data}: no such file", file=sys.stderr)
        return 1
    reference = json.loads(args.data.read_text(encoding="utf-8"))
    reference = {i: r for i, r in reference.items() if r.get("text", "").strip()}
    try:  # every reference label is checked before the (slower) annotation starts
        for report_id, record in reference.items():
            report_sets(record["entities"], report_id)
    except ValueError as exc:
        print(f"error: {args.data}: {exc}", file=sys.stderr)
        return 1
    predicted = annotate(reference)
    split = halves(reference)
    results = {name: evaluate(reference, ids, predicted) for name, ids in split.items()}

    print(f"RadGraph-XL agreement of `kg extract --backend rules` ({args.data.name}, {len(reference)} reports)\n")
    print("| reports | n | RG_E F1 | P | R | RG_ER F1 | P | R | texts differing |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in HALVES:
        print(_row(name, results[name]))
    chosen = results[args.errors]
    print(f"\nPer label (entities, half {args.errors}):\n")
    print("\n".join(_tally_table("label", chosen.by_label)))
    print(f"\nPer relation (half {args.errors}):\n")
    print("\n".join(_tally_table("relation", chosen.by_relation)))
    for title, counts in (("missed", chosen.missed), ("spurious", chosen.spurious)):
        print(f"\nMost frequent {title} entities (half {args.errors}): ", end="")
        print(", ".join(f"{t!r} {lab} ×{n}" for (t, lab), n in counts.most_common(args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
