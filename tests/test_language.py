"""Reports not in English are skipped with a count and a warning (``--strict``: an error)."""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from kg.cli import main
from kg.errors import InputError
from kg.language import is_english, not_english_reason
from kg.reports_io import ReadStats, read_reports

ENGLISH = [
    "No acute cardiopulmonary process.",
    "Cardiomegaly.",
    "Heart size normal. Lungs clear. XXXX XXXX.",
    "Status post CABG. Sternotomy wires intact. No pleural effusion per se.",
    "Possible pneumonia.",
    "Gross cardiomegaly.",
    "Total lung collapse.",
    "Swan-Ganz catheter in place.",
    "The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary edema.",
]
FOREIGN = [
    "Kein Pneumothorax. Kein Erguss.",
    "Kein Nachweis eines Pneumothorax. Herz normal gross.",
    "右侧胸腔积液。心影增大。",
    "Sin derrame pleural.",
    "Pas d'épanchement pleural.",
    "Geen pneumothorax.",
]


@pytest.mark.parametrize("text", ENGLISH)
def test_short_and_telegraphic_english_reports_are_english(text: str) -> None:
    assert is_english(text), not_english_reason(text)


@pytest.mark.parametrize("text", FOREIGN)
def test_reports_in_other_languages_are_not(text: str) -> None:
    assert not is_english(text)


def test_iu_xray_development_reports_are_all_english(iu_xray_reports: Path) -> None:
    stats = ReadStats()
    reports = list(read_reports(iu_xray_reports, stats=stats))
    assert len(reports) > 2000 and stats.not_english == []


def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "reports.csv"
    path.write_text(
        "uid,findings,impression\n"
        "en1,No pleural effusion.,No acute cardiopulmonary process.\n"
        "de1,Kein Pneumothorax. Kein Erguss.,Herz normal gross.\n"
        "en2,Mild cardiomegaly.,\n",
        encoding="utf-8",
    )
    return path


def test_reader_skips_counts_or_rejects(tmp_path: Path) -> None:
    path = corpus(tmp_path)
    stats = ReadStats()
    assert [r.report_id for r in read_reports(path, stats=stats)] == ["en1", "en2"]
    assert stats.not_english == ["de1"] and stats.read == 2
    assert [r.report_id for r in read_reports(path, on_not_english="keep")] == ["en1", "de1", "en2"]
    with pytest.raises(InputError, match=r"record de1: field 'text': not English \(function words .*kein"):
        list(read_reports(path, on_not_english="error"))


def test_kg_label_skips_a_german_report_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "labels.csv"
    assert main(["label", "--input", str(corpus(tmp_path)), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "warning: skipped 1 reports not in English (de1)" in captured.err
    assert [line.split(",")[0] for line in out.read_text(encoding="utf-8").splitlines()[1:]] == ["en1", "en2"]

    assert main(["label", "--input", str(corpus(tmp_path)), "--out", str(out), "--strict"]) == 1
    assert "record de1" in capsys.readouterr().err


def test_kg_extract_and_build_skip_it_too(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "radgraph.json"
    assert main(["extract", "--input", str(corpus(tmp_path)), "--out", str(out)]) == 0
    assert sorted(json.loads(out.read_text(encoding="utf-8"))) == ["en1", "en2"]
    assert "skipped 1 reports not in English" in capsys.readouterr().err

    store = tmp_path / "reports.duckdb"
    assert main(["build", "--source", "reports", "--input", str(corpus(tmp_path)), "--out", str(store),
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 reports not in English (de1)" in captured.err
    con = duckdb.connect(str(store), read_only=True)
    try:
        assert [r[0] for r in con.execute("SELECT report_id FROM reports ORDER BY report_id").fetchall()] == ["en1", "en2"]
    finally:
        con.close()
    assert main(["build", "--source", "reports", "--input", str(corpus(tmp_path)), "--out", str(store),
                 "--no-progress", "--strict"]) == 1
    assert "not English" in capsys.readouterr().err
