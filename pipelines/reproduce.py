"""``motor reproduce TABLE``: the MOTOR paper's Tables 1–5 as recipes that run end to end.

A recipe is a YAML file under ``pipelines/configs/reproduce/`` (``table1.yaml`` … ``table5.yaml``):

* ``title``: what the table measures;
* ``datasets``: each dataset the table needs, by key (``mimic-cxr``, ``iu-xray``, ``chestxray14``,
  ``vqa-rad``, ``slake``), with the ``motor build-dataset`` command that makes it (a string, or a
  mapping with ``build``, ``set`` (config items only that dataset needs), ``label_set`` (the
  diagnosis classes of ``graphs/labels_<name>.yaml`` its build writes as ``labels_<name>.csv``, e.g.
  ``chestxray14``) and ``vqa: true`` for a VQA manifest);
* ``runs``: the finetuning runs, each ``{name, task, dataset, set: {key: value}, report: {metric
  key: column}}``, at the paper's settings (the header comment of each file says where each number
  comes from in the reference code, and what motor-kg does differently).

Every table starts from the MOTOR pretraining of ``pretrain_mimic.yaml`` (run into ``OUT/pretrain``
unless ``--from`` names a finished pretraining run). The user passes the built datasets as
``--data KEY=PATH``. ``--dry-run`` prints the ``motor`` commands and the resolved configs without
running anything; ``--smoke`` runs every step at tiny size on the embedded synthetic set, which
stands in for every dataset (``smoke.yaml``), to check a recipe end to end in seconds; a dataset
with a label set gets a copy of it with random labels of that set (``OUT/data/<key>/``), so smoke
diagnosis trains and scores the set's classes.

A finished reproduction leaves one run bundle per step in ``OUT/<step>/`` and ``OUT/table.md`` /
``OUT/table.json`` with each run's reported metrics.
"""
from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kg.atomic import write_text_atomic
from kg.errors import InputError
from pipelines.config import CONFIG_DIR, FinetuneConfig, PretrainConfig, builtin_config, dump_config, load_config
from pipelines.prepare import VQA_MANIFEST_NAME
from pipelines.tasks.label_sets import LABEL_SET_YAML, LABELS_CSV

RECIPE_DIR = CONFIG_DIR / "reproduce"
TABLES = ("table1", "table2", "table3", "table4", "table5")
PRETRAIN_RECIPE = "pretrain_mimic"
SMOKE_FILE = "smoke"
PRETRAIN_STEP = "pretrain"


@dataclass
class DatasetSpec:
    """A dataset a recipe needs: how to build it, config items only it needs, its diagnosis label set."""

    key: str
    build: str
    settings: dict[str, Any] = field(default_factory=dict)
    vqa: bool = False
    label_set: str | None = None


@dataclass
class RunSpec:
    """One finetuning run of a recipe."""

    name: str
    task: str
    dataset: str
    settings: dict[str, Any] = field(default_factory=dict)
    report: dict[str, str] = field(default_factory=dict)


@dataclass
class Recipe:
    """A table of the paper as data (see the module docstring)."""

    table: str
    title: str
    datasets: dict[str, DatasetSpec]
    runs: list[RunSpec]
    pretrain: dict[str, Any]
    file: Path


@dataclass
class Step:
    """One command of a planned reproduction.

    Attributes:
        name: ``pretrain`` or the run's name; its run directory is ``OUT/<name>``.
        kind: ``pretrain`` or ``finetune``.
        argv: the equivalent ``motor`` command line.
        config: the resolved configuration the step runs with.
        out_dir: its run directory.
        report: metric key → column label (finetuning runs).
    """

    name: str
    kind: str
    argv: list[str]
    config: PretrainConfig | FinetuneConfig
    out_dir: Path
    report: dict[str, str] = field(default_factory=dict)

    def command(self) -> str:
        """The command line as a shell would take it."""
        return shlex.join(self.argv)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(f"not valid YAML: {err}", file=path) from None
    if not isinstance(data, dict):
        raise InputError("a recipe must be a YAML mapping", file=path)
    return data


