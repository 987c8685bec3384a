"""``motor demo``: the whole pipeline in a few minutes on a CPU, offline.

1. generate the embedded synthetic chest X-ray set;
2. build the specific-knowledge store from its training reports (gold RadGraph annotations) and
   show what it holds;
3. pretrain full MOTOR (GK + SK + MLC) briefly with the tiny config;
4. zero-shot image-report retrieval on the test split, next to chance level.

Everything lands in one run directory (``runs/demo`` by default): ``data/``, ``knowledge/``, the
pretraining run bundle (``config.yaml``, ``metrics.json``, ``checkpoints/``, ``model/`` ...).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipelines.config import PretrainConfig, builtin_config, load_config, resolve_model_config
from pipelines.distributed import DistributedContext
from pipelines.knowledge import STORE_NAME, build_training_store
from pipelines.prepare import RADGRAPH_NAME, companion_file, prepare_data
from pipelines.pretrain import pretrain
from pipelines.run_bundle import RunResult

STAGES = 4


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
    show_progress: bool = True,
    echo: Callable[[str], None] = print,
) -> RunResult:
    """Run the four demo stages into ``out_dir`` and print what each produced.

    Args:
        out_dir: the run directory.
        n: synthetic studies (80/10/10 train/val/test).
        image_size: image side in pixels.
        steps: pretraining optimizer steps (default: the tiny config's epochs).
        overrides: further ``key=value`` config overrides.

    Returns:
        The pretraining :class:`RunResult`; ``metrics["zero_shot_retrieval"]`` holds the retrieval
        results with their chance levels.
    """
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
    echo(f"\nrun directory: {out_dir}  (finetune with: motor finetune --task diagnosis --from {out_dir})")
    return result


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
    from pipelines.data.manifest import read_manifest

    return [(record.study_id, record.report) for record in read_manifest(manifest) if record.split == "train"]
