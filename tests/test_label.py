"""The report labeler: CheXpert aggregation rules, label columns, outputs and IU-Xray agreement."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from kg.cli import main as kg_main
from kg.extract_graph import Mention
from kg.label import aggregate, chexpert_columns, label_columns, label_reports, label_text, label_texts
from kg.lexicon import load_lexicon
from kg.mesh import load_mesh_mapping
from kg.reports_io import read_reports

COLUMNS = label_columns()


def mention(**labels: int) -> Mention:
    return Mention("1", "x", labels)


def is_nan(value: float) -> bool:
    return isinstance(value, float) and math.isnan(value)


# ------------------------------------------------------------------------------ aggregation
def test_columns_are_the_chexpert_classes_then_the_gk_findings() -> None:
    lexicon = load_lexicon()
    assert COLUMNS[:14] == [c.name for c in lexicon.chexpert] == chexpert_columns()
    assert COLUMNS[14:] == [f"gk:{f}" for f in lexicon.gk_findings]
    assert len(COLUMNS) == 34


@pytest.mark.parametrize(
    ("values", "expected"),
    [([1], 1.0), ([0], 0.0), ([-1], -1.0), ([0, -1], -1.0), ([0, 1], 1.0), ([-1, 1], 1.0), ([0, 0], 0.0)],
)
def test_repeated_mentions_follow_the_chexpert_precedence(values: list[int], expected: float) -> None:
    labels = aggregate([mention(Edema=v) for v in values], COLUMNS)
    assert labels["Edema"] == expected


def test_unmentioned_columns_are_nan() -> None:
    labels = aggregate([mention(Edema=1)], COLUMNS)
    assert all(is_nan(labels[c]) for c in COLUMNS if c not in ("Edema", "gk:other_finding"))


def test_no_finding_is_one_only_without_positive_or_uncertain_findings() -> None:
    assert aggregate([], COLUMNS)["No Finding"] == 1.0
    assert aggregate([mention(Edema=0), mention(Pneumothorax=0)], COLUMNS)["No Finding"] == 1.0
    assert aggregate([mention(**{"Support Devices": 1})], COLUMNS)["No Finding"] == 1.0
    assert is_nan(aggregate([mention(Edema=-1)], COLUMNS)["No Finding"])
    # findings without a CheXpert class count too, like the labeler's own "no finding" phrase list
    assert is_nan(aggregate([mention(**{"gk:scoliosis": 1})], COLUMNS)["No Finding"])
    # No Finding is never 0
    for values in itertools.product([0, 1, -1], repeat=2):
        assert aggregate([mention(Edema=values[0]), mention(Atelectasis=values[1])], COLUMNS)["No Finding"] != 0.0


def test_gk_normal_counts_foreign_objects_as_findings() -> None:
    labels = aggregate([mention(**{"Support Devices": 1, "gk:foreign_object": 1})], COLUMNS)
    assert labels["No Finding"] == 1.0 and is_nan(labels["gk:normal"])
    assert aggregate([mention(**{"gk:effusion": 0})], COLUMNS)["gk:normal"] == 1.0


# ------------------------------------------------------------------------------ from text
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No effusion. Mild cardiomegaly.",
         {"Cardiomegaly": 1, "Pleural Effusion": 0, "No Finding": None, "gk:cardiomegaly": 1, "gk:effusion": 0}),
        ("Pneumothorax cannot be excluded.", {"Pneumothorax": -1, "gk:pneumothorax": -1, "No Finding": None}),
        ("No acute cardiopulmonary abnormality. Heart size is normal.",
         {"No Finding": 1, "Cardiomegaly": 0, "gk:normal": 1, "Pleural Effusion": None}),
        ("Pacemaker leads in place. The lungs are clear.",
         {"Support Devices": 1, "No Finding": 1, "gk:foreign_object": 1, "gk:normal": None}),
        ("Congestive heart failure.", {"Edema": 1, "Cardiomegaly": -1}),
        ("Pulmonary vascular congestion.", {"Edema": -1, "gk:edema": -1}),
        ("Borderline heart size.", {"Cardiomegaly": -1, "No Finding": None}),
        ("The mediastinum is widened.", {"Enlarged Cardiomediastinum": 1, "gk:other_finding": 1}),
        ("Degenerative changes of the thoracic spine.", {"gk:other_finding": 1, "No Finding": None}),
        ("Calcified granuloma in the right upper lobe.", {"gk:lesion": 1, "gk:calcinosis": 1, "Lung Lesion": 1}),
        ("Low lung volumes.", {"gk:hypoinflation": 1}),
        # Healed granulomatous disease, not an active infection.
        ("Sequela of prior granulomatous infection.", {"gk:lesion": 1, "gk:pneumonia": None, "Pneumonia": None}),
        ("Subcutaneous emphysema.", {"gk:emphysema": None, "gk:other_finding": 1}),
    ],
)
def test_label_text(text: str, expected: dict[str, int | None]) -> None:
    labels = label_text(text)
    for column, value in expected.items():
        if value is None:
            assert is_nan(labels[column]), (column, labels[column])
        else:
            assert labels[column] == value, (column, labels[column])


def test_label_texts_matches_label_text_in_chexpert_order() -> None:
    texts = ["No effusion. Mild cardiomegaly.", "Possible pneumonia.", "Normal chest."]
    array = label_texts(texts)
    assert array.shape == (3, 14) and array.dtype == np.float64
    assert set(np.unique(array[~np.isnan(array)])) <= {-1.0, 0.0, 1.0}
    for row, text in zip(array, texts):
        labels = label_text(text)
        np.testing.assert_array_equal(row, [labels[c] for c in chexpert_columns()])
    assert label_texts([]).shape == (0, 14)


def test_label_reports_from_texts_and_from_a_corpus(tmp_path: Path) -> None:
    frame = label_reports(["Mild cardiomegaly.", "No acute disease."])
    assert list(frame.columns) == ["report_id", *COLUMNS]
    assert list(frame.report_id) == ["0", "1"]
    assert frame.loc[0, "Cardiomegaly"] == 1 and frame.loc[1, "No Finding"] == 1
    corpus = tmp_path / "r.jsonl"
    corpus.write_text('{"id": "a", "text": "Small left effusion."}\n', encoding="utf-8")
    frame = label_reports(corpus)
    assert frame.loc[0, "report_id"] == "a" and frame.loc[0, "Pleural Effusion"] == 1


def test_cli_label_writes_csv_with_blanks_and_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "notes.txt"
    corpus.write_text("Mild cardiomegaly. No effusion.\nPossible pneumonia.\n", encoding="utf-8")
    csv_out = tmp_path / "labels.csv"
    assert kg_main(["label", "--input", str(corpus), "--out", str(csv_out)]) == 0
    first_row = csv_out.read_text(encoding="utf-8").splitlines()[1].split(",")
    assert first_row[0] == "notes:1"
    assert first_row[1 + COLUMNS.index("Cardiomegaly")] == "1"
    assert first_row[1 + COLUMNS.index("Pleural Effusion")] == "0"
    assert first_row[1 + COLUMNS.index("Fracture")] == ""
    parquet_out = tmp_path / "labels.parquet"
    assert kg_main(["label", "--input", str(corpus), "--out", str(parquet_out)]) == 0
    frame = pd.read_parquet(parquet_out)
    assert frame.loc[1, "Pneumonia"] == -1 and len(frame) == 2
    assert kg_main(["label", "--input", str(corpus), "--out", str(tmp_path / "labels.xlsx")]) == 1
    assert "csv or .parquet" in capsys.readouterr().err


# --------------------------------------------------------------------------- IU-Xray MeSH
@pytest.mark.needs_shared
def test_agreement_with_iu_xray_mesh_on_300_reports(iu_xray_reports: Path) -> None:
    """Measured micro-F1 on these reports is 0.909 (benchmarks/eval_iu_labels.py --limit 300)."""
    mapping = load_mesh_mapping()
    reports = list(itertools.islice(read_reports(iu_xray_reports, "iu-xray-csv"), 300))
    truth = {r.report_id: mapping.findings_of(r.extra["MeSH"]) for r in reports}
    reports = [r for r in reports if truth[r.report_id] is not None]
    frame = label_reports(reports)
    findings = list(load_lexicon().gk_findings)
    expected = np.array([[f in truth[r.report_id] for f in findings] for r in reports])
    values = frame[[f"gk:{f}" for f in findings]].to_numpy()
    predicted = (values == 1) | (values == -1)
    assert f1_score(expected, predicted, average="micro") >= 0.87
