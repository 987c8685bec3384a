"""Reading report corpora: IU-Xray CSV, MIMIC-CXR style text, JSONL and plain text."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kg.errors import InputError
from kg.reports_io import ReadStats, detect_report_format, join_sentences, read_reports, report_text, split_sections

IU_HEADER = "uid,MeSH,Problems,image,indication,comparison,findings,impression\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ IU-Xray CSV
def test_iu_csv_joins_findings_and_impression_as_sentences(tmp_path: Path) -> None:
    csv = write(
        tmp_path / "iu.csv",
        IU_HEADER
        + '7,Cardiomegaly/mild,Cardiomegaly,PA,Dyspnea.,None.,"Heart is enlarged, no effusion",Mild cardiomegaly.\n'
        + "8,normal,normal,PA,,,,No acute disease.\n",
    )
    reports = list(read_reports(csv))
    assert [r.report_id for r in reports] == ["7", "8"]
    # The findings lack a final period: one is added so the impression starts a new sentence.
    assert reports[0].text == "Heart is enlarged, no effusion.\n\nMild cardiomegaly."
    assert reports[0].extra["MeSH"] == "Cardiomegaly/mild"
    assert reports[0].sections["indication"] == "Dyspnea."
    assert reports[1].text == "No acute disease."


def test_iu_csv_report_without_text_is_skipped_and_counted_or_rejected(tmp_path: Path) -> None:
    csv = write(tmp_path / "iu.csv", IU_HEADER + "1,normal,normal,PA,,,,\n2,normal,normal,PA,,,No effusion.,\n")
    stats = ReadStats()
    assert [r.report_id for r in read_reports(csv, stats=stats)] == ["2"]
    assert stats.skipped == ["1"] and stats.read == 1
    with pytest.raises(InputError) as err:
        list(read_reports(csv, on_empty="error"))
    assert err.value.file == str(csv) and err.value.record == "1" and err.value.field == "text"


def test_iu_csv_missing_column_names_file_and_column(tmp_path: Path) -> None:
    csv = write(tmp_path / "iu.csv", "uid,MeSH,findings\n1,normal,No effusion.\n")
    with pytest.raises(InputError) as err:
        list(read_reports(csv))
    assert err.value.field == "impression"
    assert str(csv) in str(err.value)


@pytest.mark.parametrize("content", ["", IU_HEADER])
def test_iu_csv_empty_file_or_header_only_is_an_error(tmp_path: Path, content: str) -> None:
    csv = write(tmp_path / "iu.csv", content)
    with pytest.raises(InputError, match=str(csv)):
        list(read_reports(csv))


def test_iu_csv_duplicate_or_empty_uid_is_an_error(tmp_path: Path) -> None:
    dup = write(tmp_path / "dup.csv", IU_HEADER + "5,,,,,,A.,B.\n5,,,,,,C.,D.\n")
    with pytest.raises(InputError) as err:
        list(read_reports(dup))
    assert err.value.record == "5" and err.value.field == "id"
    empty = write(tmp_path / "empty.csv", IU_HEADER + ",,,,,,A.,B.\n")
    with pytest.raises(InputError) as err:
        list(read_reports(empty))
    assert err.value.record == "line 2" and err.value.field == "uid"


def test_iu_csv_row_with_too_many_fields_names_the_record(tmp_path: Path) -> None:
    csv = write(tmp_path / "iu.csv", IU_HEADER + "3,normal,normal,PA,,,A.,B.,extra\n")
    with pytest.raises(InputError) as err:
        list(read_reports(csv))
    assert err.value.record == "3"


# ------------------------------------------------------------------------------ MIMIC txt
MIMIC_REPORT = """\
                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  Cough.

 FINDINGS:
 The heart is mildly enlarged.  There is no pleural
 effusion.

 IMPRESSION:
 Mild cardiomegaly.
