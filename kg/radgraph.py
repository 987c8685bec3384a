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
    ``"inference"``, as a mapping keyed by index (``"0"``, ``"1"``, ...) or as a list (the list
    position is the id unless an item has ``"id"``/``"report_id"``). Its long entity labels
    (``"Observation::definitely absent"``) are mapped to the short ones (:data:`LABEL_ALIASES`).
``jsonl``
    One report per line: ``{"id" | "report_id", "text", "entities" (or labeler sets), ...}``.
    Read line by line, so memory stays flat on large corpora; JSON documents are loaded whole.

Auto-detection: ``.jsonl``/``.ndjson`` files, or files whose first line is a complete report
object, are ``jsonl``; a JSON list is ``radgraph-package``; a JSON mapping is ``radgraph``, or
``radgraph-package`` when its first report's ``data_split`` is ``"inference"``.

Every record is checked; a problem raises :class:`~kg.errors.InputError` naming the file (with
``:LINE`` for JSONL), the report id and the field (``entities.3.start_ix``,
``labeler_2.entities.5.relations[0]``). With ``skip_invalid=True`` the reader collects these
errors in :attr:`RadGraphReader.errors` and skips the reports instead; a file that is not JSON at
all, or not UTF-8, always raises.

Typical use::

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
from kg.records import ENTITY_LABELS, RELATION_TYPES, Entity, ReportRecord
from kg.report_batch import RELATION_NAMES, AnnotationColumns, ArrowBatch, ReportBatch

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

#: Entity label as written in a file → :data:`kg.records.ENTITY_LABELS` entry.
LABEL_ALIASES = {
    **{label: label for label in ENTITY_LABELS},
    "Anatomy::definitely present": "ANAT-DP",
    "Observation::definitely present": "OBS-DP",
    "Observation::uncertain": "OBS-U",
    "Observation::definitely absent": "OBS-DA",
}
_RELATIONS = frozenset(RELATION_TYPES)
_LABELER_KEYS = ("labeler_1", "labeler_2")


def detect_format(path: str | os.PathLike) -> str:
    """The layout of a RadGraph-format file: ``"jsonl"``, ``"radgraph"`` or ``"radgraph-package"``.

    Only the first line is read for JSONL; a JSON document is parsed to tell a mapping from a list.

    Raises:
        InputError: the file is missing, empty or not JSON.
    """
    path = Path(path)
    if is_jsonl(path):
        return "jsonl"
    return _document_format(_load_document(path))


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