def _mapping(value: Any, path: Path, record: str, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError("must be a mapping of key: value", file=path, record=record, field=name)
    return dict(value)


def load_recipe(table: str) -> Recipe:
    """The recipe of ``table`` (``table1`` … ``table5``, or ``1`` … ``5``).

    Raises:
        InputError: an unknown table, or a recipe file with a missing or malformed field (file,
            record and field named).
    """
    name = f"table{table}" if str(table).isdigit() else str(table)
    if name not in TABLES:
        raise InputError(f"unknown table {table!r}; choose from {', '.join(TABLES)}", field="TABLE")
    path = RECIPE_DIR / f"{name}.yaml"
    data = _read_yaml(path)
    for key in ("title", "datasets", "runs"):
        if key not in data:
            raise InputError("missing field", file=path, field=key)
    datasets = {}
    for key, value in _mapping(data["datasets"], path, "datasets", "datasets").items():
        spec = {"build": value} if isinstance(value, str) else _mapping(value, path, f"datasets.{key}", "build")
        if not isinstance(spec.get("build"), str):
            raise InputError("give the motor build-dataset command", file=path, record=f"datasets.{key}", field="build")
        label_set = spec.get("label_set")
        if label_set is not None:
            from graphs import GRAPHS_DIR

            if not isinstance(label_set, str) or not (GRAPHS_DIR / LABEL_SET_YAML.format(name=label_set)).is_file():
                raise InputError(f"no label set {label_set!r} (graphs/{LABEL_SET_YAML.format(name=label_set)})",
                                 file=path, record=f"datasets.{key}", field="label_set")
        datasets[key] = DatasetSpec(key, spec["build"], _mapping(spec.get("set"), path, f"datasets.{key}", "set"),
                                    bool(spec.get("vqa", False)), label_set)
    runs = []
    if not isinstance(data["runs"], list) or not data["runs"]:
        raise InputError("give at least one run", file=path, field="runs")
    for number, run in enumerate(data["runs"]):
        record = f"runs[{number}]"
        run = _mapping(run, path, record, "runs")
        for key in ("name", "task", "dataset"):
            if not isinstance(run.get(key), str):
                raise InputError("missing or not a string", file=path, record=record, field=key)
        if run["dataset"] not in datasets:
            raise InputError(f"dataset {run['dataset']!r} is not among the recipe's datasets "
                             f"({', '.join(datasets)})", file=path, record=record, field="dataset")
        if run["name"] == PRETRAIN_STEP or run["name"] in {r.name for r in runs}:
            raise InputError("run names must be unique and not 'pretrain'", file=path, record=record, field="name")
        runs.append(RunSpec(run["name"], run["task"], run["dataset"], _mapping(run.get("set"), path, record, "set"),
                            {str(k): str(v) for k, v in _mapping(run.get("report"), path, record, "report").items()}))
    pretrain = _read_yaml(RECIPE_DIR / f"{PRETRAIN_RECIPE}.yaml")
    return Recipe(name, str(data["title"]), datasets, runs, pretrain, path)


def parse_data(items: Sequence[str]) -> dict[str, str]:
    """``["mimic-cxr=data/mimic", ...]`` → ``{"mimic-cxr": "data/mimic"}``.

    Raises:
        InputError: an item without ``=`` or a key given twice.
    """
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"expected DATASET=PATH, got {item!r}", field="--data")
        if key.strip() in found:
            raise InputError(f"dataset {key.strip()!r} given twice", field="--data")
        found[key.strip()] = value.strip()
    return found


def _items(settings: Mapping[str, Any]) -> list[str]:
    """``{key: value}`` → ``["key=value", ...]`` in the form ``--set`` takes (values as YAML/JSON)."""
    def text(value: Any) -> str:
        if isinstance(value, str):
            # Quoted only where YAML would read the bare text as something else ("off" → false).
            return value if yaml.safe_load(value) == value else json.dumps(value)
        return json.dumps(value)

    return [f"{key}={text(value)}" for key, value in settings.items()]


