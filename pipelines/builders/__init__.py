"""Dataset builders: public datasets as their publishers ship them → the files training code reads.

* :func:`build_mimic_cxr` (:mod:`pipelines.builders.mimic_cxr`) and :func:`build_iu_xray`
  (:mod:`pipelines.builders.iu_xray`) return a :class:`DatasetBuild`;
* :func:`write_dataset` writes it as ``annotation.json`` (R2Gen), ``manifest.jsonl`` and
  ``build_log.json``;
* :func:`read_r2gen_annotation` / :func:`write_r2gen_annotation` handle R2Gen's split file;
* :mod:`pipelines.builders.chestxray14` (manifest + ``labels_chestxray14.csv``),
  :mod:`pipelines.builders.vqa_rad` and :mod:`pipelines.builders.slake` (``vqa.jsonl``, written by
  :func:`pipelines.builders.vqa_common.write_vqa_dataset`) build the diagnosis and VQA datasets.
"""
from kg.r2gen import R2GenEntry, read_r2gen_annotation, write_r2gen_annotation
from pipelines.builders.common import DatasetBuild, write_dataset
from pipelines.builders.iu_xray import build_iu_xray
from pipelines.builders.mimic_cxr import build_mimic_cxr

__all__ = [
    "DatasetBuild",
    "R2GenEntry",
    "build_iu_xray",
    "build_mimic_cxr",
    "read_r2gen_annotation",
    "write_dataset",
    "write_r2gen_annotation",
]
