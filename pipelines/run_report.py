"""Tabulate run bundles: several runs, runs that differ only by seed pooled into mean ± std.

A run bundle (:mod:`pipelines.run_bundle`) holds ``config.yaml``, ``metrics.json`` and ``run.json``
(kind and seeds). :func:`load_run` reads one, :func:`group_runs` forms groups,
:func:`summarise_groups` computes each group's statistics, and :func:`report_table` /
:func:`report_json` render them.

How groups are formed:

* by default, two runs share a group when they are of the same kind (``run.json`` ``kind``) and
  their ``config.yaml`` is equal once

  - every seed key is removed (a key named ``seed`` or ending in ``_seed``, at any depth), and
  - every output path is made relative to its run: a string value naming a path inside the run
    directory or inside the directory that holds it reads as ``<run>/…`` (so the manifest that
    ``motor ablate --out A`` generated into ``A/data`` compares equal across ``A_s0/full`` and
    ``A_s1/full``). Relative paths are taken from the current directory.

  A row is named by the config keys whose values differ between groups (``model.knowledge=gk``),
  or by its first run's directory name when there is only one group;
* with ``group_by`` keys (dotted config keys; a leading ``config.`` is optional), runs with equal
  values of those keys share a group whatever else differs, and rows are named ``key=value, …``.

Groups keep the order in which their first run was given. A cell is the mean over the group's
runs that report the metric; with two or more it reads ``mean ± std`` (sample standard deviation,
``ddof=1``), and ``(n=k)`` follows when only ``k`` of the group's ``n`` runs report it.

Metric keys are dotted paths into ``metrics.json`` (``zero_shot_retrieval.itc.i2t.R@10``). By
default the table shows every numeric leaf that *all* given runs report, in the first run's order;
lists, strings, booleans and ``null`` (a metric that failed) are never tabulated.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kg.errors import InputError
from pipelines.metrics.tables import MISSING, metrics_table

RUN_PLACEHOLDER = "<run>"


@dataclass
class RunRecord:
    """One run bundle as read.

    Attributes:
        path: the run directory.
        kind: ``run.json`` ``kind`` (``pretrain``, ``finetune``, ...).
        config: ``config.yaml`` as nested data.
        metrics: the finite numeric leaves of ``metrics.json`` by dotted key.
        seeds: ``run.json`` ``seeds`` (name → seed).
    """

    path: Path
    kind: str | None
    config: dict[str, Any]
    metrics: dict[str, float]
    seeds: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunGroup:
    """Runs pooled into one row, and the row's name."""

    name: str
    runs: list[RunRecord]


@dataclass
class MetricSummary:
    """One cell: statistics over the group's runs that report the metric.

    Attributes:
        mean: arithmetic mean. std: sample standard deviation (``None`` for a single value).
        n: runs that report it. values: those runs' values, in run order.
    """

    mean: float
    std: float | None
    n: int
    values: list[float]


@dataclass
class GroupSummary:
    """A row of the report: the group, its size, runs, seeds and metric statistics."""

    name: str
    n: int
    runs: list[str]
    seeds: list[Any]
    metrics: dict[str, MetricSummary | None]


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings → ``{"a.b.c": leaf}``; lists and other leaves are kept as they are."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def is_seed_key(key: str) -> bool:
    """Whether dotted config key ``key`` is a seed (last part ``seed`` or ending in ``_seed``)."""
    last = key.rsplit(".", 1)[-1]
    return last == "seed" or last.endswith("_seed")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read(path: Path, loader: Any, what: str) -> Any:
    if not path.is_file():
        raise InputError(f"missing {path.name} (not a run bundle: "
                         "expected config.yaml, metrics.json and run.json)", file=path.parent)
    try:
        return loader(path.read_text(encoding="utf-8"))
    except (ValueError, yaml.YAMLError) as err:
        raise InputError(f"not valid {what}: {err}", file=path) from None


def load_run(path: str | os.PathLike) -> RunRecord:
    """Read one run bundle (``config.yaml``, ``metrics.json``, ``run.json``).

    Raises:
        InputError: ``path`` is not a directory, or one of the three files is missing (named) or
            malformed (the file and field are named).
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError("not a run directory (no such directory)", file=path)
    config = _read(path / "config.yaml", yaml.safe_load, "YAML")
    metrics = _read(path / "metrics.json", json.loads, "JSON")
    run = _read(path / "run.json", json.loads, "JSON")
    for name, value, what in (("config.yaml", config, "a mapping of settings"),
                              ("metrics.json", metrics, "an object of metrics"), ("run.json", run, "an object")):
        if not isinstance(value, dict):
            raise InputError(f"expected {what}, got {type(value).__name__}", file=path / name)
    seeds = run.get("seeds") or {}
    if not isinstance(seeds, dict):
        raise InputError(f"expected an object of seeds, got {seeds!r}", file=path / "run.json", field="seeds")
    numbers = {k: float(v) for k, v in flatten(metrics).items() if _is_number(v)}
    return RunRecord(path=path, kind=run.get("kind"), config=config, metrics=numbers, seeds=dict(seeds))


def _config_key(key: str) -> str:
    return key[len("config."):] if key.startswith("config.") else key


def _value_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def _run_relative(value: Any, run_dir: Path) -> Any:
    """``value`` with a path inside the run directory or its parent written relative to the run."""
    if not isinstance(value, str) or ("/" not in value and os.sep not in value):
        return value
    target = Path(value).resolve()
    run_dir = run_dir.resolve()
    for base, prefix in ((run_dir, RUN_PLACEHOLDER), (run_dir.parent, f"{RUN_PLACEHOLDER}/..")):
        if target == base or base in target.parents:
            return Path(prefix, target.relative_to(base)).as_posix()
    return value


def comparable_config(run: RunRecord) -> dict[str, str]:
    """The dotted settings that decide a run's default group: seeds removed, output paths run-relative."""
    return {key: _value_text(_run_relative(value, run.path)) for key, value in flatten(run.config).items()
            if not is_seed_key(key)}


