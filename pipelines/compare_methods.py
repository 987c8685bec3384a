"""One table of several methods (``motor ablate --methods motor m3ae arl medvill``).

Each method of :mod:`model.registry` named is pretrained in its default form (its preset: MOTOR
with all its knowledge, M3AE with MLM and MIM, ARL with AK, RK and LK, MedViLL with the BAR mask)
on the same data, seed, tokenizer vocabulary and step budget, and so is each extra variant
(``--variants``, e.g. ``medvill:s2s``); each is then finetuned and evaluated on the same
downstream tasks with the same finetuning settings. Only the settings a method has are carried
over from the shared ``model`` section (``preset``, sizes, dropout; never another method's
variant switch, :data:`pipelines.ablate.METHOD_SWITCHES`).

The output directory holds one pretraining run per row (``OUT/<row>/``, as ``motor ablate``
writes them), one finetuning run per row and task (``OUT/finetune/<row>-<task>/``), and

* ``methods.md`` / ``methods.csv``: a row per method or variant, a column per figure (zero-shot
  retrieval R@10 and MRR, ranked by ITC or by the matching head; diagnosis mean AUROC and macro
  F1; greedy BLEU-4 and CIDEr of generated reports; VQA overall accuracy), then the rows
  ``chance`` (random ranking, AUROC 0.5) and ``baseline`` (the most frequent training report, the
  majority answer) for the same columns;
* ``methods.png``: one bar chart per column, chance or baseline as a dotted line;
* the run bundle, whose ``metrics.json`` holds the table's numbers by row and column, so
  ``motor report OUT_s0 OUT_s1 ...`` pools runs that differ only by seed into mean ± std.

A run whose directory already holds the results of the same configuration is not re-trained, so
an interrupted comparison continues where it stopped. A task that fails for one row (a method
without that task) does not lose the other rows: its cells read ``–``, ``methods.md`` lists the
error, ``metrics.json`` records it under ``failures`` and ``motor ablate`` exits with status 1.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from kg.atomic import write_atomic, write_text_atomic
from kg.errors import InputError
from model.registry import DEFAULT_METHOD
from pipelines.ablate import _directory, _finished, _image_size, _variant_config, ranked_by, shared_model_settings
from pipelines.config import FinetuneConfig, PretrainConfig, dump_config, finetune_config_for, load_config, to_dict
from pipelines.distributed import DistributedContext
from pipelines.per_study import split_per_study
from pipelines.prepare import prepare_data
from pipelines.run_bundle import RunResult, describe_file

#: The downstream tasks every row is finetuned on by default.
DEFAULT_TASKS = ("retrieval", "diagnosis", "generation", "vqa")

#: Table columns: key → (header, task or ``zero_shot``).
COLUMNS: dict[str, tuple[str, str]] = {
    "zs_i2t_R@10": ("Zero-shot report R@10", "zero_shot"),
    "zs_t2i_R@10": ("Zero-shot image R@10", "zero_shot"),
    "zs_i2t_MRR": ("Zero-shot report MRR", "zero_shot"),
    "zs_t2i_MRR": ("Zero-shot image MRR", "zero_shot"),
    "ft_i2t_R@10": ("Finetuned report R@10", "retrieval"),
    "ft_t2i_R@10": ("Finetuned image R@10", "retrieval"),
    "ft_i2t_MRR": ("Finetuned report MRR", "retrieval"),
    "diagnosis_auroc": ("Diagnosis mean AUROC", "diagnosis"),
    "diagnosis_f1": ("Diagnosis macro F1", "diagnosis"),
    "generation_bleu4": ("Generation BLEU-4", "generation"),
    "generation_cider": ("Generation CIDEr", "generation"),
    "vqa_overall": ("VQA overall accuracy", "vqa"),
}


def parse_methods(names: Sequence[str]) -> list[str]:
    """The method names, each registered and given once.

    Raises:
        InputError: an unknown or repeated method, or none at all.
    """
    from model.registry import method_names

    names = [n.strip() for text in names for n in text.replace(",", " ").split() if n.strip()]
    for name in names:
        if name not in method_names():
            raise InputError(f"unknown method {name!r}; choose from {', '.join(method_names())}", field="--methods")
    if not names or len(set(names)) != len(names):
        raise InputError(f"give each method once, e.g. {' '.join(method_names())}; got {' '.join(names)!r}",
                         field="--methods")
    return names


def method_config(config: PretrainConfig, method: str, manifest: Path) -> PretrainConfig:
    """The pretraining config of ``method``'s default row: its preset, the shared settings it has."""
    return dataclasses.replace(config, model=shared_model_settings(config.model, method),
                               data=dataclasses.replace(config.data, manifest=str(manifest)))


