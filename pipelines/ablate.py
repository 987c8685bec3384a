"""Knowledge ablation (the paper's Table 1): the same pretraining under each knowledge switch.

Every variant uses the same data, seed, tokenizer vocabulary and step budget; only
``model.knowledge`` differs, or, for a method variant (``m3ae:mlm``, ``arl:rk``, ...;
:data:`model.variants.METHOD_VARIANTS`), the method and its ``coattention`` switches, so MOTOR,
M3AE and ARL rows come side by side. Rows of methods without ITC are ranked by ITM. Each is scored by zero-shot image-report retrieval on the test split.
The output directory holds one pretraining run per variant (``OUT/<variant>/``), ``ablation.md``
(a markdown table laid out as Table 1: variants with GK / SK / MLC check marks, report and image
retrieval R@1/5/10 in percent; then each recall's 95 % bootstrap interval over the test studies and,
with ``none`` among the variants, each variant's difference from it with a paired permutation
p-value, :mod:`pipelines.report_significance`), ``ablation.png`` (bar chart) and the usual run bundle.

A variant whose run directory already holds the results of the same configuration is not
re-trained, so an interrupted ablation continues where it stopped.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from kg.atomic import write_atomic, write_text_atomic
from kg.errors import InputError
from model.variants import KNOWLEDGE_VARIANTS, METHOD_VARIANT_NAMES, knowledge_variant, method_variant
from pipelines.config import PretrainConfig, dump_config, to_dict
from pipelines.distributed import DistributedContext
from pipelines.per_study import split_per_study
from pipelines.prepare import prepare_data
from pipelines.run_bundle import RunResult, describe_file

KS = (1, 5, 10)


def ranked_by(retrieval: dict[str, Any]) -> dict[str, Any]:
    """:func:`pipelines.evaluate.ranked_by` (imported when a table is made)."""
    from pipelines.evaluate import ranked_by as primary

    return primary(retrieval)


def parse_variants(text: str) -> list[str]:
    """``"none,gk,full"`` → ``["none", "gk", "full"]``.

    Raises:
        InputError: an unknown or repeated variant, or none at all.
    """
    names = [name.strip() for name in text.replace(" ", ",").split(",") if name.strip()]
    known = KNOWLEDGE_VARIANTS + METHOD_VARIANT_NAMES
    for name in names:
        if name not in known:
            raise InputError(f"unknown variant {name!r}; choose from {', '.join(known)}", field="--variants")
    if not names or len(set(names)) != len(names):
        raise InputError(f"give each variant once, e.g. {','.join(KNOWLEDGE_VARIANTS)}; got {text!r}", field="--variants")
    return names


def _variant_config(config: PretrainConfig, variant: str, manifest: Path) -> PretrainConfig:
    switches = method_variant(variant)
    if switches is None:
        model = {**config.model, "knowledge": variant}
    else:
        # The shared settings (preset, sizes) stay; MOTOR's knowledge switch is not the method's, and
        # an objectives list would override the variant's switches.
        model = {k: v for k, v in config.model.items() if k not in ("knowledge", "method", "coattention", "objectives")}
        model.update(method=switches.method, coattention=switches.coattention)
    return dataclasses.replace(
        config,
        model=model,
        data=dataclasses.replace(config.data, manifest=str(manifest)),
    )


def _finished(run_dir: Path, config: PretrainConfig) -> dict[str, Any] | None:
    """The saved retrieval metrics of ``run_dir`` if it completed with exactly ``config``."""
    import json

    config_file, metrics_file = run_dir / "config.yaml", run_dir / "metrics.json"
    if not (config_file.is_file() and metrics_file.is_file()):
        return None
    if yaml.safe_load(config_file.read_text(encoding="utf-8")) != yaml.safe_load(dump_config(config)):
        return None
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    return metrics.get("zero_shot_retrieval")


def ablate(
    config: PretrainConfig,
    variants: Sequence[str],
    out_dir: str | Path,
    *,
    show_progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> RunResult:
    """Pretrain and evaluate each knowledge variant with the same data, seed and budget.

    Args:
        config: the pretraining configuration shared by all variants (its ``model.knowledge`` is
            replaced per variant).
        variants: knowledge switches to run, in table order.
        out_dir: output directory.
        echo: where progress messages go; ``None`` is silent.

    Returns:
        The ablation's :class:`RunResult`; ``metrics[variant]`` is that variant's zero-shot
        retrieval (``itc`` recalls with their ``chance`` levels, ``n``).
    """
    from pipelines.pretrain import pretrain

    say = echo or (lambda message: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    image_size = _image_size(config)
    manifest = prepare_data(config.data, out_dir, image_size, DistributedContext())
    results: dict[str, Any] = {}
    for variant in variants:
        variant_config = _variant_config(config, variant, manifest)
        run_dir = out_dir / _directory(variant)
        done = _finished(run_dir, variant_config)
        if done is not None:
            say(f"[{variant}] already done in {run_dir}; reusing its results")
            results[variant] = done
            continue
        say(f"[{variant}] pretraining into {run_dir}")
        result = pretrain(variant_config, run_dir, show_progress=show_progress, echo=None)
        # Per-study ranks stay in the variant's own run (OUT/<variant>/per_study/), as for a reused run.
        results[variant] = split_per_study(result.metrics["zero_shot_retrieval"])[0]
    from pipelines.report_significance import ablation_significance, ablation_significance_table

    uncertainty = ablation_significance({variant: out_dir / variant.replace("+", "_") for variant in variants})
    table = ablation_table(results) + ablation_significance_table(uncertainty)
    write_text_atomic(out_dir / "ablation.md", table)
    plot_ablation(results, out_dir / "ablation.png", intervals=uncertainty.intervals if uncertainty else None)
    ablation = RunResult(
        kind="ablate",
        config={"variants": list(variants), "pretrain": to_dict(config)},
        metrics=results,
        seeds={"train": config.train.seed, "synthetic_data": config.data.synthetic_seed},
        data={"manifest": describe_file(manifest)},
        checkpoints={variant: f"{_directory(variant)}/model" for variant in variants},
        metrics_markdown=table,
        run_dir=out_dir,
    )
    ablation.save_to_directory(out_dir)
    say(table)
    return ablation


def _directory(variant: str) -> str:
    """The run directory name of a variant (``gk+sk`` → ``gk_sk``, ``arl:rk`` → ``arl_rk``)."""
    return variant.replace("+", "_").replace(":", "_")


def _image_size(config: PretrainConfig) -> int:
    from pipelines.config import resolve_model_config

    return resolve_model_config(config.model).image_size


def ablation_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table in the layout of the paper's Table 1 (recalls in percent).

    Args:
        results: variant → ``{"itc": {"i2t_R@1", ..., "t2i_R@10", "chance": {...}}, "n": N}`` as
            :func:`pipelines.evaluate.retrieval_evaluation` returns it.
    """
    header = ["Variant", "GK", "SK", "MLC"] + [f"Report R@{k}" for k in KS] + [f"Image R@{k}" for k in KS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":--", ":-:", ":-:", ":-:"] + ["--:"] * 6) + "|"]
    for variant, retrieval in results.items():
        if method_variant(variant) is None:
            switches = knowledge_variant(variant)
            marks = ["✓" if on else "" for on in (switches.gk, switches.sk, switches.mlc)]
        else:
            marks = ["", "", ""]
        scores = ranked_by(retrieval)
        recalls = [100 * scores[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in KS]
        label = variant if retrieval.get("ranked_by", "itc") == "itc" else f"{variant} (ITM)"
        lines.append("| " + " | ".join([label, *marks, *(f"{value:.1f}" for value in recalls)]) + " |")
    some = next(iter(results.values()))
    chance = [100 * ranked_by(some)["chance"][f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in KS]
    lines.append("| chance |  |  |  | " + " | ".join(f"{value:.1f}" for value in chance) + " |")
    return (
        "\n".join(lines)
        + f"\n\nZero-shot retrieval on {some['n']} test studies (report retrieval: image → report; "
        "image retrieval: report → image), recall in percent; rows marked (ITM) rank every pair by "
        "ITM (methods without ITC), the others by ITC.\n"
    )


def plot_ablation(results: dict[str, dict[str, Any]], path: str | Path, intervals: dict[str, Any] | None = None) -> None:
    """Grouped bar chart of R@1/5/10 per variant, report and image retrieval side by side, as PNG.

    Args:
        intervals: variant → ``"i2t_R@K"`` → :class:`~pipelines.metrics.significance.Interval`;
            drawn as error bars (the 95 % bootstrap interval over test studies) when given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    variants = list(results)
    width = 0.8 / len(KS)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    chance = ranked_by(next(iter(results.values())))["chance"]
    for axis, (direction, title) in zip(axes, (("i2t", "Report retrieval"), ("t2i", "Image retrieval"))):
        positions = np.arange(len(variants))
        for offset, k in enumerate(KS):
            values = [100 * ranked_by(results[v])[f"{direction}_R@{k}"] for v in variants]
            errors = None
            if intervals is not None:
                cis = [intervals[v][f"{direction}_R@{k}"] for v in variants]
                errors = [[max(0.0, value - 100 * ci.low) for value, ci in zip(values, cis)],
                          [max(0.0, 100 * ci.high - value) for value, ci in zip(values, cis)]]
            axis.bar(positions + (offset - 1) * width, values, width, label=f"R@{k}", yerr=errors, capsize=2)
            axis.axhline(100 * chance[f"{direction}_R@{k}"], color=f"C{offset}", linestyle=":", linewidth=1)
        axis.set_xticks(positions, variants)
        axis.set_title(title)
        axis.set_xlabel("knowledge")
    axes[0].set_ylabel("recall (%)  — dotted: chance" + (", bars: 95 % CI" if intervals is not None else ""))
    axes[1].legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    try:
        write_atomic(path, lambda tmp: figure.savefig(tmp, dpi=120), suffix=".png")
    finally:
        plt.close(figure)
