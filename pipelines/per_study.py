"""Per-study outputs of an evaluation: what each test study (or question) got, beside the aggregates.

An aggregate such as R@10 = 0.31 cannot say how precise it is, nor whether another run's 0.28 is a
real difference; the per-study outputs can (:mod:`pipelines.metrics.significance`). Each evaluation
of :mod:`pipelines.evaluate` returns them as a list of rows under the key ``per_study`` of its
result; :meth:`pipelines.run_bundle.RunResult.save_to_directory` moves every such list out of
``metrics.json`` into ``per_study/<where>.jsonl`` of the run directory, ``<where>`` being the dotted
path of the result in the metrics (``zero_shot_retrieval``, ``test``, ``zero_shot``).

Rows, one JSON object per line, in test-set order:

* retrieval: ``{"study_id", "itc_i2t_rank", "itc_t2i_rank"}`` (+ ``itm_i2t_rank`` /
  ``itm_t2i_rank`` with ITM re-ranking): the 1-based rank of the study's report among all test
  reports for its image (``i2t``, report retrieval) and of its image for its report (``t2i``), ties
  counted against it, identical reports counted as hits (as the aggregate recalls count them);
* generation: ``{"study_id", "reference", "greedy"}`` (+ ``"beam"``): the generated reports;
* diagnosis: ``{"study_id", "y_true": [C], "y_prob": [C]}``: labels as scored (1 / 0, ``null``
  left out) and predicted probabilities, in the head's class order;
* VQA: ``{"qid", "answer_type", "answer", "prediction", "correct"}`` (``correct`` 1 / 0 after
  answer normalisation).

:func:`read_per_study` reads a file back as columns (NumPy arrays), the table
:func:`~pipelines.metrics.significance.bootstrap_ci` takes.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kg.atomic import write_text_atomic
from kg.errors import InputError
from kg.files import json_ready

PER_STUDY_KEY = "per_study"
PER_STUDY_DIR = "per_study"

Rows = list[dict[str, Any]]


def study_ids(dataset: Any) -> list[str]:
    """The study id of every item of a study dataset (``MotorSamples`` or ``ImageReportDataset``),
    read from its manifest records without loading images."""
    from pipelines.data.motor_samples import study_texts

    return [study for study, _ in study_texts(getattr(dataset, "studies", dataset))]


def retrieval_rows(ids: Sequence[str], ranks: Mapping[str, np.ndarray]) -> Rows:
    """Retrieval rows: ``{"study_id", <name>: rank, ...}`` from ``{name: (N,) ranks}``."""
    return [{"study_id": study, **{name: int(values[i]) for name, values in ranks.items()}}
            for i, study in enumerate(ids)]


def split_per_study(metrics: Mapping[str, Any], prefix: str = "") -> tuple[dict[str, Any], dict[str, Rows]]:
    """``metrics`` without its ``per_study`` lists, and those lists by dotted location.

    Returns:
        ``(metrics without per_study keys, {"zero_shot_retrieval": rows, "test": rows, ...})``;
        a list at the top level is named ``metrics``.
    """
    kept: dict[str, Any] = {}
    tables: dict[str, Rows] = {}
    for key, value in metrics.items():
        if key == PER_STUDY_KEY and isinstance(value, list):
            tables[prefix.rstrip(".") or "metrics"] = value
        elif isinstance(value, Mapping):
            kept[key], inner = split_per_study(value, f"{prefix}{key}.")
            tables.update(inner)
        else:
            kept[key] = value
    return kept, tables


def write_per_study(directory: str | os.PathLike, tables: Mapping[str, Rows]) -> list[Path]:
    """Write each table as ``directory/per_study/<name>.jsonl`` (atomically); returns the paths."""
    paths = []
    for name, rows in tables.items():
        path = Path(directory) / PER_STUDY_DIR / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, "".join(json.dumps(json_ready(row), ensure_ascii=False, allow_nan=False) + "\n"
                                        for row in rows))
        paths.append(path)
    return paths


def read_per_study(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A per-study JSONL file as columns: ``{field: array with one row per line}``.

    List fields (diagnosis ``y_true`` / ``y_prob``) become 2-D float arrays with NaN for ``null``.

    Raises:
        InputError: the file is missing or empty, a line is not a JSON object, or lines have
            different fields (file, line and field named).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("per-study file not found (runs save them from this version on)", file=path)
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"not valid JSON: {err.msg}", file=path, record=f"line {number}") from None
            if not isinstance(row, dict):
                raise InputError("a line must be a JSON object", file=path, record=f"line {number}")
            if rows and set(row) != set(rows[0]):
                field = sorted(set(row) ^ set(rows[0]))[0]
                raise InputError("fields differ from line 1", file=path, record=f"line {number}", field=field)
            rows.append(row)
    if not rows:
        raise InputError("no rows", file=path)
    columns: dict[str, np.ndarray] = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        if isinstance(values[0], list):
            columns[name] = np.array([[np.nan if v is None else v for v in value] for value in values], dtype=float)
        else:
            columns[name] = np.array(values)
    return columns