class RadGraphReader:
    """Iterate the reports of one or more RadGraph-format files, in file and report order.

    Args:
        paths: input files.
        format: one of :data:`FORMATS`, used for every file; ``"auto"`` detects per file.
        labeler: see :func:`parse_report` (default :data:`DEFAULT_LABELER`).
        skip_invalid: collect invalid reports' errors in :attr:`errors` and go on, instead of
            raising on the first. A report id seen before (in any of the files) is invalid too.
        workers: processes that parse the files when the reader is used as a store build's batch
            source (:meth:`arrow_batches`); 0 or 1 reads in this process. The batches, errors and
            store are the same for any value. Iterating records always reads in this process.

    Attributes:
        errors: the errors of skipped reports, in reading order.
        formats: file → the format it was read as.
    """

    def __init__(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        format: str = "auto",
        labeler: str = DEFAULT_LABELER,
        skip_invalid: bool = False,
        workers: int = 0,
    ) -> None:
        if format not in FORMATS:
            raise InputError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}", field="format")
        if labeler not in LABELERS:
            raise InputError(f"unknown labeler {labeler!r}; choose one of {', '.join(LABELERS)}", field="labeler")
        self.paths = [Path(p) for p in paths]
        self.format = format
        self.labeler = labeler
        self.skip_invalid = skip_invalid
        if type(workers) is not int or workers < 0:
            raise InputError(f"workers must be a whole number >= 0, got {workers!r}", field="workers")
        self.workers = workers
        self.errors: list[InputError] = []
        self.formats: dict[Path, str] = {}

    def open_input(self, path: Path) -> tuple[str, Any]:
        """``(format, parsed JSON document)`` of one input; the document is ``None`` for JSONL,
        which is read line by line.

        Raises:
            InputError: the file is missing, empty or not JSON.
        """
        require_file(path)
        if self.format == "jsonl" or (self.format == "auto" and is_jsonl(path)):
            return "jsonl", None
        document = _load_document(path)
        return (_document_format(document) if self.format == "auto" else self.format), document

    def arrow_batches(self, absent: str = "negate") -> Iterator[ArrowBatch]:
        """The reports as store batches (:class:`kg.build.BatchSource`), read by
        :attr:`workers` processes; see :mod:`kg.radgraph_batches`. Fills :attr:`errors` and
        :attr:`formats` as iteration does, with the same errors in the same order."""
        from kg.radgraph_batches import read_batches

        return read_batches(self, absent)

    def __iter__(self) -> Iterator[ReportRecord]:
        self.errors = []
        first_seen: dict[str, Path] = {}
        for path in self.paths:
            fmt, document = self.open_input(path)
            raw_records = _jsonl_records(path) if document is None else document_records(path, document, fmt)
            self.formats[path] = fmt
            for report_id, raw, where in raw_records:
                try:
                    if isinstance(raw, InputError):
                        raise raw
                    if report_id in first_seen:
                        raise duplicate_id_error(report_id, first_seen[report_id], where)
                    records = parse_report(report_id, raw, labeler=self.labeler, file=where)
                except InputError as err:
                    if not self.skip_invalid:
                        raise
                    self.errors.append(err)
                    continue
                first_seen[report_id] = path
                yield from records


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


def _load_document(path: Path) -> Any:
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


def _document_format(document: Any) -> str:
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
            report_id = raw.get("report_id", raw.get("id", position)) if isinstance(raw, dict) else position
            yield str(report_id), raw, where
    else:
        expected = "a mapping or a list" if fmt == "radgraph-package" else "a mapping of report id to report"
        raise InputError(f"top level must be {expected}, got a JSON {type(document).__name__}", file=path)


def _jsonl_records(path: Path) -> Iterator[tuple[str | None, Any, str]]:
    """``(report id, raw report or the line's InputError, "FILE:LINE")`` per non-blank line."""
    with open(path, "rb") as handle:
        yield from jsonl_line_records(str(path), handle)


def jsonl_line_records(
    name: str, lines: Iterable[bytes], first_line: int = 1
) -> Iterator[tuple[str | None, Any, str]]:
    """:func:`_jsonl_records` of some of a JSONL file's lines, the first being line ``first_line``."""
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
        entity_id: Entity(entity_id, tokens, label, start, end, relations[entity_id])
        for entity_id, tokens, label, start, end in zip(
            columns.entity_ids, columns.tokens, columns.labels, columns.starts, columns.ends)
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
            labels.append(LABEL_ALIASES[spec["label"]])
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
        return None
    return AnnotationColumns(list(raw), tokens, labels, starts, ends, relations, head_rows, tail_rows)


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
        label = LABEL_ALIASES.get(raw_label) if type(raw_label) is str else None
        if label is None:
            raise fail(f"unknown label {raw_label!r}; expected one of {', '.join(ENTITY_LABELS)}",
                       f"{entity_id}.label")
        start, end = spec.get("start_ix"), spec.get("end_ix")
        if type(start) is not int:
            raise fail(f"must be an integer, got {start!r}", f"{entity_id}.start_ix")
        if type(end) is not int:
            raise fail(f"must be an integer, got {end!r}", f"{entity_id}.end_ix")
        if not 0 <= start <= end < n_words:
            where = f"{entity_id}.start_ix" if start < 0 or start > end else f"{entity_id}.end_ix"
            raise fail(f"span [{start}, {end}] is not within the text's {n_words} whitespace tokens "
                       "(inclusive indices, start <= end)", where)
        entities[entity_id] = Entity(entity_id, tokens, label, start, end, _parse_relations(spec, entity_id, fail))
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
