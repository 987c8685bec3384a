"""Read RadGraph-format files (:mod:`kg.radgraph` parses them) as records or as store batches.

Typical use::

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

from kg.errors import InputError
from kg.input_files import require_file
from kg.radgraph import (
    DEFAULT_LABELER,
    FORMATS,
    LABELERS,
    document_format,
    document_records,
    duplicate_id_error,
    is_jsonl,
    jsonl_records,
    load_document,
    parse_report,
)
from kg.radgraph_batches import read_batches
from kg.records import ReportRecord
from kg.report_batch import ArrowBatch


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
        document = load_document(path)
        return (document_format(document) if self.format == "auto" else self.format), document

    def arrow_batches(self, absent: str = "negate") -> Iterator[ArrowBatch]:
        """The reports as store batches (:class:`kg.build.BatchSource`), read by
        :attr:`workers` processes; see :mod:`kg.radgraph_batches`. Fills :attr:`errors` and
        :attr:`formats` as iteration does, with the same errors in the same order."""
        return read_batches(self, absent)

    def __iter__(self) -> Iterator[ReportRecord]:
        self.errors = []
        first_seen: dict[str, Path] = {}
        for path in self.paths:
            fmt, document = self.open_input(path)
            raw_records = jsonl_records(path) if document is None else document_records(path, document, fmt)
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
