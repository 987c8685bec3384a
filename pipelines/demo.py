"""``motor demo``: the whole pipeline in a few minutes on a CPU, offline.

1. generate the embedded synthetic chest X-ray set;
2. build the specific-knowledge store from its training reports (gold RadGraph annotations) and
   show what it holds;
3. pretrain full MOTOR (GK + SK + MLC) briefly with the tiny config;
4. zero-shot image-report retrieval on the test split, next to chance level;
5. brief finetuning and test evaluation of the four downstream tasks (retrieval, generation,
   diagnosis, VQA), each next to its reference baseline, gathered in one table.

Everything lands in one run directory (``runs/demo`` by default): ``data/``, ``knowledge/``, the
pretraining run bundle (``config.yaml``, ``metrics.json``, ``checkpoints/``, ``model/`` ...),
``finetune/<task>/`` (one finetuning run bundle per task) and ``summary.md`` / ``summary.json``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kg.atomic import write_text_atomic
from kg.errors import InputError
from pipelines.config import FinetuneConfig, PretrainConfig, builtin_config, load_config, resolve_model_config
from pipelines.distributed import DistributedContext
from pipelines.prepare import RADGRAPH_NAME, companion_file, prepare_data
from pipelines.pretrain import pretrain
from pipelines.run_bundle import RunResult, write_json
from pipelines.sk_store import STORE_NAME, build_training_store
from pipelines.tasks import TASKS

STAGES = 5
FINETUNE_DIR = "finetune"


@dataclass
class DemoResult:
    """The demo's runs and their one-table summary.

    Attributes:
        pretrain: the pretraining run (``metrics["zero_shot_retrieval"]``).
        finetune: task → its finetuning run (``metrics["test"]``).
        summary: rows ``{"task", "metric", "motor", "baseline", "baseline_name"}``.
    """

    pretrain: RunResult
    finetune: dict[str, RunResult] = field(default_factory=dict)
    summary: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> str:
        """The summary as a markdown table."""
        lines = ["| task | metric (test split) | MOTOR | baseline |", "|:--|:--|--:|:--|"]
        for row in self.summary:
            motor = "–" if row["motor"] is None else f"{row['motor']:.3f}"
            baseline = "–" if row["baseline"] is None else f"{row['baseline']:.3f} ({row['baseline_name']})"
            lines.append(f"| {row['task']} | {row['metric']} | {motor} | {baseline} |")
        return "\n".join(lines) + "\n"

    def save_to_directory(self, directory: str | Path) -> Path:
        """Write ``summary.md`` and ``summary.json`` into ``directory``."""
        directory = Path(directory)
        write_text_atomic(directory / "summary.md", "# MOTOR demo\n\n" + self.table())
        write_json(directory / "summary.json", self.summary)
        return directory


def demo_config(n: int, image_size: int, steps: int | None, overrides: list[str]) -> PretrainConfig:
    """The tiny pretraining config at the demo's size and budget (``steps`` optimizer steps, if given)."""
    settings = [f"data.synthetic_n={n}", f"model.image_size={image_size}", "model.knowledge=full"]
    if steps is not None:
        settings.append(f"train.max_steps={steps}")
    return load_config(PretrainConfig, builtin_config("pretrain_tiny"), settings + list(overrides))