def group_runs(runs: Sequence[RunRecord], group_by: Sequence[str] = ()) -> list[RunGroup]:
    """Pool runs into groups by the rules of the module docstring, in order of first appearance.

    Raises:
        InputError: a ``group_by`` key is in no run's config.
    """
    keys = [_config_key(k) for k in group_by]
    if keys:
        flat = [flatten(run.config) for run in runs]
        for key in keys:
            if not any(key in config for config in flat):
                raise InputError(f"no run's config.yaml has {key!r}", field="group_by")
        signatures = [tuple((k, _value_text(config.get(k, MISSING))) for k in keys) for config in flat]
    else:
        signatures = [(("kind", str(run.kind)), *sorted(comparable_config(run).items())) for run in runs]
    order: dict[tuple, list[RunRecord]] = {}
    for run, signature in zip(runs, signatures):
        order.setdefault(signature, []).append(run)
    if keys:
        return [RunGroup(", ".join(f"{k}={v}" for k, v in sig), members) for sig, members in order.items()]
    if len(order) == 1:
        members = next(iter(order.values()))
        return [RunGroup(members[0].path.name, members)]
    settings = [dict(sig) for sig in order]
    varying = [k for k in dict.fromkeys(k for s in settings for k in s) if len({s.get(k) for s in settings}) > 1]
    return [RunGroup(", ".join(f"{k}={dict(sig).get(k, MISSING)}" for k in varying), members)
            for sig, members in order.items()]


def default_metrics(runs: Sequence[RunRecord]) -> list[str]:
    """Every numeric metric key all ``runs`` report, in the first run's order.

    Raises:
        InputError: no runs, or no metric common to all of them.
    """
    if not runs:
        raise InputError("no run directories given")
    common = [key for key in runs[0].metrics if all(key in run.metrics for run in runs[1:])]
    if not common:
        raise InputError("the runs share no numeric metric; name the metrics to show with --metrics",
                         field="metrics")
    return common


def summarise(values: Sequence[float]) -> MetricSummary | None:
    """Mean, sample std (``None`` for one value) and count of ``values``; ``None`` when empty."""
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return MetricSummary(mean=statistics.fmean(values), std=std, n=len(values), values=list(values))


def summarise_groups(
    runs: Sequence[RunRecord], metrics: Sequence[str] | None = None, group_by: Sequence[str] = ()
) -> list[GroupSummary]:
    """Group ``runs`` and compute each group's statistics for ``metrics`` (default: :func:`default_metrics`).

    Raises:
        InputError: no runs, a requested metric that no run reports (the known ones are listed),
            or a ``group_by`` key in no config.
    """
    if not runs:
        raise InputError("no run directories given")
    metrics = default_metrics(runs) if metrics is None else list(metrics)
    known = sorted({k for run in runs for k in run.metrics})
    for key in metrics:
        if key not in known:
            raise InputError(f"no run reports {key!r}; metrics found: {', '.join(known[:30])}", field="metrics")
    summaries = []
    for group in group_runs(runs, group_by):
        seeds = list(dict.fromkeys(v for run in group.runs for v in run.seeds.values()))
        summaries.append(GroupSummary(
            name=group.name, n=len(group.runs), runs=[str(run.path) for run in group.runs], seeds=seeds,
            metrics={key: summarise([run.metrics[key] for run in group.runs if key in run.metrics]) for key in metrics},
        ))
    return summaries


def format_cell(summary: MetricSummary | None, group_size: int, digits: int = 3) -> str:
    """``mean``, or ``mean ± std`` for two or more values, plus ``(n=k)`` when runs lack the metric."""
    if summary is None:
        return MISSING
    text = f"{summary.mean:.{digits}f}"
    if summary.std is not None:
        text += f" ± {summary.std:.{digits}f}"
    if summary.n < group_size:
        text += f" (n={summary.n})"
    return text


def report_table(summaries: Sequence[GroupSummary], digits: int = 3) -> str:
    """A Markdown table (via :func:`pipelines.metrics.tables.metrics_table`): a row per group;
    columns ``n`` (runs), ``seeds`` and one per metric."""
    metrics = list(summaries[0].metrics) if summaries else []
    rows = {
        group.name: {"n": group.n, "seeds": ", ".join(_value_text(s) for s in group.seeds) or MISSING,
                     **{key: format_cell(cell, group.n, digits) for key, cell in group.metrics.items()}}
        for group in summaries
    }
    return metrics_table(rows, columns=["n", "seeds", *metrics], row_header="group")


def report_json(summaries: Sequence[GroupSummary]) -> str:
    """The groups as JSON: ``[{"name", "n", "runs", "seeds", "metrics": {key: {"mean", "std", "n",
    "values"} or null}}]`` (``std`` is ``null`` for a single value)."""
    return json.dumps([asdict(group) for group in summaries], indent=1) + "\n"