"""


def test_mimic_directory_tree_ids_are_file_stems_and_sections_are_split(tmp_path: Path) -> None:
    write(tmp_path / "p10" / "p100" / "s2.txt", MIMIC_REPORT)
    write(tmp_path / "p10" / "p101" / "s1.txt", "FINDINGS: Lungs are clear.\n")
    reports = list(read_reports(tmp_path))
    assert [r.report_id for r in reports] == ["s2", "s1"]  # sorted by path: p100 before p101
    first = reports[0]
    assert first.sections["indication"] == "Cough."
    assert first.sections["examination"] == "CHEST (PA AND LAT)"
    assert first.text.startswith("The heart is mildly enlarged.")
    assert first.text.endswith("\n\nMild cardiomegaly.")
    assert "Cough" not in first.text
    assert reports[1].text == "Lungs are clear."


def test_mimic_fallback_is_last_paragraph_unless_it_is_a_request_section(tmp_path: Path) -> None:
    no_findings = "EXAMINATION: Chest.\n\nINDICATION: Fever.\n\nCOMPARISON: None.\n\nLungs are clear.\n\nNo effusion seen.\n"
    report = next(read_reports(write(tmp_path / "a.txt", no_findings), "mimic-txt"))
    assert report.text == "No effusion seen."
    only_request = write(tmp_path / "b" / "c.txt", "INDICATION: Fever.\n\nCOMPARISON: None.\n")
    stats = ReadStats()
    assert list(read_reports(only_request.parent, "mimic-txt", stats=stats)) == []
    assert stats.skipped == ["c"]


def test_report_without_headers_is_used_whole() -> None:
    assert report_text({}, "  Mild cardiomegaly. No effusion.  ") == "Mild cardiomegaly. No effusion."


def test_split_sections_merges_aliases_and_accepts_known_names_in_any_case() -> None:
    sections = split_sections("History: cough\nFindings: Clear lungs.\nIMPRESSIONS: Normal.\nCONCLUSION: No change.")
    assert sections == {"history": "cough", "findings": "Clear lungs.", "impression": "Normal.\n\nNo change."}
    # A title-case word before a colon that is not a section name stays text.
    assert split_sections("Heart: normal size.") == {}


def test_split_sections_finds_known_headers_mid_line_in_flattened_reports() -> None:
    text = "FINDINGS: Clear lungs. IMPRESSION: No acute disease. Follow-up NOTE: none."
    sections = split_sections(text)
    # "NOTE:" is no known section, so it stays inside the impression.
    assert sections == {"findings": "Clear lungs.", "impression": "No acute disease. Follow-up NOTE: none."}
    assert report_text(sections, text) == "Clear lungs.\n\nNo acute disease. Follow-up NOTE: none."
    # Mid-line, a header must follow a sentence end: "see IMPRESSION: ..." is text.
    assert split_sections("FINDINGS: see IMPRESSION: below.") == {"findings": "see IMPRESSION: below."}


def test_join_sentences_adds_only_missing_periods() -> None:
    assert join_sentences(["No effusion", "Normal heart."]) == "No effusion.\n\nNormal heart."
    assert join_sentences(["Clear lungs;", "Normal?"]) == "Clear lungs;\n\nNormal?"


# ---------------------------------------------------------------------------------- JSONL
def test_jsonl_accepts_id_or_report_id_and_keeps_other_keys(tmp_path: Path) -> None:
    lines = [{"id": "a", "text": "No effusion.", "split": "test"}, {"report_id": 9, "text": "FINDINGS: Clear.\nIMPRESSION: Normal."}]
    path = write(tmp_path / "r.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    reports = list(read_reports(path))
    assert [r.report_id for r in reports] == ["a", "9"]
    assert reports[0].extra["split"] == "test"
    assert reports[1].text == "Clear.\n\nNormal."


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"id": "a", "text": "ok"', None),
        ('{"text": "no id"}', "id"),
        ('{"id": "", "text": "empty id"}', "id"),
        ('{"id": "a"}', "text"),
        ('{"id": "a", "text": 5}', "text"),
        ("[1, 2]", None),
    ],
)
def test_jsonl_bad_line_names_file_line_and_field(tmp_path: Path, line: str, field: str | None) -> None:
    path = write(tmp_path / "r.jsonl", '{"id": "x", "text": "fine"}\n' + line + "\n")
    with pytest.raises(InputError) as err:
        list(read_reports(path))
    assert err.value.file == str(path)
    assert err.value.record == "line 2"
    assert err.value.field == field


def test_jsonl_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id": "a", "text": "caf\xe9"}\n')
    with pytest.raises(InputError, match="UTF-8"):
        list(read_reports(path))


# ----------------------------------------------------------------------------- plain text
def test_text_file_is_one_report_per_non_empty_line(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.txt", "No effusion.\n\n  Mild cardiomegaly.  \n")
    reports = list(read_reports(path))
    assert [(r.report_id, r.text) for r in reports] == [("notes:1", "No effusion."), ("notes:3", "Mild cardiomegaly.")]


def test_text_directory_is_one_report_per_file(tmp_path: Path) -> None:
    write(tmp_path / "b.txt", "Clear lungs.\nNo effusion.\n")
    write(tmp_path / "a.txt", "Normal.\n")
    reports = list(read_reports(tmp_path, "text"))
    assert [(r.report_id, r.text) for r in reports] == [("a", "Normal."), ("b", "Clear lungs.\nNo effusion.")]


def test_empty_text_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.txt", "\n\n")
    with pytest.raises(InputError, match="no reports found"):
        list(read_reports(path))


def test_deidentification_tokens_are_kept_verbatim(tmp_path: Path) -> None:
    path = write(tmp_path / "r.txt", "Normal chest x-XXXX. XXXX XXXX XXXX.\n")
    assert next(read_reports(path)).text == "Normal chest x-XXXX. XXXX XXXX XXXX."


# ------------------------------------------------------------------------------- formats
def test_auto_format_detection(tmp_path: Path) -> None:
    assert detect_report_format(write(tmp_path / "a.csv", IU_HEADER)) == "iu-xray-csv"
    assert detect_report_format(write(tmp_path / "a.jsonl", "{}")) == "jsonl"
    assert detect_report_format(write(tmp_path / "m.txt", MIMIC_REPORT)) == "mimic-txt"
    assert detect_report_format(write(tmp_path / "t.txt", "No effusion.\n")) == "text"
    assert detect_report_format(tmp_path) == "mimic-txt"


def test_unknown_format_or_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown input format"):
        list(read_reports(tmp_path, "pdf"))
    with pytest.raises(InputError, match="no such file"):
        list(read_reports(tmp_path / "missing.csv"))
