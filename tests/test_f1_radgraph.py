"""F1-RadGraph (RG_E, RG_ER, RG_ER-bar): hand-computed cases, annotation files and the evaluation table."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kg.errors import InputError
from kg.records import Entity, ReportRecord
from pipelines.metrics.radgraph import (
    f1_radgraph,
    f1_radgraph_from_texts,
    f1_radgraph_table,
    generation_f1_radgraph,
    match_annotations,
    read_annotations,
    report_scores,
)

FIXTURES = Path(__file__).parent / "fixtures" / "radgraph_xl"


def report(*entities: tuple) -> ReportRecord:
    """A record from ``(id, tokens, label, [(relation, target id), ...])`` tuples (spans unused here)."""
    return ReportRecord("r", "unused", {eid: Entity(eid, tokens, label, 0, 0, list(rels))
                                        for eid, tokens, label, rels in entities})


# Reference: effusion located_at pleural; absent pneumothorax.
REF_A = report(("1", "Effusion", "OBS-DP", [("located_at", "2")]), ("2", "pleural", "ANAT-DP", []),
               ("3", "pneumothorax", "OBS-DA", []))
# Generated: the same entities but no relation, edema instead of pneumothorax, effusion twice.
HYP_A = report(("1", "effusion", "OBS-DP", []), ("2", "pleural", "ANAT-DP", []), ("3", "edema", "OBS-DP", []),
               ("4", "EFFUSION", "OBS-DP", []))
# Reference: small effusion located_at pleural. Generated: effusion located_at lung.
REF_B = report(("1", "effusion", "OBS-DP", [("located_at", "2")]), ("2", "pleural", "ANAT-DP", []),
               ("3", "small", "OBS-DP", [("modify", "1")]))
HYP_B = report(("1", "effusion", "OBS-DP", [("located_at", "2")]), ("2", "lung", "ANAT-DP", []))
# No relations at all: the three scores coincide.
REF_C = report(("1", "cardiomegaly", "OBS-DP", []), ("2", "edema", "OBS-DA", []))
HYP_C = report(("1", "cardiomegaly", "OBS-DP", []))


def test_entities_without_relations_miss_the_relation_levels() -> None:
    # RG_E: {effusion, pleural, pneumothorax} vs {effusion, pleural, edema}: 2 shared of 3 each.
    # RG_ER: the reference's effusion is (effusion, OBS-DP, True); only pleural is shared: 1/3, 1/3.
    # RG_ER-bar: the reference's effusion is (effusion, OBS-DP, located_at, pleural): 1/3, 1/3.
    assert report_scores(HYP_A, REF_A) == pytest.approx({"RG_E": 2 / 3, "RG_ER": 1 / 3, "RG_ER_bar": 1 / 3})


def test_a_wrong_relation_target_counts_only_at_the_complete_level() -> None:
    # RG_E: {effusion, lung} vs {effusion, pleural, small}: P 1/2, R 1/3, F1 = 2(1/6)/(5/6) = 0.4.
    # RG_ER: (effusion, True) is shared (both have a relation), lung vs pleural/small not: 0.4.
    # RG_ER-bar: (effusion, located_at, lung) vs (effusion, located_at, pleural): nothing shared.
    assert report_scores(HYP_B, REF_B) == pytest.approx({"RG_E": 0.4, "RG_ER": 0.4, "RG_ER_bar": 0.0})


def test_reports_without_relations_score_the_same_at_every_level() -> None:
    # P 1/1, R 1/2: F1 = 2/3 at all three levels.
    assert report_scores(HYP_C, REF_C) == pytest.approx(dict.fromkeys(("RG_E", "RG_ER", "RG_ER_bar"), 2 / 3))
    assert report_scores(REF_C, REF_C) == dict.fromkeys(("RG_E", "RG_ER", "RG_ER_bar"), 1.0)


def test_labels_must_agree_as_written() -> None:
    uncertain = report(("1", "cardiomegaly", "OBS-U", []))
    xl = report(("1", "cardiomegaly", "OBS-DP", []))
    xl.entities["1"].source_label = "Observation::definitely present"
    assert report_scores(uncertain, HYP_C)["RG_E"] == 0.0
    assert report_scores(xl, HYP_C)["RG_E"] == 0.0  # a package label never matches a coarse one
    assert report_scores(xl, xl)["RG_E"] == 1.0
    # Two annotators with different label sets are compared on the coarse labels.
    assert report_scores(xl, HYP_C, labels="coarse")["RG_E"] == 1.0
    assert report_scores(uncertain, HYP_C, labels="coarse")["RG_E"] == 0.0
    with pytest.raises(InputError, match="unknown label set 'xl'"):
        report_scores(xl, HYP_C, labels="xl")


def test_empty_reports_and_reports_without_entities_score_zero() -> None:
    nothing = report()
    zero = dict.fromkeys(("RG_E", "RG_ER", "RG_ER_bar"), 0.0)
    assert report_scores(None, REF_A) == report_scores(HYP_A, None) == zero
    assert report_scores(nothing, REF_A) == report_scores(HYP_A, nothing) == zero
    assert report_scores(nothing, nothing) == zero  # as the package: not 1, though the two agree


def test_corpus_figures_are_the_mean_over_all_pairs_empty_ones_included() -> None:
    result = f1_radgraph([HYP_A, HYP_B, None], [REF_A, REF_B, REF_C])
    assert result["n"] == 3 and result["annotator"] == "motor-kg rules annotator"
    assert result["RG_E"] == pytest.approx((2 / 3 + 0.4 + 0) / 3)
    assert result["RG_ER"] == pytest.approx((1 / 3 + 0.4 + 0) / 3)
    assert result["RG_ER_bar"] == pytest.approx((1 / 3 + 0 + 0) / 3)
    assert result["per_report"]["RG_ER_bar"] == pytest.approx([1 / 3, 0.0, 0.0])
    with pytest.raises(InputError, match="2 generated reports for 1 references"):
        f1_radgraph([HYP_A, HYP_B], [REF_A])


def test_rules_annotator_scores_texts() -> None:
    text = "Small left pleural effusion. No pneumothorax."
    result = f1_radgraph_from_texts([text, "", "Heart size is normal."], [text, text, ""])
    assert result["per_report"] == {name: [1.0, 0.0, 0.0] for name in ("RG_E", "RG_ER", "RG_ER_bar")}
    assert result["annotator"] == "motor-kg rules annotator"


# ---------------------------------------------------------------------- package annotations
def texts(path: Path) -> list[str]:
    return [record.text for record in read_annotations(path).values()]


def test_package_annotations_are_matched_by_position_or_study_id(tmp_path: Path) -> None:
    references = texts(FIXTURES / "batch.json")
    studies = ["s10", "s11", "s12"]
    # Positions: the package's own keys, in the evaluation's study order, either layout.
    result = generation_f1_radgraph(references, references, studies,
                                    (FIXTURES / "per_report.json", FIXTURES / "batch.json"))
    assert (result["RG_E"], result["RG_ER"], result["RG_ER_bar"]) == (1.0, 1.0, 1.0)
    assert result["annotator"] == "radgraph package annotations" and result["n"] == 3
    # Study ids, in any order; the texts may differ in spacing and punctuation from the package's.
    document = json.loads((FIXTURES / "batch.json").read_text(encoding="utf-8"))
    by_study = tmp_path / "by_study.json"
    by_study.write_text(json.dumps({"s12": document["2"], "s10": document["0"], "s11": document["1"]}))
    loose = [text.replace(" .", ".").replace(" ,", ",") for text in references]
    records = match_annotations(read_annotations(by_study), studies, loose, file=by_study, what="generated")
    assert [r.report_id for r in records] == studies


def test_annotation_errors_name_the_file_and_the_report(tmp_path: Path) -> None:
    references = texts(FIXTURES / "batch.json")
    hyps, refs = FIXTURES / "per_report.json", FIXTURES / "batch.json"
    with pytest.raises(InputError, match="3 annotations keyed by position for 4 studies") as err:
        generation_f1_radgraph([*references, "x"], [*references, "x"], ["s0", "s1", "s2", "s3"], (hyps, refs))
    assert err.value.file == str(hyps)
    document = json.loads(refs.read_text(encoding="utf-8"))
    by_study = tmp_path / "by_study.json"
    by_study.write_text(json.dumps({"s0": document["0"], "s1": document["1"], "s9": document["2"]}))
    with pytest.raises(InputError, match="no annotation for 1 of 3 studies \\('s2'\\); key the reference") as err:
        generation_f1_radgraph(references, references, ["s0", "s1", "s2"], (hyps, by_study))
    assert (err.value.file, err.value.field) == (str(by_study), "id")
    swapped = [references[1], references[0], references[2]]
    with pytest.raises(InputError, match="not the generated report of study 's0'") as err:
        generation_f1_radgraph(swapped, references, ["s0", "s1", "s2"], (hyps, refs))
    assert (err.value.file, err.value.record, err.value.field) == (str(hyps), "0", "text")
    # Reports the annotations do not cover (beam search, a baseline) are left out, not mis-scored.
    assert generation_f1_radgraph(swapped, references, ["s0", "s1", "s2"], (hyps, refs), required=False) is None
    with pytest.raises(InputError, match="not the reference report of study 's0'"):
        generation_f1_radgraph(references, swapped, ["s0", "s1", "s2"], (hyps, refs))
    broken = shutil.copy(hyps, tmp_path / "broken.json")
    Path(broken).write_text(Path(broken).read_text().replace('"Anatomy::uncertain"', '"Anatomy::possible"'))
    with pytest.raises(InputError, match="unknown label 'Anatomy::possible'") as err:
        generation_f1_radgraph(references, references, ["s0", "s1", "s2"], (broken, refs), required=False)
    assert (err.value.record, err.value.field) == ("0", "entities.6.label")


def test_table_names_the_annotator_and_leaves_out_unscored_rows() -> None:
    rules = {"RG_E": 0.5, "RG_ER": 0.25, "RG_ER_bar": 0.125, "annotator": "motor-kg rules annotator", "n": 2}
    table = f1_radgraph_table({"greedy": rules, "most frequent report": {**rules, "RG_E": 0.75}})
    assert table.startswith("F1-RadGraph (motor-kg rules annotator): ")
    assert "| greedy | 0.500 | 0.250 | 0.125 |" in table and "| most frequent report | 0.750 |" in table
    assert "|  | RG_E | RG_ER | RG_ER-bar |" in table
    package = {**rules, "annotator": "radgraph package annotations"}
    table = f1_radgraph_table({"greedy": package, "beam search (3)": None})
    assert table.startswith("F1-RadGraph (radgraph package annotations): ")
    assert "| beam search (3) | – | – | – |" in table and "greedy reports only" in table
    assert f1_radgraph_table({"greedy": None}) == ""


def test_demo_summary_reports_f1_radgraph_beside_clinical_efficacy() -> None:
    from pipelines.demo import _task_rows

    def row(score: float) -> dict:
        return {"CIDEr": 0.1, "BLEU-4": 0.1, "clinical_efficacy": {"uncertain_negative": {"f1_micro": 0.2}},
                "f1_radgraph": {"RG_E": score, "RG_ER": score / 2, "RG_ER_bar": score / 4,
                                "annotator": "motor-kg rules annotator", "n": 2}}

    rows = _task_rows("generation", {"test": {"greedy": row(0.4), "most_frequent_report": row(0.8)}})
    radgraph = [(r["metric"], r["motor"], r["baseline"]) for r in rows if r["metric"].startswith("F1-RadGraph")]
    assert radgraph == [("F1-RadGraph RG_E (greedy; motor-kg rules annotator)", 0.4, 0.8),
                        ("F1-RadGraph RG_ER (greedy; motor-kg rules annotator)", 0.2, 0.4),
                        ("F1-RadGraph RG_ER-bar (greedy; motor-kg rules annotator)", 0.1, 0.2)]
    assert [r["metric"] for r in rows].index(radgraph[0][0]) > [r["metric"] for r in rows].index(
        "CE micro F1 (greedy, uncertain negative)")
