"""Read RadGraph-format annotations into :class:`kg.records.ReportRecord`.

Three layouts are read (``format``, one of :data:`FORMATS`; ``"auto"`` picks by extension and
content):

``radgraph``
    The RadGraph dataset release: one JSON document mapping report id → ``{"text", "entities",
    "data_source", "data_split"}``, where ``entities`` maps entity id → ``{"tokens", "label",
    "start_ix", "end_ix", "relations": [[relation, target id], ...]}``. Test-split reports carry
    two annotations instead of ``entities``: ``labeler_1`` and ``labeler_2``, each either
    ``{"entities": {...}}`` or the entity mapping itself.
``radgraph-package``
    Output of the ``radgraph`` Python package: the same per-report schema with ``data_split``
    ``"inference"``, as a mapping keyed by index (``"0"``, ``"1"``, ...: one call on a batch of
    reports) or as a JSON list. A list item is either a report (its id is its ``"id"`` or
    ``"report_id"``, else its list position) or the package's output for one call, ``{"0":
    report}`` (what a script calling the package once per report writes): such a report's id is
    the list position, and ``POSITION/KEY`` when one item holds several reports, so ids stay
    distinct. Entity labels are those of RadGraph-XL (``"Anatomy::measurement::definitely
    present"``) or of the classic release; each is kept as written and mapped to a coarse label
    (:mod:`kg.radgraph_labels`).
``jsonl``
    One report per line: ``{"id" | "report_id", "text", "entities" (or labeler sets), ...}``.
    Read line by line, so memory stays flat on large corpora; JSON documents are loaded whole.

Auto-detection: ``.jsonl``/``.ndjson`` files, or files whose first line is a complete report
object, are ``jsonl``; a JSON list is ``radgraph-package``; a JSON mapping is ``radgraph``, or
``radgraph-package`` when its first report's ``data_split`` is ``"inference"``.

Every record is checked; a problem raises :class:`~kg.errors.InputError` naming the file (with
``:LINE`` for JSONL), the report id and the field (``entities.3.start_ix``,
``labeler_2.entities.5.relations[0]``). With ``skip_invalid=True`` the reader collects these
errors in :attr:`kg.radgraph_reader.RadGraphReader.errors` and skips the reports instead; a file
that is not JSON at all, or not UTF-8, always raises.

This module parses; :class:`kg.radgraph_reader.RadGraphReader` reads files with it (in worker
processes through :mod:`kg.radgraph_batches` when asked). Typical use::

    from kg.radgraph_reader import RadGraphReader
    reader = RadGraphReader(["train.json", "dev.json"], labeler="labeler_1", skip_invalid=True)
    for record in reader:
        ...
    print(len(reader.errors), "reports skipped")
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from kg.errors import InputError
from kg.input_files import require_file, utf8_fault
from kg.radgraph_labels import COARSE_LABELS, coarse_label, describe_labels
from kg.records import RELATION_TYPES, Entity, ReportRecord
from kg.report_batch import RELATION_NAMES, AnnotationColumns, ReportBatch

FORMATS = ("auto", "radgraph", "radgraph-package", "jsonl")
LABELERS = ("labeler_1", "labeler_2", "both")
#: Test-split reports have two annotations; one is read by default so no relation counts twice.
DEFAULT_LABELER = "labeler_1"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
#: Format detection reads at most this much of a file's first line.
SNIFF_BYTES = 16 << 20
#: Synthetic RadGraph-format corpus shipped with motor-kg (``kg build --source radgraph`` without
#: ``--input`` reads it): 30 chest X-ray reports, two of them with ``labeler_1``/``labeler_2`` sets.
BUNDLED_SAMPLE = Path(__file__).resolve().parent / "data" / "radgraph_sample.json"

_RELATIONS = frozenset(RELATION_TYPES)
_LABELER_KEYS = ("labeler_1", "labeler_2")


def detect_radgraph_format(path: str | os.PathLike) -> str:
    """The layout of a RadGraph-format file: ``"jsonl"``, ``"radgraph"`` or ``"radgraph-package"``.

    Only the first line is read for JSONL; a JSON document is parsed to tell a mapping from a list.

    Raises:
        InputError: the file is missing, empty or not JSON.
    """
    path = Path(path)
    if is_jsonl(path):
        return "jsonl"
    return document_format(load_document(path))


def parse_report(
    report_id: str,
    raw: Any,
    *,
    labeler: str = DEFAULT_LABELER,
    file: str | os.PathLike | None = None,
) -> list[ReportRecord]:
    """Validate one report's RadGraph mapping and build its record(s).

    Args:
        report_id: id of the report (the key of the mapping, or the JSONL ``id``).
        raw: the report's mapping (``text``, ``entities`` or labeler sets, ``data_source``, ...).
        labeler: for reports with ``labeler_1``/``labeler_2`` sets, which to read; ``"both"``
            returns one record per labeler. Single-annotator reports ignore it.
        file: named in errors.

    Returns:
        One record (two for ``labeler="both"`` on a two-annotator report); ``labeler`` is
        ``None`` for single-annotator reports.

    Raises:
        InputError: naming ``file``, ``report_id`` and the field at fault.
    """
    if labeler not in LABELERS:
        raise InputError(f"unknown labeler {labeler!r}; choose one of {', '.join(LABELERS)}", field="labeler")
    if not isinstance(raw, dict):
        raise InputError("a report must be a JSON object", file=file, record=report_id)
    text = raw.get("text")
    if not isinstance(text, str):
        problem = "missing" if text is None else f"must be a string, got {type(text).__name__}"
        raise InputError(problem, file=file, record=report_id, field="text")
    if not text.strip():
        raise InputError("empty report text", file=file, record=report_id, field="text")
    n_words = len(text.split())
    data_source = _optional_str(raw, "data_source", file, report_id)
    data_split = _optional_str(raw, "data_split", file, report_id)

    if "entities" in raw:
        entities = _parse_entities(raw["entities"], n_words, file=file, record=report_id, field="entities")
        return [ReportRecord(report_id, text, entities, data_source, data_split, None)]
    if not any(key in raw for key in _LABELER_KEYS):
        raise InputError(
            "missing (give 'entities', or 'labeler_1'/'labeler_2' sets)", file=file, record=report_id, field="entities"
        )
    records = []
    for name in _LABELER_KEYS if labeler == "both" else (labeler,):
        annotation = raw.get(name)
        if annotation is None:
            raise InputError("missing annotation set for this labeler", file=file, record=report_id, field=name)
        if isinstance(annotation, dict) and isinstance(annotation.get("entities"), dict):
            field = f"{name}.entities"
            source = _optional_str(annotation, "data_source", file, report_id) or data_source
            split = _optional_str(annotation, "data_split", file, report_id) or data_split
            annotation = annotation["entities"]
        else:
            field, source, split = name, data_source, data_split
        entities = _parse_entities(annotation, n_words, file=file, record=report_id, field=field)
        records.append(ReportRecord(report_id, text, entities, source, split, name))
    return records


def add_raw_report(batch: ReportBatch, report_id: str, raw: Any, *, labeler: str = DEFAULT_LABELER,
                   file: str | os.PathLike | None = None) -> None:
    """Validate one report's mapping and add its rows to ``batch``: :func:`parse_report` for a
    store build.

    A well-formed single-annotator report goes straight into the batch's columns
    (:func:`entity_columns`); anything else goes through :func:`parse_report`, which raises the
    precise error. Nothing is added when it raises.
    """
    if type(raw) is dict and "entities" in raw:
        text, source, split = raw.get("text"), raw.get("data_source"), raw.get("data_split")
        if type(text) is str and (source is None or type(source) is str) and (split is None or type(split) is str):
            words = text.split()
            columns = entity_columns(raw["entities"], len(words)) if words else None
            if columns is not None:
                batch.add_report(report_id, text, source, split)
                batch.add_annotation("", columns)
                return
    for k, record in enumerate(parse_report(report_id, raw, labeler=labeler, file=file)):
        batch.add_record(record, new_report=k == 0)


def duplicate_id_error(report_id: str, first_file: Path, where: str) -> InputError:
    """The error of a report id read a second time, at ``where``, first read from ``first_file``."""
    return InputError(f"duplicate report id (first read from {first_file})", file=where, record=report_id, field="id")


# ---------------------------------------------------------------------- file layouts
def is_jsonl(path: Path) -> bool:
    """A ``.jsonl``/``.ndjson`` file, or one whose first line is a whole report object.

    A first line longer than :data:`SNIFF_BYTES` is taken for a JSON document written on one line
    (as the RadGraph release is) without parsing it: no report is that long.
    """
    if path.suffix.lower() in JSONL_SUFFIXES:
        return True
    require_file(path)
    with open(path, "rb") as handle:
        line = handle.readline(SNIFF_BYTES + 1)
    line = line.strip()
    if len(line) > SNIFF_BYTES or not line.startswith(b"{"):
        return False
    try:
        first = orjson.loads(line)
    except ValueError:
        return False
    return isinstance(first, dict) and "text" in first


def load_document(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("no such file", file=path) from None
    if not data or data.isspace():
        raise InputError("empty file", file=path)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:
        message = utf8_fault(data) or f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        raise InputError(message, file=path) from None


def document_format(document: Any) -> str:
    if isinstance(document, list):
        return "radgraph-package"
    if isinstance(document, dict):
        first = next(iter(document.values()), None)
        if isinstance(first, dict) and first.get("data_split") == "inference":
            return "radgraph-package"
        return "radgraph"
    return "radgraph"


def document_records(path: Path, document: Any, fmt: str) -> Iterator[tuple[str, Any, str]]:
    """``(report id, raw report, where)`` of a parsed JSON document."""
    where = str(path)
    if isinstance(document, dict):
        for report_id, raw in document.items():
            yield report_id, raw, where
    elif isinstance(document, list) and fmt == "radgraph-package":
        for position, raw in enumerate(document):
            if is_package_output(raw):
                if len(raw) == 1:
                    yield str(position), next(iter(raw.values())), where
                else:
                    for key, report in raw.items():
                        yield f"{position}/{key}", report, where
                continue
            report_id = raw.get("report_id", raw.get("id", position)) if isinstance(raw, dict) else position
            yield str(report_id), raw, where
    else:
        expected = "a mapping or a list" if fmt == "radgraph-package" else "a mapping of report id to report"
        raise InputError(f"top level must be {expected}, got a JSON {type(document).__name__}", file=path)


def is_package_output(item: Any) -> bool:
    """Whether a list item is one call's package output (``{"0": report, ...}``) rather than a
    report: a non-empty mapping of index keys to report objects."""
    return (type(item) is dict and bool(item) and "text" not in item
            and all(type(key) is str and key.isdigit() and type(value) is dict for key, value in item.items()))


def jsonl_records(path: Path) -> Iterator[tuple[str | None, Any, str]]:
    """``(report id, raw report or the line's InputError, "FILE:LINE")`` per non-blank line."""
    with open(path, "rb") as handle:
        yield from jsonl_line_records(str(path), handle)


def jsonl_line_records(
    name: str, lines: Iterable[bytes], first_line: int = 1
) -> Iterator[tuple[str | None, Any, str]]:
    """:func:`jsonl_records` of some of a JSONL file's lines, the first being line ``first_line``."""
    for line_no, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        where = f"{name}:{line_no}"
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            message = utf8_fault(line, first_line=line_no, whole_file=False) or f"not valid JSON: {err.msg} at column {err.colno}"
            yield None, InputError(message, file=where), where
            continue
        if type(raw) is not dict:
            yield None, InputError("a report must be a JSON object", file=where), where
            continue
        report_id = raw.get("id", raw.get("report_id"))
        if type(report_id) not in (str, int) or report_id == "":
            yield None, InputError("missing report id ('id' or 'report_id')", file=where, field="id"), where
            continue
        yield str(report_id), raw, where


# ---------------------------------------------------------------------- validation
def _optional_str(raw: dict, key: str, file: str | os.PathLike | None, record: str) -> str | None:
    value = raw.get(key)
    if value is None or isinstance(value, str):
        return value
    raise InputError(f"must be a string or null, got {type(value).__name__}", file=file, record=record, field=key)


def _parse_entities(raw: Any, n_words: int, *, file: str | os.PathLike | None, record: str, field: str) -> dict[str, Entity]:
    """Entity id → :class:`Entity`, every span and relation checked against ``n_words`` tokens.

    Raises:
        InputError: naming the field at fault (from :func:`_parse_entities_checked`).
    """
    columns = entity_columns(raw, n_words)
    if columns is None:
        return _parse_entities_checked(raw, n_words, file=file, record=record, field=field)
    ids = columns.entity_ids
    relations: dict[str, list[tuple[str, str]]] = {entity_id: [] for entity_id in ids}
    for relation, head, tail in zip(columns.relations, columns.head_rows, columns.tail_rows):
        relations[ids[head]].append((relation, ids[tail]))
    return {
        entity_id: Entity(entity_id, tokens, label, start, end, relations[entity_id],
                          None if written == label else written)
        for entity_id, tokens, label, written, start, end in zip(
            columns.entity_ids, columns.tokens, columns.labels, columns.source_labels, columns.starts, columns.ends)
    }


def entity_columns(raw: Any, n_words: int) -> AnnotationColumns | None:
    """A well-formed entity mapping's columns, or ``None`` at the first surprise.

    Reading is most of a build's time, so this is one tight pass without an object per entity
    (faster, measured, than comprehensions per column). It accepts only what
    :func:`_parse_entities_checked` accepts, in the canonical form (string relation targets); for
    anything else (a wrong type, an unknown label, a bad span or target, an integer target id) it
    gives up, and the checked pass either names the field at fault or converts the value.
    """
    if type(raw) is not dict:
        return None
    tokens: list[str] = []
    labels: list[str] = []
    written: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    relations: list[str] = []
    head_rows: list[int] = []
    tail_rows: list[int] = []
    rows = dict(zip(raw, range(len(raw))))
    try:
        for head_row, spec in enumerate(raw.values()):
            text, start, end = spec["tokens"], spec["start_ix"], spec["end_ix"]
            if type(text) is not str or type(start) is not int or type(end) is not int or not 0 <= start <= end < n_words:
                return None
            tokens.append(text)
            label = spec["label"]
            labels.append(COARSE_LABELS[label])
            written.append(label)
            starts.append(start)
            ends.append(end)
            pairs = spec.get("relations")
            if pairs:
                if type(pairs) is not list:
                    return None
                for pair in pairs:
                    if type(pair) is not list or len(pair) != 2:
                        return None
                    relation, target = pair
                    if type(target) is not str:
                        return None
                    tail_rows.append(rows[target])
                    relations.append(RELATION_NAMES[relation])
                    head_rows.append(head_row)
            elif pairs is not None and type(pairs) is not list:
                return None
    except (KeyError, TypeError):  # a missing key or target, an entity that is not an object, an unknown label
        # (a label that is not a string: a list raises TypeError, a number KeyError)
        return None
    return AnnotationColumns(list(raw), tokens, labels, starts, ends, relations, head_rows, tail_rows,
                             source_labels=written)


def _parse_entities_checked(
    raw: Any, n_words: int, *, file: str | os.PathLike | None, record: str, field: str
) -> dict[str, Entity]:
    """:func:`_parse_entities` one check at a time, raising an :class:`InputError` for the first problem."""

    def fail(message: str, where: str) -> InputError:
        return InputError(message, file=file, record=record, field=f"{field}.{where}")

    if not isinstance(raw, dict):
        raise InputError("must be a mapping of entity id to entity", file=file, record=record, field=field)
    entities: dict[str, Entity] = {}
    for entity_id, spec in raw.items():
        if type(spec) is not dict:
            raise fail("an entity must be a JSON object", entity_id)
        tokens = spec.get("tokens")
        if type(tokens) is not str:
            raise fail("missing or not a string", f"{entity_id}.tokens")
        raw_label = spec.get("label")
        label = coarse_label(raw_label)
        if label is None:
            raise fail(f"unknown label {raw_label!r}; expected {describe_labels()}", f"{entity_id}.label")
        start, end = spec.get("start_ix"), spec.get("end_ix")
        if type(start) is not int:
            raise fail(f"must be an integer, got {start!r}", f"{entity_id}.start_ix")
        if type(end) is not int:
            raise fail(f"must be an integer, got {end!r}", f"{entity_id}.end_ix")
        if not 0 <= start <= end < n_words:
            where = f"{entity_id}.start_ix" if start < 0 or start > end else f"{entity_id}.end_ix"
            raise fail(f"span [{start}, {end}] is not within the text's {n_words} whitespace tokens "
                       "(inclusive indices, start <= end)", where)
        entities[entity_id] = Entity(entity_id, tokens, label, start, end, _parse_relations(spec, entity_id, fail),
                                     None if raw_label == label else raw_label)
    for entity in entities.values():
        for k, (relation, target) in enumerate(entity.relations):
            if target not in entities:
                raise fail(f"{relation} points to entity {target!r}, which the report does not have",
                           f"{entity.id}.relations[{k}]")
    return entities


def _parse_relations(spec: dict, entity_id: str, fail: Any) -> list[tuple[str, str]]:
    raw = spec.get("relations")
    if raw is None:  # absent or null: no relations
        return []
    if type(raw) is not list:
        raise fail("must be a list of [relation, target id] pairs", f"{entity_id}.relations")
    relations = []
    for k, pair in enumerate(raw):
        if type(pair) not in (list, tuple) or len(pair) != 2:
            raise fail(f"must be a [relation, target id] pair, got {pair!r}", f"{entity_id}.relations[{k}]")
        relation, target = pair
        if relation not in _RELATIONS:
            raise fail(f"unknown relation {relation!r}; expected one of {', '.join(RELATION_TYPES)}",
                       f"{entity_id}.relations[{k}]")
        if type(target) is int:
            target = str(target)
        elif type(target) is not str:
            raise fail(f"target id must be a string, got {target!r}", f"{entity_id}.relations[{k}]")
        relations.append((relation, target))
    return relations
