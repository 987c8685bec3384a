"""Long reports: annotated in parts of whole sentences, with the same result as annotated whole.

The time bound itself is checked by ``benchmarks/bench_long_report.py``; these tests check what
makes the cost linear (ConText never sees more than a part) and that nothing changes for it.
"""
from __future__ import annotations

import pytest

from kg.extract import cached_extractor
from kg.extract_graph import build_graph
from kg.label import label_text
from kg.long_reports import PART_TOKENS, annotate_in_parts, sentence_parts

SENTENCES = (
    "The heart is normal in size. No pleural effusion or pneumothorax. Possible small left pleural "
    "effusion. Mild atelectasis at the right lung base, which may represent pneumonia. "
    "Degenerative changes of the thoracic spine.\n\nNo focal airspace consolidation; no edema. "
)


@pytest.fixture(scope="module")
def nlp():
    return cached_extractor("rules")._nlp


def annotation(doc, nlp) -> tuple:
    words, entities, mentions = build_graph(doc, nlp)
    return (
        [(s.start, s.end) for s in doc.sents],
        [(e.start_ix, e.end_ix, e.label, sorted(e.relations)) for e in entities],
        [(m.entity_id, sorted(m.labels.items())) for m in mentions],
    )


def prepared(nlp, text: str):
    """A doc as ReportNLP.pipe has it before entities: tokens and sentence starts."""
    doc = nlp.nlp.make_doc(text)
    nlp.sentencizer(doc)
    from kg.extract_pipeline import _fix_sentence_starts

    _fix_sentence_starts(doc)
    return doc


def test_parts_give_the_annotation_of_the_whole_doc(nlp) -> None:
    text = SENTENCES * 6
    whole, in_parts = prepared(nlp, text), prepared(nlp, text)
    annotate_in_parts(whole, nlp._annotate, part_tokens=len(whole))
    annotate_in_parts(in_parts, nlp._annotate, part_tokens=40)
    assert annotation(in_parts, nlp) == annotation(whole, nlp)
    negated = [e.text for e in in_parts.ents if e._.is_negated]
    uncertain = [e.text for e in in_parts.ents if e._.is_uncertain]
    assert negated and uncertain and all(e._.kg_term is not None for e in in_parts.ents)


def test_parts_are_whole_sentences_and_cover_the_doc(nlp) -> None:
    doc = prepared(nlp, SENTENCES * 4 + "word " * 90)  # ends in a 90-token "sentence"
    parts = list(sentence_parts(doc, 30))
    assert parts[0][0] == 0 and parts[-1][1] == len(doc)
    assert all(end == next_start for (_, end), (next_start, _) in zip(parts, parts[1:]))
    assert all(0 < end - start <= 30 for start, end in parts)
    starts = {s.start for s in doc.sents}
    long_sentence = max(doc.sents, key=len)
    for start, _ in parts:
        assert start in starts or long_sentence.start < start < long_sentence.end


def test_context_never_sees_more_than_a_part_of_a_long_report(nlp, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    annotate = nlp._annotate

    def counting(doc) -> None:
        seen.append(len(doc))
        annotate(doc)

    monkeypatch.setattr(nlp, "_annotate", counting)
    text = SENTENCES * 60  # about 20 KB, some 4,000 tokens
    doc = next(nlp.pipe([text]))
    assert len(doc) > 4 * PART_TOKENS
    assert len(seen) >= 4 and max(seen) <= PART_TOKENS and sum(seen) == len(doc)


def test_a_long_report_is_labelled_like_one_copy_of_it() -> None:
    once = label_text(SENTENCES)
    assert once["Atelectasis"] == 1 and once["Pleural Effusion"] == -1 and once["Pneumothorax"] == 0
    many = label_text(SENTENCES * 120)  # about 40 KB, annotated in parts
    assert {k: v for k, v in many.items() if v == v} == {k: v for k, v in once.items() if v == v}


def test_iu_xray_csv_reads_fields_longer_than_the_csv_module_default(tmp_path) -> None:
    from kg.reports_io import read_reports

    findings = SENTENCES.replace("\n\n", " ") * 800  # about 260 KB, twice csv's default limit
    path = tmp_path / "reports.csv"
    path.write_text(f'uid,findings,impression\n1,"{findings}",Normal.\n', encoding="utf-8")
    (report,) = read_reports(path)
    assert report.sections["findings"] == findings.strip()
