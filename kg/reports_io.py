"""Reading radiology report corpora: IU-Xray CSV, MIMIC-CXR style text files, JSONL and plain text.

Every reader yields :class:`RawReport` records with the same fields, so extraction and labelling
do not care where a report came from. Supported inputs (``input_format``):

* ``iu-xray-csv``: the IU-Xray report table with columns ``uid, findings, impression`` (and any of
  ``MeSH, Problems, image, indication, comparison``, kept in :attr:`RawReport.extra`).
* ``mimic-txt``: one report per ``.txt`` file, a single file or a directory tree searched
  recursively; the report id is the file stem (``s50414267``). Sections are found from upper-case
  headers such as ``FINDINGS:`` and ``IMPRESSION:`` at a line start, or mid-line after a sentence
  end for known section names (reports flattened to one line).
* ``jsonl``: one JSON object per line with ``id`` (or ``report_id``) and ``text``; other keys go to
  :attr:`RawReport.extra`.
* ``text``: a file with one report per non-empty line (id ``<file stem>:<line number>``), or a
  directory with one report per ``.txt`` file.

``auto`` picks the format from the path: a directory is ``mimic-txt``, ``.csv`` is ``iu-xray-csv``,
``.jsonl``/``.ndjson`` is ``jsonl``; any other file is ``mimic-txt`` when a line starts with a known
section header and ``text`` otherwise.

The text used downstream (:attr:`RawReport.text`) is the findings section followed by the
impression. When a report has section headers but neither of these two, the last paragraph of the
report is used (the convention of the MIMIC-CXR section parser), unless that paragraph opens a
non-diagnostic section (indication, history, comparison, technique). A report without any header
is used whole.
Reports left without text are skipped and counted in :class:`ReadStats`, or rejected with
``on_empty="error"``; so are reports whose text is not English (:mod:`kg.language`,
``on_not_english``).
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kg.errors import InputError
from kg.input_files import require_file, utf8_fault
from kg.language import not_english_reason

INPUT_FORMATS = ("auto", "iu-xray-csv", "mimic-txt", "jsonl", "text")

IU_XRAY_REQUIRED = ("uid", "findings", "impression")
#: Longest CSV field read, in characters (Python's csv module stops at 128 KiB by default); the
#: extractor takes reports of this length too (:data:`kg.long_reports.MAX_REPORT_CHARS`).
MAX_CSV_FIELD_CHARS = 8 << 20

# Header spellings mapped to one section name; headers not listed keep their own lower-case name.
SECTION_ALIASES = {
    "finding": "findings",
    "findings": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "indications": "indication",
    "clinical indication": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "clinical history": "history",
    "comparisons": "comparison",
    "exam": "examination",
}
# Sections that describe the request or the acquisition, never the image: the last-paragraph
# fallback does not take text from them.
NON_DIAGNOSTIC_SECTIONS = frozenset(
    {"indication", "history", "comparison", "technique", "examination", "procedure", "notification", "wet read"}
)
_HEADER_CANDIDATE = re.compile(r"^[ \t]*(?P<name>[A-Za-z][A-Za-z /&()-]{1,40}?)[ \t]*:", re.MULTILINE)
# Flattened reports (one JSONL or text line) keep their headers mid-line after a sentence end.
_INLINE_HEADER = re.compile(r"(?<=[.!?])[ \t]+(?P<name>[A-Z][A-Z /&()-]{1,40}?)[ \t]*:")
_KNOWN_SECTIONS = frozenset(SECTION_ALIASES.values()) | NON_DIAGNOSTIC_SECTIONS
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"[.!?;:]\s*$")


@dataclass
class RawReport:
    """One report as read from a corpus, before any NLP.

    Attributes:
        report_id: id unique within the corpus (IU-Xray ``uid``, MIMIC file stem, JSONL ``id``).
        text: findings + impression (or the documented fallback), the text that gets annotated.
        sections: lower-case section name → section text, as found in the source.
        extra: source-specific fields (IU-Xray ``MeSH``, ``Problems``...; JSONL keys other than
            id and text; ``source``: the file the report came from).
    """

    report_id: str
    text: str
    sections: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReadStats:
    """Counters filled while a corpus is read; pass one to :func:`read_reports` to get them.

    Attributes:
        read: reports yielded.
        skipped: ids of reports skipped because they had no usable text.
        not_english: ids of reports skipped because their text is not English
            (:mod:`kg.language`).
    """

    read: int = 0
    skipped: list[str] = field(default_factory=list)
    not_english: list[str] = field(default_factory=list)


def read_reports(
    path: str | Path,
    input_format: str = "auto",
    *,
    on_empty: str = "skip",
    stats: ReadStats | None = None,
    on_not_english: str = "skip",
) -> Iterator[RawReport]:
    """Read a report corpus, one :class:`RawReport` at a time, in file order.

    Args:
        path: a file or, for ``mimic-txt`` and ``text``, a directory of ``.txt`` files.
        input_format: one of :data:`INPUT_FORMATS`.
        on_empty: ``"skip"`` reports without usable text (counted in ``stats.skipped``) or
            ``"error"`` to raise on the first one.
        stats: optional counters, updated as the iterator advances.
        on_not_english: ``"skip"`` reports whose text is not English (:mod:`kg.language`; counted
            in ``stats.not_english``), ``"error"`` to raise on the first, ``"keep"`` to read them.

    Raises:
        InputError: unknown format, unreadable file, missing column or field, malformed JSON,
            duplicate report id, a corpus with no report at all; the message names the file,
            the record (IU-Xray uid or line number) and the field.
    """
    if input_format not in INPUT_FORMATS:
        raise InputError(f"unknown input format {input_format!r}; choose from {', '.join(INPUT_FORMATS)}")
    if on_empty not in ("skip", "error"):
        raise InputError(f"on_empty must be 'skip' or 'error', not {on_empty!r}")
    if on_not_english not in ("skip", "error", "keep"):
        raise InputError(f"on_not_english must be 'skip', 'error' or 'keep', not {on_not_english!r}")
    source = Path(path)
    if not source.exists():
        raise InputError("no such file or directory", file=source)
    fmt = detect_report_format(source) if input_format == "auto" else input_format
    readers = {
        "iu-xray-csv": _read_iu_xray_csv,
        "mimic-txt": _read_report_files,
        "jsonl": _read_jsonl,
        "text": _read_text,
    }
    counts = stats if stats is not None else ReadStats()
    seen: dict[str, str] = {}
    found = 0
    for report, where in readers[fmt](source):
        found += 1
        if report.report_id in seen:
            raise InputError(
                f"duplicate report id {report.report_id!r} (first seen at {seen[report.report_id]})",
                file=report.extra.get("source", source),
                record=where,
                field="id",
            )
        seen[report.report_id] = where
        if not report.text.strip():
            if on_empty == "error":
                raise InputError(
                    "no findings or impression text", file=report.extra.get("source", source), record=where, field="text"
                )
            counts.skipped.append(report.report_id)
            continue
        reason = not_english_reason(report.text) if on_not_english != "keep" else None
        if reason is not None:
            if on_not_english == "error":
                raise InputError(f"not English ({reason}); the extractor reads English reports only",
                                 file=report.extra.get("source", source), record=where, field="text")
            counts.not_english.append(report.report_id)
            continue
        counts.read += 1
        yield report
    if found == 0:
        raise InputError(f"no reports found (read as {fmt})", file=source)


def detect_report_format(path: str | Path) -> str:
    """The ``input_format`` that ``auto`` resolves to for ``path`` (see the module docstring)."""
    source = Path(path)
    if source.is_dir():
        return "mimic-txt"
    suffix = source.suffix.lower()
    if suffix == ".csv":
        return "iu-xray-csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    head = _read_file(source)[:20000]
    for match in _headers(head):
        if _section_name(match.group("name")) in ("findings", "impression"):
            return "mimic-txt"
    return "text"


def split_sections(text: str) -> dict[str, str]:
    """Split a report at upper-case section headers (``FINDINGS:``, ``IMPRESSION:`` ...).

    Returns:
        Lower-case section name (aliases such as ``IMPRESSIONS``/``CONCLUSION`` merged) → the
        stripped text up to the next header; text before the first header is kept under
        ``"preamble"`` when not empty. A text without headers gives ``{}``.
    """
    matches = _headers(text)
    if not matches:
        return {}
    sections: dict[str, str] = {}
    preamble = text[: matches[0].start()].strip()
    if preamble:
        sections["preamble"] = preamble
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        name = _section_name(match.group("name"))
        sections[name] = f"{sections[name]}\n\n{body}".strip() if name in sections else body
    return sections


def report_text(sections: dict[str, str], whole_text: str) -> str:
    """The text to annotate: findings then impression, with the fallbacks of the module docstring.

    Args:
        sections: output of :func:`split_sections` (or the IU-Xray columns).
        whole_text: the full report, for the fallbacks (whole text, last paragraph).
    """
    parts = [sections.get("findings", "").strip(), sections.get("impression", "").strip()]
    parts = [p for p in parts if p]
    if parts:
        return join_sentences(parts)
    if not sections:
        return whole_text.strip()
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(whole_text) if p.strip()]
    if not paragraphs:
        return ""
    last = paragraphs[-1]
    headers = _headers(last)
    if headers and headers[0].start() == len(last) - len(last.lstrip()):
        if _section_name(headers[0].group("name")) in NON_DIAGNOSTIC_SECTIONS:
            return ""
        last = last[headers[0].end():].strip()
    return last


def join_sentences(parts: list[str]) -> str:
    """Join text blocks so each ends a sentence: a block without final punctuation gets a period.

    Findings often lack a final period; without one the impression's first sentence would merge with
    the findings' last and share its negation scope.
    """
    fixed = [p if _SENTENCE_END.search(p) else f"{p}." for p in parts]
    return "\n\n".join(fixed)


# ----------------------------------------------------------------------------- readers
def _headers(text: str) -> list[re.Match[str]]:
    """Header matches, in text order.

    At a line start: upper-case names (MIMIC-CXR style) or known section names in any case. After a
    sentence end within a line: upper-case known section names (``... normal. IMPRESSION: ...``).
    """
    line_start = [
        m
        for m in _HEADER_CANDIDATE.finditer(text)
        if m.group("name").isupper() or _section_name(m.group("name")) in _KNOWN_SECTIONS
    ]
    # Mid-line, only known section names count: "NOTE:" inside a sentence is no header.
    inline = [m for m in _INLINE_HEADER.finditer(text) if _section_name(m.group("name")) in _KNOWN_SECTIONS]
    return sorted(line_start + inline, key=lambda m: m.start())


def _section_name(header: str) -> str:
    name = " ".join(header.lower().split())
    return SECTION_ALIASES.get(name, name)


def _read_file(path: Path) -> str:
    require_file(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror}", file=path) from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(utf8_fault(data) or str(err), file=path) from None


def _read_iu_xray_csv(path: Path) -> Iterator[tuple[RawReport, str]]:
    # The limit is process-wide; raise it, never lower what a caller set.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_CSV_FIELD_CHARS))
    rows = csv.DictReader(io.StringIO(_read_file(path), newline=""))
    try:
        columns = [c.strip() for c in rows.fieldnames or []]
    except csv.Error as err:
        raise InputError(f"not a valid CSV header: {err}", file=path) from err
    if not columns:
        raise InputError("empty file: expected a header row with uid, findings, impression", file=path)
    for column in IU_XRAY_REQUIRED:
        if column not in columns:
            raise InputError(f"missing column; the header has {', '.join(columns)}", file=path, field=column)
    rows.fieldnames = columns
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as err:
            raise InputError(f"not valid CSV: {err}", file=path, record=f"line {rows.line_num}") from err
        uid = (row.get("uid") or "").strip()
        if not uid:
            raise InputError("empty uid", file=path, record=f"line {rows.line_num}", field="uid")
        if None in row:
            raise InputError(
                f"{len(columns) + len(row[None])} fields for {len(columns)} columns", file=path, record=uid
            )
        sections = {
            name: (row.get(name) or "").strip()
            for name in ("indication", "comparison", "findings", "impression")
            if (row.get(name) or "").strip()
        }
        extra: dict[str, Any] = {
            key: value for key, value in row.items() if key not in ("uid", "findings", "impression")
        }
        extra["source"] = str(path)
        yield RawReport(uid, report_text(sections, ""), sections, extra), uid


def _report_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.txt") if p.is_file())


def _read_report_files(path: Path) -> Iterator[tuple[RawReport, str]]:
    for file in _report_files(path):
        whole = _read_file(file)
        sections = split_sections(whole)
        extra = {"source": str(file)}
        yield RawReport(file.stem, report_text(sections, whole), sections, extra), str(file)


def _read_jsonl(path: Path) -> Iterator[tuple[RawReport, str]]:
    for line_number, line in enumerate(_read_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {line_number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"not valid JSON: {err.msg} (column {err.colno})", file=path, record=where) from err
        if not isinstance(obj, dict):
            raise InputError("expected a JSON object with 'id' and 'text'", file=path, record=where)
        id_key = "id" if "id" in obj else "report_id"
        report_id = obj.get(id_key)
        if not isinstance(report_id, (str, int)) or isinstance(report_id, bool) or not str(report_id).strip():
            raise InputError("missing or empty report id (key 'id' or 'report_id')", file=path, record=where, field="id")
        whole = obj.get("text")
        if not isinstance(whole, str):
            raise InputError("missing 'text' or not a string", file=path, record=where, field="text")
        sections = split_sections(whole)
        extra = {k: v for k, v in obj.items() if k not in (id_key, "text")}
        extra["source"] = str(path)
        yield RawReport(str(report_id).strip(), report_text(sections, whole), sections, extra), where


def _read_text(path: Path) -> Iterator[tuple[RawReport, str]]:
    if path.is_dir():
        for file in _report_files(path):
            whole = _read_file(file)
            yield RawReport(file.stem, whole.strip(), {}, {"source": str(file)}), str(file)
        return
    for line_number, line in enumerate(_read_file(path).splitlines(), start=1):
        if line.strip():
            report_id = f"{path.stem}:{line_number}"
            yield RawReport(report_id, line.strip(), {}, {"source": str(path)}), f"line {line_number}"
