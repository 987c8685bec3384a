"""Evaluate `kg label` against IU-Xray's MeSH annotation, next to a keyword baseline.

The MeSH terms of each report are mapped to the 20 GK findings by ``graphs/mesh_to_gk.yaml``
(:mod:`kg.mesh`); a
report's labels are compared finding by finding. A finding counts as predicted when its label is 1
(and also when it is -1 with ``--uncertain positive``, the default: NLM's indexers index findings
reported as probable, so "could represent scarring" is indexed as Cicatrix). The baseline marks a
finding wherever one of its lexicon terms occurs, without negation or uncertainty handling, and
``normal`` when no other finding occurs.

Usage::

    python benchmarks/eval_iu_labels.py [--reports PATH] [--out RESULTS.md] [--uncertain positive|negative]

Prints a markdown table of per-finding precision / recall / F1 and micro / macro F1, and the MeSH
headings that have no GK counterpart.
"""
from __future__ import annotations

import argparse
import itertools
import re
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from kg.label import label_reports
from kg.lexicon import OBS, load_lexicon
from kg.mesh import load_mesh_mapping
from kg.reports_io import ReadStats, read_reports

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPORTS = PROJECT_ROOT.parent / "shared" / "data" / "iu_xray" / "reports_dev.csv"


def keyword_baseline(texts: list[str], findings: list[str]) -> np.ndarray:
    """Finding indicators from plain term occurrence (no negation): bool array (reports, findings)."""
    lexicon = load_lexicon()
    patterns: dict[str, list[str]] = {f: [] for f in findings}
    for term in lexicon.of_kind(OBS):
        for concept in term.concepts:
            if concept.startswith("gk:") and concept[3:] in patterns and concept != "gk:normal":
                patterns[concept[3:]].append(_normalise(term.text))
    out = np.zeros((len(texts), len(findings)), dtype=bool)
    for row, text in enumerate(texts):
        padded = f" {_normalise(text)} "
        for col, finding in enumerate(findings):
            out[row, col] = any(f" {p} " in padded for p in patterns[finding])
    if "normal" in findings:
        normal = findings.index("normal")
        others = [i for i in range(len(findings)) if i != normal]
        out[:, normal] = ~out[:, others].any(axis=1)
    return out


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def scores(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Per-column precision, recall, F1, and micro / macro F1 over columns."""
    p, r, f, _ = precision_recall_fscore_support(truth, predicted, average=None, zero_division=0)
    micro = precision_recall_fscore_support(truth, predicted, average="micro", zero_division=0)[2]
    macro = precision_recall_fscore_support(truth, predicted, average="macro", zero_division=0)[2]
    return p, r, f, float(micro), float(macro)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=Path, default=DEFAULT_REPORTS, help="IU-Xray reports CSV (uid, MeSH, findings, impression)")
    parser.add_argument("--mapping", type=Path, help="MeSH → GK mapping (default: graphs/mesh_to_gk.yaml)")
    parser.add_argument("--uncertain", choices=("positive", "negative"), default="positive", help="how a -1 label counts")
    parser.add_argument("--limit", type=int, help="evaluate only the first N reports")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    if not args.reports.is_file():
        print(f"reports not found: {args.reports}", file=sys.stderr)
        return 2

    findings = list(load_lexicon().gk_findings)
    mapping = load_mesh_mapping(args.mapping)
    stats = ReadStats()
    reports = list(itertools.islice(read_reports(args.reports, "iu-xray-csv", stats=stats), args.limit))
    truth_by_id = {r.report_id: mapping.findings_of(r.extra.get("MeSH", "")) for r in reports}
    evaluated = [r for r in reports if truth_by_id[r.report_id] is not None]

    start = time.perf_counter()
    labels = label_reports(evaluated)
    seconds = time.perf_counter() - start
    truth = np.array([[f in truth_by_id[r.report_id] for f in findings] for r in evaluated], dtype=bool)
    values = labels[[f"gk:{f}" for f in findings]].to_numpy()
    predicted = (values == 1) | ((values == -1) if args.uncertain == "positive" else False)
    baseline = keyword_baseline([r.text for r in evaluated], findings)

    p, r, f, micro, macro = scores(truth, predicted)
    _, _, bf, bmicro, bmacro = scores(truth, baseline)
    others = [i for i, name in enumerate(findings) if name != "normal"]
    micro_abn = scores(truth[:, others], predicted[:, others])[3]
    bmicro_abn = scores(truth[:, others], baseline[:, others])[3]
    excluded = len(reports) - len(evaluated)

    lines = [
        f"IU-Xray MeSH → GK findings, {len(evaluated)} reports ({excluded} without MeSH indexing excluded, "
        f"{len(stats.skipped)} without findings/impression skipped); uncertain counted as {args.uncertain}; "
        f"`kg label` took {seconds:.1f} s (pipeline build included).",
        "",
        "| GK finding | support | precision | recall | F1 | keyword F1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for i, name in enumerate(findings):
        lines.append(f"| {name} | {int(truth[:, i].sum())} | {p[i]:.3f} | {r[i]:.3f} | {f[i]:.3f} | {bf[i]:.3f} |")
    lines += [
        f"| **micro F1** | {int(truth.sum())} | | | **{micro:.3f}** | {bmicro:.3f} |",
        f"| **macro F1** | | | | **{macro:.3f}** | {bmacro:.3f} |",
        f"| micro F1 without `normal` | {int(truth[:, others].sum())} | | | {micro_abn:.3f} | {bmicro_abn:.3f} |",
    ]
    if mapping.unmapped:
        listed = ", ".join(f"{h} ({n})" for h, n in mapping.unmapped.most_common())
        lines += ["", f"MeSH headings without a GK counterpart (ignored): {listed}."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
