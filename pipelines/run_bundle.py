"""The run directory: what was run, on what, from which code and data, and what came out.

Every ``motor`` run directory holds

* ``config.yaml``: the resolved configuration (file + ``--set`` overrides + command-line flags);
* ``env.json``: Python, platform, device and the versions of the libraries that shape results;
* ``git.json``: the commit of the code and whether the checkout had local changes (``null`` when the
  code does not run from a git checkout);
* ``run.json``: the command, seeds, data manifests with their sha256, and the checkpoints (final,
  and the one chosen on validation when there is one);
* ``metrics.json`` (+ ``metrics.md``): the results;
* ``per_study/*.jsonl``: what each test study got (ranks, reports, predictions), moved out of the
  metrics (:mod:`pipelines.per_study`).

:class:`RunResult` is the object a pipeline returns; ``save_to_directory`` writes the bundle, as
PyKEEN's ``PipelineResult.save_to_directory`` does.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kg.atomic import write_text_atomic
from kg.files import json_ready, sha256_file

PACKAGES = ("torch", "torchvision", "transformers", "tokenizers", "timm", "faiss-gpu", "faiss-cpu", "pykeen",
            "duckdb", "torch-geometric", "numpy", "safetensors", "motor-kg")
CODE_ROOT = Path(__file__).resolve().parents[1]


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomically write strict JSON (NaN → null)."""
    write_text_atomic(path, json.dumps(json_ready(data), indent=1, allow_nan=False) + "\n")


def package_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape results (absent ones are left out)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def environment_info(device: str | None = None) -> dict[str, Any]:
    """Python, platform, device and package versions of this process."""
    import torch

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "device": device,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_threads": torch.get_num_threads(),
    }
    return info


def git_info(path: str | os.PathLike = CODE_ROOT) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git checkout holding ``path``, or ``None``.

    ``None`` when git is not installed or ``path`` is not inside a checkout (e.g. an installed
    wheel). Uses ``GIT_OPTIONAL_LOCKS=0`` so asking never rewrites the checkout's index.
    """
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, env=env, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


@dataclass
class RunResult:
    """What a pipeline returns: its settings, inputs, outputs and results; saves itself as a bundle.

    Attributes:
        kind: ``pretrain``, ``finetune``, ``evaluate``, ``ablate`` or ``demo``.
        config: the resolved configuration as plain data.
        metrics: the results (nested dicts of numbers).
        seeds: the seeds that determined the run.
        data: manifests used, ``{"manifest": {"path": ..., "sha256": ...}, ...}``.
        checkpoints: ``{"final": path, "chosen": path or None, "chosen_by": metric}`` (paths
            relative to the run directory).
        device: the device the run used.
        command: the command line, for the record.
        metrics_markdown: a readable table of ``metrics`` written as ``metrics.md`` (optional).
        run_dir: where the run wrote its files (not part of the saved bundle).
    """

    kind: str
    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    metrics_markdown: str | None = None
    run_dir: Path | None = None

    def save_to_directory(self, directory: str | os.PathLike) -> Path:
        """Write ``config.yaml``, ``env.json``, ``git.json``, ``run.json``, ``metrics.json`` (+ ``.md``),
        and ``per_study/<where>.jsonl`` for every ``per_study`` list found in the metrics (written
        there instead of into ``metrics.json``).

        Returns:
            The directory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(directory / "config.yaml", yaml.safe_dump(json_ready(self.config), sort_keys=False))
        write_json(directory / "env.json", environment_info(self.device))
        write_json(directory / "git.json", git_info())
        write_json(
            directory / "run.json",
            {"kind": self.kind, "command": self.command, "seeds": self.seeds, "data": self.data,
             "checkpoints": self.checkpoints},
        )
        from pipelines.per_study import split_per_study, write_per_study

        metrics, per_study = split_per_study(self.metrics)
        write_json(directory / "metrics.json", metrics)
        write_per_study(directory, per_study)
        if self.metrics_markdown is not None:
            write_text_atomic(directory / "metrics.md", self.metrics_markdown)
        return directory


def describe_file(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path": ..., "sha256": ..., "bytes": ...}`` of an input file, for ``run.json``."""
    path = Path(path)
    return {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}