def plan(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    data: Mapping[str, str] | None = None,
    from_run: str | None = None,
    smoke: bool = False,
    overrides: Sequence[str] = (),
) -> list[Step]:
    """The steps that reproduce ``recipe``, each with its command line and resolved config.

    Args:
        recipe: from :func:`load_recipe`.
        out_dir: the output directory (``OUT``).
        data: dataset key → built dataset (manifest, or VQA manifest for VQA datasets); every
            dataset the recipe uses (and ``mimic-cxr`` for the pretraining) must be given unless
            ``smoke``.
        from_run: a finished pretraining run (or saved model) to finetune from, instead of
            pretraining into ``OUT/pretrain``.
        smoke: tiny sizes on the synthetic set (``OUT/data/manifest.jsonl``) instead of ``data``.
        overrides: further ``key=value`` items for every finetuning run.

    Raises:
        InputError: a dataset missing from ``data`` (with the command that builds it), or a
            recipe setting the configs reject.
    """
    out_dir = Path(out_dir)
    data = dict(data or {})
    smoke_settings = _read_yaml(RECIPE_DIR / f"{SMOKE_FILE}.yaml") if smoke else {}
    synthetic = out_dir / "data" / "manifest.jsonl"
    if not smoke:
        needed = {run.dataset: recipe.datasets[run.dataset] for run in recipe.runs}
        if from_run is None:
            needed.setdefault(recipe.pretrain["dataset"], None)
        absent = [key for key in needed if key not in data]
        if absent:
            key = absent[0]
            spec = needed[key]
            how = f"; build it with: {spec.build}" if spec is not None else ""
            raise InputError(f"no data for {key!r}: pass --data {key}=PATH{how}", field="--data")

    steps: list[Step] = []
    source = from_run
    if from_run is None:
        settings = dict(recipe.pretrain.get("set") or {})
        if smoke:
            settings.update(smoke_settings.get("pretrain") or {})
            # The synthetic set is generated once, into OUT/data, and shared by every step.
            settings["data.manifest"] = str(synthetic)
        else:
            settings["data.manifest"] = data[recipe.pretrain["dataset"]]
        config_name = recipe.pretrain["config"]
        items = _items(settings)
        pretrain_dir = out_dir / PRETRAIN_STEP
        config = load_config(PretrainConfig, builtin_config(config_name), items)
        argv = ["motor", "pretrain", "--config", f"pipelines/configs/{config_name}.yaml", "--out", str(pretrain_dir)]
        argv += [part for item in items for part in ("--set", item)]
        steps.append(Step(PRETRAIN_STEP, "pretrain", argv, config, pretrain_dir))
        source = str(pretrain_dir)
    for run in recipe.runs:
        spec = recipe.datasets[run.dataset]
        settings = {"task": run.task, "init_from": source, **run.settings}
        if smoke:
            settings.update(smoke_settings.get("finetune") or {})
            settings["data.manifest"] = str(smoke_manifest(out_dir, spec))
        else:
            settings.update(spec.settings)
            path = data[run.dataset]
            if spec.vqa:
                # A VQA build directory holds its questions in vqa.jsonl.
                settings["data.vqa_manifest"] = str(Path(path) / VQA_MANIFEST_NAME) if Path(path).is_dir() else path
            else:
                settings["data.manifest"] = path
        items = _items(settings) + list(overrides)
        run_dir = out_dir / run.name
        config = load_config(FinetuneConfig, builtin_config(f"finetune_{run.task}"), items)
        argv = ["motor", "finetune", "--task", run.task, "--from", source, "--out", str(run_dir)]
        argv += [part for item in items[2:] for part in ("--set", item)]
        steps.append(Step(run.name, "finetune", argv, config, run_dir, dict(run.report)))
    return steps