def _finished_metrics(run_dir: Path, config: Any) -> dict[str, Any] | None:
    """``metrics.json`` of ``run_dir`` if it completed with exactly ``config``."""
    config_file, metrics_file = run_dir / "config.yaml", run_dir / "metrics.json"
    if not (config_file.is_file() and metrics_file.is_file()):
        return None
    if yaml.safe_load(config_file.read_text(encoding="utf-8")) != yaml.safe_load(dump_config(config)):
        return None
    return json.loads(metrics_file.read_text(encoding="utf-8"))


def compare_methods(
    config: PretrainConfig,
    methods: Sequence[str],
    out_dir: str | Path,
    *,
    variants: Sequence[str] = (),
    tasks: Sequence[str] = DEFAULT_TASKS,
    finetune_overrides: Sequence[str] = (),
    show_progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> RunResult:
    """Pretrain, finetune and evaluate each method (and variant) alike, and tabulate them.

    Args:
        config: the pretraining configuration every row shares (data, seed, budget, ``model.preset``).
        methods: registered method names, each a row in its default form.
        out_dir: output directory.
        variants: further rows, as ``motor ablate --variants`` names them (``medvill:s2s``, ``gk``).
        tasks: downstream tasks of :mod:`pipelines.tasks` to finetune and evaluate every row on.
        finetune_overrides: ``KEY=VALUE`` items applied to every finetuning run (e.g. its budget).
        echo: where progress messages go; ``None`` is silent.

    Returns:
        The comparison's :class:`RunResult`; ``metrics[row][column]`` are the table's numbers.
    """
    from pipelines.finetune import finetune
    from pipelines.pretrain import pretrain
    from pipelines.tasks import TASKS

    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise InputError(f"unknown task {unknown[0]!r}; choose from {', '.join(TASKS)}", field="--tasks")
    say = echo or (lambda message: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = prepare_data(config.data, out_dir, _image_size(config), DistributedContext())
    rows = {method: method_config(config, method, manifest) for method in methods}
    rows.update({variant: _variant_config(config, variant, manifest) for variant in variants})

    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, dict[str, str]] = {}
    for row, row_config in rows.items():
        run_dir = out_dir / _directory(row)
        zero_shot = _finished(run_dir, row_config)
        if zero_shot is None:
            say(f"[{row}] pretraining into {run_dir}")
            result = pretrain(row_config, run_dir, show_progress=show_progress, echo=None)
            zero_shot = split_per_study(result.metrics["zero_shot_retrieval"])[0]
        else:
            say(f"[{row}] pretraining already done in {run_dir}; reusing it")
        results[row] = {"zero_shot": zero_shot}
        method = row_config.model.get("method", DEFAULT_METHOD)
        for task in tasks:
            task_dir = out_dir / "finetune" / f"{_directory(row)}-{task}"
            task_config = load_config(
                FinetuneConfig, finetune_config_for(task, method),
                [f"task={task}", f"init_from={run_dir}", f"train.seed={config.train.seed}",
                 f"train.deterministic={str(config.train.deterministic).lower()}", *finetune_overrides],
            )
            done = _finished_metrics(task_dir, task_config)
            if done is None:
                say(f"[{row}] finetuning {task} into {task_dir}")
                try:
                    done = finetune(task_config, task_dir, show_progress=show_progress, echo=None).metrics
                except Exception as err:  # noqa: BLE001 - one method lacking a task must not lose the others' rows
                    failures.setdefault(row, {})[task] = f"{type(err).__name__}: {err}"
                    say(f"[{row}] {task} failed: {failures[row][task]}")
                    continue
            else:
                say(f"[{row}] {task} already done in {task_dir}; reusing it")
            results[row][task] = done["test"]

    table = {row: table_row(metrics) for row, metrics in results.items()}
    columns = [key for key, (_, task) in COLUMNS.items() if task == "zero_shot" or task in tasks]
    reference = reference_rows(results, columns)
    markdown = methods_table(table, reference, columns, n_test=ranked_by(results[next(iter(results))]["zero_shot"]),
                             failures=failures)
    write_text_atomic(out_dir / "methods.md", markdown)
    write_text_atomic(out_dir / "methods.csv", methods_csv(table, reference, columns))
    plot_methods(table, reference, columns, out_dir / "methods.png")
    comparison = RunResult(
        kind="ablate",
        config={"methods": list(methods), "variants": list(variants), "tasks": list(tasks),
                "finetune_overrides": list(finetune_overrides), "pretrain": to_dict(config)},
        metrics={**{row: {k: v for k, v in values.items() if k in columns} for row, values in table.items()},
                 **({"failures": failures} if failures else {})},
        seeds={"train": config.train.seed, "synthetic_data": config.data.synthetic_seed},
        data={"manifest": describe_file(manifest)},
        checkpoints={row: f"{_directory(row)}/model" for row in rows},
        metrics_markdown=markdown,
        run_dir=out_dir,
    )
    comparison.save_to_directory(out_dir)
    say(markdown)
    return comparison


def table_row(metrics: dict[str, Any]) -> dict[str, Any]:
    """A row's figures by column key, from ``{"zero_shot": retrieval, task: test metrics, ...}``
    (``None`` where a figure is missing)."""
    row: dict[str, Any] = {"ranked_by": metrics["zero_shot"].get("ranked_by", "itc")}
    zero_shot = ranked_by(metrics["zero_shot"])
    for key in ("i2t_R@10", "t2i_R@10", "i2t_MRR", "t2i_MRR"):
        row[f"zs_{key}"] = zero_shot.get(key)
    if "retrieval" in metrics:
        finetuned = ranked_by(metrics["retrieval"])
        for key in ("i2t_R@10", "t2i_R@10", "i2t_MRR"):
            row[f"ft_{key}"] = finetuned.get(key)
    if "diagnosis" in metrics:
        row["diagnosis_auroc"] = metrics["diagnosis"].get("mean_auroc")
        row["diagnosis_f1"] = metrics["diagnosis"].get("macro_f1")
    if "generation" in metrics:
        row["generation_bleu4"] = metrics["generation"]["greedy"].get("BLEU-4")
        row["generation_cider"] = metrics["generation"]["greedy"].get("CIDEr")
    if "vqa" in metrics:
        row["vqa_overall"] = metrics["vqa"]["model"].get("overall")
    return row


def reference_rows(results: dict[str, dict[str, Any]], columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``chance`` (random ranking, AUROC 0.5) and ``baseline`` (most frequent training report,
    majority answer) for ``columns``; every row shares the test split, so the first row that has a
    task's metrics gives its reference figures."""
    def first(task: str) -> dict[str, Any] | None:
        return next((metrics[task] for metrics in results.values() if task in metrics), None)

    chance: dict[str, Any] = {}
    baseline: dict[str, Any] = {}
    zero_shot = ranked_by(first("zero_shot"))["chance"]
    for key in ("i2t_R@10", "t2i_R@10", "i2t_MRR", "t2i_MRR"):
        chance[f"zs_{key}"] = zero_shot.get(key)
    if (retrieval := first("retrieval")) is not None:
        finetuned = ranked_by(retrieval)["chance"]
        for key in ("i2t_R@10", "t2i_R@10", "i2t_MRR"):
            chance[f"ft_{key}"] = finetuned.get(key)
    if "diagnosis_auroc" in columns:
        chance["diagnosis_auroc"] = 0.5
    if (generation := first("generation")) is not None and "most_frequent_report" in generation:
        frequent = generation["most_frequent_report"]
        baseline.update(generation_bleu4=frequent.get("BLEU-4"), generation_cider=frequent.get("CIDEr"))
    if (vqa := first("vqa")) is not None and "majority_answer" in vqa:
        baseline["vqa_overall"] = vqa["majority_answer"].get("overall")
    return {"chance": chance, "baseline": baseline}


def methods_table(table: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]], columns: Sequence[str],
                  n_test: dict[str, Any] | None = None, failures: dict[str, dict[str, str]] | None = None) -> str:
    """``methods.md``: rows of methods and variants, then ``chance`` and ``baseline``; recalls,
    MRR, AUROC, F1 and accuracy as fractions, BLEU-4 and CIDEr as the caption metrics give them."""
    from pipelines.metrics import metrics_table

    headers = {key: COLUMNS[key][0] for key in columns}
    rows = {(row if values.get("ranked_by", "itc") == "itc" else f"{row} (ITM)"): values for row, values in table.items()}
    text = metrics_table({**rows, **reference}, headers, row_header="Method")
    queries = f" on {n_test['n_images']} test studies" if n_test and "n_images" in n_test else ""
    return (text + f"\nSame data, seed and budget for every row{queries}. Zero-shot retrieval is ranked by "
            "ITC, or, for rows marked (ITM), by the image-text matching head (ITM, MedViLL's IRM) over "
            "every pair; finetuned figures come from the same finetuning settings for every row. chance: "
            "a random ranking, AUROC 0.5; baseline: the most frequent training report (generation), the "
            "majority training answer per answer type (VQA). – : not applicable or failed.\n"
            + "".join(f"\n- {row}, {task} failed: {message}" for row, tasks in (failures or {}).items()
                      for task, message in tasks.items())
            + ("\n" if failures else ""))


