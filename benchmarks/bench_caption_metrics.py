"""Caption metrics on real reports: Python vs. Stanford (Java) PTB tokenisation, and scoring time.

Reads a CSV of radiology reports (columns ``findings`` and ``impression`` at least), and prints

* the share of texts, per column, whose pure-Python tokenisation (``pipelines.metrics.ptb``)
  equals the Stanford CoreNLP tokenizer's that pycocoevalcap runs, and the most frequent
  differences;
* BLEU-1..4, ROUGE-L and CIDEr of a fixed pseudo-prediction set (each report's findings scored
  against the next report's findings) under both tokenisations, and their difference;
* wall time of :func:`pipelines.metrics.caption_metrics` with and without METEOR 1.5.

Needs Java for the Stanford side. Usage::

    python benchmarks/bench_caption_metrics.py REPORTS.csv
"""
from __future__ import annotations

import argparse
import collections
import difflib
import shutil
import sys
import time

import pandas as pd

from pipelines.metrics import caption_metrics
from pipelines.metrics.ptb import ptb_tokenize, ptb_tokenize_java

COLUMNS = ("findings", "impression", "indication")


def differences(java: list[str], python: list[str]) -> collections.Counter:
    """Counts of ``(java tokens, python tokens)`` spans that differ."""
    counts: collections.Counter = collections.Counter()
    for a, b in zip(java, python):
        if a == b:
            continue
        left, right = a.split(), b.split()
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=left, b=right, autojunk=False).get_opcodes():
            if op != "equal":
                counts[(" ".join(left[i1:i2]), " ".join(right[j1:j2]))] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", help="CSV with findings / impression columns")
    parser.add_argument("--show", type=int, default=10, help="most frequent differences to print")
    args = parser.parse_args()
    if shutil.which("java") is None:
        print("needs a Java runtime for the Stanford tokenizer and METEOR 1.5", file=sys.stderr)
        return 1
    frame = pd.read_csv(args.reports)

    print("tokenisation agreement (identical token sequence per text):")
    all_diffs: collections.Counter = collections.Counter()
    for column in COLUMNS:
        texts = frame[column].dropna().astype(str).tolist()
        java, python = ptb_tokenize_java(texts), [ptb_tokenize(t) for t in texts]
        same = sum(a == b for a, b in zip(java, python))
        tokens = sum(len(a.split()) for a in java)
        all_diffs += differences(java, python)
        print(f"  {column:<11} {same}/{len(texts)} texts = {same / len(texts):.2%}  ({tokens} Java tokens)")
    print(f"most frequent differences (java | python), top {args.show}:")
    for (java_span, python_span), count in all_diffs.most_common(args.show):
        print(f"  {count:>4}  {java_span!r} | {python_span!r}")

    findings = frame["findings"].dropna().astype(str).tolist()
    predictions, references = findings[:-1], findings[1:]
    print(f"\npseudo-predictions: {len(predictions)} findings scored against the next report's findings")
    scores = {}
    for tokenizer in ("python", "java"):
        start = time.perf_counter()
        scores[tokenizer] = caption_metrics(predictions, references, tokenizer=tokenizer, meteor="off")
        print(f"  tokenizer={tokenizer:<6} {time.perf_counter() - start:6.1f} s without METEOR")
    names = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr")
    print("  metric    python    java      difference")
    for name in names:
        a, b = scores["python"][name], scores["java"][name]
        print(f"  {name:<8} {a:.5f}  {b:.5f}  {a - b:+.5f}")
    start = time.perf_counter()
    with_meteor = caption_metrics(predictions, references, meteor="java")
    print(f"  METEOR 1.5 = {with_meteor['METEOR']:.5f}; all metrics with METEOR: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