def demo(
    out_dir: str | Path = "runs/demo",
    *,
    n: int = 600,
    image_size: int = 64,
    steps: int | None = None,
    overrides: list[str] | None = None,
    tasks: Sequence[str] = TASKS,
    finetune_epochs: int | None = None,
    finetune_overrides: list[str] | None = None,
    show_progress: bool = True,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo stages into ``out_dir`` and print what each produced.

    Args:
        out_dir: the run directory.
        n: synthetic studies (80/10/10 train/val/test).
        image_size: image side in pixels.
        steps: pretraining optimizer steps (default: the tiny config's epochs).
        overrides: further ``key=value`` pretraining config overrides.
        tasks: downstream tasks to finetune and evaluate (empty: stop after zero-shot retrieval).
        finetune_epochs: epochs of each finetuning (default: each ``finetune_<task>.yaml``'s).
        finetune_overrides: further ``key=value`` overrides of every finetuning config.

    Returns:
        The :class:`DemoResult` (also saved as ``summary.md`` / ``summary.json`` in ``out_dir``).
    """
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise InputError(f"unknown task {unknown[0]!r}; choose from {', '.join(TASKS)}", field="--tasks")
    out_dir = Path(out_dir)
    config = demo_config(n, image_size, steps, overrides or [])
    model_config = resolve_model_config(config.model)

    _header(echo, 1, f"Synthetic chest X-ray data ({n} studies, {image_size} px)")
    manifest = prepare_data(config.data, out_dir, model_config.image_size, DistributedContext())
    studies = _training_studies(manifest)
    echo(f"manifest: {manifest}  ({len(studies)} training studies)")
    echo(f"example report ({studies[0][0]}): {studies[0][1]}")

    _header(echo, 2, "Knowledge: GK graph and SK store from the training reports")
    from kg.gk import load_gk

    gk = load_gk()
    echo(f"general knowledge graph: {len(gk)} nodes ({len(gk.organs)} organs, {len(gk.findings)} findings), "
         f"{len(gk.edges())} edges")
    store = out_dir / "knowledge" / STORE_NAME
    stats = build_training_store(studies, store, radgraph_path=companion_file(manifest, RADGRAPH_NAME))
    echo(str(stats))
    from kg.retrieval import KnowledgeBase

    with KnowledgeBase.open(store) as kb:
        echo(f"SK sentence of {studies[0][0]}: {kb.sk_sentence([studies[0][0]]) or '(no triplets)'}")

    _header(echo, 3, "Pretraining MOTOR (GK + SK + MLC), tiny config")
    config.data.manifest = str(manifest)
    config.knowledge.store = str(store)
    result = pretrain(config, out_dir, show_progress=show_progress, echo=echo)
    training = result.metrics["training"]
    echo(f"{training['steps']} steps, {training['samples_seen']} samples in {training['seconds']:.0f} s")

    _header(echo, 4, "Zero-shot image-report retrieval on the test split")
    retrieval = result.metrics["zero_shot_retrieval"]
    echo(retrieval_report(retrieval))

    outcome = DemoResult(pretrain=result)
    outcome.summary.append(_summary_row(
        "retrieval (zero-shot)", "report R@10", retrieval["itc"]["i2t_R@10"],
        retrieval["itc"]["chance"]["i2t_R@10"], "chance"))
    if tasks:
        from pipelines.finetune import finetune

        _header(echo, 5, f"Downstream tasks: {', '.join(tasks)} (brief finetuning, test split)")
        for task in tasks:
            settings = [f"task={task}", f"init_from={out_dir}", f"data.manifest={manifest}",
                        f"train.deterministic={str(config.train.deterministic).lower()}"]
            if finetune_epochs is not None:
                settings.append(f"train.epochs={finetune_epochs}")
            task_config = load_config(FinetuneConfig, builtin_config(f"finetune_{task}"),
                                      settings + list(finetune_overrides or []))
            echo(f"--- {task}")
            run = finetune(task_config, out_dir / FINETUNE_DIR / task, show_progress=show_progress, echo=None)
            outcome.finetune[task] = run
            outcome.summary.extend(_task_rows(task, run.metrics))
            echo(f"{run.metrics['training']['steps']} steps in {run.metrics['training']['seconds']:.0f} s; "
                 f"{out_dir / FINETUNE_DIR / task / 'metrics.md'}")
    outcome.save_to_directory(out_dir)
    echo("\n" + outcome.table())
    echo(f"outputs: {out_dir}  (summary.md; pretraining bundle and model/; "
         f"{FINETUNE_DIR}/<task>/metrics.md for each task)")
    return outcome


def _summary_row(task: str, metric: str, motor: float | None, baseline: float | None, name: str) -> dict[str, Any]:
    return {"task": task, "metric": metric, "motor": motor, "baseline": baseline, "baseline_name": name}


def _task_rows(task: str, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline figures of one finetuned task next to its baseline."""
    test = metrics["test"]
    if task == "retrieval":
        itc = test["itc"]
        return [_summary_row("retrieval (finetuned)", "report R@10", itc["i2t_R@10"], itc["chance"]["i2t_R@10"], "chance"),
                _summary_row("retrieval (finetuned)", "image R@10", itc["t2i_R@10"], itc["chance"]["t2i_R@10"], "chance")]
    if task == "generation":
        baseline = test["most_frequent_report"]
        rows = [_summary_row("generation", "CIDEr (greedy)", test["greedy"]["CIDEr"], baseline["CIDEr"], "most frequent report"),
                _summary_row("generation", "BLEU-4 (greedy)", test["greedy"]["BLEU-4"], baseline["BLEU-4"], "most frequent report")]
        if "beam" in test:
            rows.append(_summary_row("generation", f"CIDEr (beam {test['num_beams']})", test["beam"]["CIDEr"],
                                     baseline["CIDEr"], "most frequent report"))
        if "clinical_efficacy" in test["greedy"]:
            rows.append(_summary_row(
                "generation", "CE micro F1 (greedy, uncertain negative)",
                test["greedy"]["clinical_efficacy"]["uncertain_negative"]["f1_micro"],
                baseline["clinical_efficacy"]["uncertain_negative"]["f1_micro"], "most frequent report"))
        rows += _f1_radgraph_rows(test["greedy"].get("f1_radgraph"), baseline.get("f1_radgraph"))
        return rows
    if task == "diagnosis":
        return [_summary_row("diagnosis", "mean AUROC", test["mean_auroc"], 0.5, "chance"),
                _summary_row("diagnosis", "macro F1", test["macro_f1"], None, "")]
    return [_summary_row("vqa", f"{kind} accuracy", test["model"][kind], test["majority_answer"][kind], "majority answer")
            for kind in ("closed", "open", "overall")]


def _f1_radgraph_rows(greedy: dict[str, Any] | None, baseline: dict[str, Any] | None) -> list[dict[str, Any]]:
    """F1-RadGraph summary rows (RG_E, RG_ER, RG_ER-bar), each naming its annotator."""
    from pipelines.metrics.radgraph import TABLE_COLUMNS

    if not greedy:
        return []
    return [_summary_row("generation", f"F1-RadGraph {name} (greedy; {greedy['annotator']})", greedy[key],
                         baseline[key] if baseline else None, "most frequent report")
            for key, name in TABLE_COLUMNS.items()]


def retrieval_report(retrieval: dict) -> str:
    """A small text table of R@1/5/10 in both directions next to chance level."""
    itc = retrieval["itc"]
    lines = [f"{retrieval['n']} test studies ({retrieval['distinct_reports']} distinct reports)",
             f"{'':18s}{'R@1':>8s}{'R@5':>8s}{'R@10':>8s}"]
    for direction, name in (("i2t", "report retrieval"), ("t2i", "image retrieval")):
        lines.append(f"{name:18s}" + "".join(f"{itc[f'{direction}_R@{k}']:8.3f}" for k in (1, 5, 10)))
        lines.append(f"{'  chance':18s}" + "".join(f"{itc['chance'][f'{direction}_R@{k}']:8.3f}" for k in (1, 5, 10)))
    return "\n".join(lines)


def _header(echo: Callable[[str], None], number: int, title: str) -> None:
    echo(f"\n=== [{number}/{STAGES}] {title} ===")


def _training_studies(manifest: Path) -> list[tuple[str, str]]:
    from kg.manifest import read_manifest

    return [(record.study_id, record.report) for record in read_manifest(manifest) if record.split == "train"]