def methods_csv(table: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]], columns: Sequence[str]) -> str:
    """``methods.csv``: a ``row`` column, then one column per figure (empty where missing)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "ranked_by", *columns])
    for name, values in {**table, **reference}.items():
        cells = ["" if values.get(key) is None else f"{values[key]:.6g}" for key in columns]
        writer.writerow([name, values.get("ranked_by", ""), *cells])
    return buffer.getvalue()


def plot_methods(table: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]], columns: Sequence[str],
                 path: str | Path) -> None:
    """One bar chart per column (a bar per row), chance or baseline as a dotted line; PNG."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(table)
    per_line = 4
    lines = math.ceil(len(columns) / per_line)
    figure, axes = plt.subplots(lines, per_line, figsize=(3.2 * per_line, 2.8 * lines), squeeze=False)
    for axis, key in zip(axes.flat, columns):
        values = [table[row].get(key) for row in rows]
        axis.bar(range(len(rows)), [0.0 if v is None else v for v in values], color=[f"C{i}" for i in range(len(rows))])
        for name, style in (("chance", ":"), ("baseline", "--")):
            level = reference[name].get(key)
            if level is not None:
                axis.axhline(level, color="black", linestyle=style, linewidth=1, label=name)
        axis.set_xticks(range(len(rows)), rows, rotation=30, ha="right", fontsize="small")
        axis.set_title(COLUMNS[key][0], fontsize="small")
    for axis in list(axes.flat)[len(columns):]:
        axis.set_visible(False)
    handles = {label: handle for axis in axes.flat for handle, label in zip(*axis.get_legend_handles_labels())}
    if handles:
        figure.legend(handles.values(), handles.keys(), loc="upper center", ncol=len(handles), fontsize="small")
    figure.tight_layout(rect=(0, 0, 1, 0.96))  # room for the legend above the charts
    try:
        write_atomic(path, lambda tmp: figure.savefig(tmp, dpi=110), suffix=".png")
    finally:
        plt.close(figure)