def describe(recipe: Recipe, steps: Sequence[Step]) -> str:
    """What ``--dry-run`` prints: the recipe, each step's command and its resolved config."""
    lines = [f"# {recipe.table}: {recipe.title}", f"# recipe: {recipe.file}", ""]
    for key, spec in recipe.datasets.items():
        lines.append(f"# dataset {key}: {spec.build}")
    for number, step in enumerate(steps, start=1):
        lines += ["", f"## step {number}/{len(steps)}: {step.name}", step.command(), "", "```yaml",
                  dump_config(step.config).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _lookup(metrics: Mapping[str, Any], key: str) -> Any:
    value: Any = metrics
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def results_table(recipe: Recipe, metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: one block per run, its reported metrics (``–`` for one the run did not produce)."""
    lines = [f"# {recipe.table}: {recipe.title}", ""]
    for run in recipe.runs:
        found = metrics.get(run.name, {})
        lines += [f"## {run.name} ({run.task} on {run.dataset})", "", "| metric | value |", "|:--|--:|"]
        for key, label in run.report.items():
            value = _lookup(found, key)
            lines.append(f"| {label} | {'–' if not isinstance(value, (int, float)) else f'{value:.3f}'} |")
        lines.append("")
    return "\n".join(lines)


def reproduce(
    table: str,
    out_dir: str | Path,
    *,
    data: Mapping[str, str] | None = None,
    from_run: str | None = None,
    smoke: bool = False,
    overrides: Sequence[str] = (),
    show_progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every step of ``table``'s recipe (see :func:`plan`) and write ``OUT/table.md`` / ``table.json``.

    Returns:
        ``{run name: its metrics}`` for the finetuning runs.
    """
    from pipelines.finetune import finetune
    from pipelines.pretrain import pretrain

    recipe = load_recipe(table)
    out_dir = Path(out_dir)
    steps = plan(recipe, out_dir, data=data, from_run=from_run, smoke=smoke, overrides=overrides)
    if smoke:
        _synthetic(out_dir, steps)
        for key in dict.fromkeys(run.dataset for run in recipe.runs):
            if recipe.datasets[key].label_set is not None:
                _smoke_label_set(out_dir, recipe.datasets[key])
    else:
        _check_label_sets(recipe, data or {})
    results: dict[str, Any] = {}
    for number, step in enumerate(steps, start=1):
        echo(f"[{number}/{len(steps)}] {step.command()}")
        if step.kind == "pretrain":
            pretrain(step.config, step.out_dir, show_progress=show_progress, echo=None)
        else:
            results[step.name] = finetune(step.config, step.out_dir, show_progress=show_progress, echo=None).metrics
    text = results_table(recipe, results)
    write_text_atomic(out_dir / "table.md", text)
    summary = {run.name: {label: _lookup(results.get(run.name, {}), key) for key, label in run.report.items()}
               for run in recipe.runs}
    write_text_atomic(out_dir / "table.json", json.dumps({"table": recipe.table, "title": recipe.title, "smoke": smoke,
                                                          "runs": summary}, indent=1) + "\n")
    echo(text)
    return results


def _synthetic(out_dir: Path, steps: Sequence[Step]) -> None:
    """Generate the smoke set once into ``OUT/data`` at the size of the pretraining step (or 32 px)."""
    from pipelines.config import DataConfig
    from pipelines.distributed import DistributedContext
    from pipelines.prepare import prepare_data

    smoke = _read_yaml(RECIPE_DIR / f"{SMOKE_FILE}.yaml")
    size = int((smoke.get("pretrain") or {}).get("model.image_size", 32))
    prepare_data(DataConfig(synthetic_n=int(smoke.get("synthetic_n", 40))), out_dir, size, DistributedContext())


def _check_label_sets(recipe: Recipe, data: Mapping[str, str]) -> None:
    """Each dataset with a label set has its ``labels_<set>.csv`` beside its manifest; without it
    diagnosis would silently fall back to the CheXpert labels of the records.

    Raises:
        InputError: the file is missing (named, with the command that writes it).
    """
    from pipelines.prepare import find_manifest

    for key in dict.fromkeys(run.dataset for run in recipe.runs):
        spec = recipe.datasets[key]
        if spec.label_set is not None and key in data:
            labels = find_manifest(data[key]).parent / LABELS_CSV.format(name=spec.label_set)
            if not labels.is_file():
                raise InputError(f"dataset {key!r} has no {labels.name} beside its manifest; "
                                 f"build it with: {spec.build}", file=labels, field="--data")


def smoke_manifest(out_dir: str | Path, spec: DatasetSpec) -> Path:
    """The manifest ``--smoke`` runs ``spec``'s runs on: the synthetic set, or for a dataset with a
    label set its copy in ``OUT/data/<key>/`` (:func:`_smoke_label_set`)."""
    data = Path(out_dir) / "data"
    return data / (f"{spec.key}/manifest.jsonl" if spec.label_set is not None else "manifest.jsonl")


def _smoke_label_set(out_dir: Path, spec: DatasetSpec) -> None:
    """Copy the synthetic set for ``spec`` with ``labels_<set>.csv`` beside it: each study a seeded
    random 1 / 0 per class of the set, as ``motor build-dataset`` writes a real one (the smoke
    figures mean nothing; this makes diagnosis train and score the set's classes)."""
    import csv
    import random
    from dataclasses import replace

    from kg.manifest import read_manifest, write_manifest
    from pipelines.builders.chestxray14 import read_label_set

    source = out_dir / "data" / "manifest.jsonl"
    target = smoke_manifest(out_dir, spec)
    records = [replace(r, image=[str((source.parent / image).resolve()) for image in r.images])
               for r in read_manifest(source)]
    target.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(records, target)
    names = read_label_set(LABEL_SET_YAML.format(name=spec.label_set)).names
    rng = random.Random(0)
    rows = [["study_id", *names]] + [[r.study_id, *(rng.choice("01") for _ in names)] for r in records]
    with (target.parent / LABELS_CSV.format(name=spec.label_set)).open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
