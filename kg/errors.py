"""Exceptions raised by the knowledge toolkit.

Library code raises these; the ``kg`` command prints them and exits non-zero.
"""
from __future__ import annotations

from os import PathLike


class KGError(Exception):
    """Base class of every error the knowledge toolkit raises on purpose."""


class InputError(KGError, ValueError):
    """Malformed user input, located by file, record and field.

    ``str(err)`` reads ``FILE: record RECORD: field FIELD: message`` with the parts that are known,
    so a user can find the offending place without a debugger.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | PathLike | None = None,
        record: object | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = None if file is None else str(file)
        self.record = record
        self.field = field
        where = []
        if self.file is not None:
            where.append(self.file)
        if record is not None:
            where.append(f"record {record}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(": ".join(where + [message]))

    def __reduce__(self) -> tuple:
        # Keyword-only arguments are not in ``args``; keep them when the error crosses processes.
        return _rebuild_input_error, (type(self), self.message, self.file, self.record, self.field)


def _rebuild_input_error(
    cls: type[InputError], message: str, file: str | None, record: object | None, field: str | None
) -> InputError:
    return cls(message, file=file, record=record, field=field)


class MissingResourceError(KGError, FileNotFoundError):
    """A local resource (model directory, NLP model, UMLS release) the user must provide is absent.

    Nothing is downloaded at run time; the message says what to pass instead.
    """
