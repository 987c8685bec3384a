"""What the VQA builders (VQA-RAD, SLAKE) share: the build result and its two output files.

A VQA build writes

* ``vqa.jsonl``: the project's VQA manifest (:mod:`kg.manifest`), image paths relative
  to the output directory; ``motor finetune --task vqa --set data.vqa_manifest=OUT/vqa.jsonl``
  and ``motor evaluate --task vqa --vqa-data OUT/vqa.jsonl`` read it;
* ``build_log.json``: inputs, options, kept questions per split and answer type, and every filter
  with its count and first reasons.

Outputs hold no timestamps: the same inputs and options give byte-identical files.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kg.errors import InputError
from pipelines.builders.common import BUILD_LOG_FILE, DatasetBuild
from pipelines.data.adapters import AdapterResult
from kg.manifest import write_vqa_manifest
from pipelines.run_bundle import write_json

VQA_FILE = "vqa.jsonl"
#: Filters of every VQA build (each question counted once).
FILTERS = ("invalid_record", "image_missing")


@dataclass
class VQABuild(DatasetBuild):
    """A VQA dataset build: ``records`` are :class:`~kg.manifest.VQARecord` questions."""

    def add(self, result: AdapterResult, *, split: str | None = None, source: Path) -> None:
        """Keep the questions of one adapter run (with ``split``, all of them in that split).

        Raises:
            InputError: a question id already kept from another file (both files named).
        """
        self.filters["invalid_record"] += result.counts["skipped_invalid"]
        self.filters["image_missing"] += result.counts["skipped_missing_image"]
        if result.counts["skipped_language"]:
            self.notes["other_language"] = self.notes.get("other_language", 0) + result.counts["skipped_language"]
        if result.messages:
            listed = self.examples.setdefault("messages", [])
            listed.extend(result.messages[: max(0, 10 - len(listed))])
        known = {record.qid: origin for record, origin in zip(self.records, self._origins)}
        for record in result.records:
            if record.qid in known:
                raise InputError(f"question id repeated (also in {known[record.qid]})", file=source,
                                 record=f"qid {record.qid}", field="qid")
            if split is not None:
                record.split = split
            known[record.qid] = source
            self.records.append(record)
            self._origins.append(source)

    def __post_init__(self) -> None:
        self._origins: list[Path] = []
        self.filters.update({name: 0 for name in FILTERS})

    def log(self) -> dict[str, Any]:
        """``build_log.json``: :meth:`DatasetBuild.log` with questions per split and answer type."""
        log = super().log()
        log["questions_kept"] = log.pop("studies_kept")
        types = Counter((r.split, r.answer_type) for r in self.records)
        log["kept_by_answer_type"] = {split: {kind: types[split, kind] for kind in ("closed", "open")}
                                      for split in ("train", "val", "test")}
        log["images"] = len({r.image for r in self.records})
        return log


def write_vqa_dataset(build: VQABuild, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``vqa.jsonl`` and ``build_log.json`` into ``out_dir`` (each atomically).

    Returns:
        ``{"vqa_manifest": path, "build_log": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"vqa_manifest": out / VQA_FILE, "build_log": out / BUILD_LOG_FILE}
    write_vqa_manifest(build.records, paths["vqa_manifest"])
    write_json(paths["build_log"], build.log())
    return paths
