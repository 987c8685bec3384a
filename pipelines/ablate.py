"""Knowledge ablation (the paper's Table 1): the same pretraining under each knowledge switch.

Every variant uses the same data, seed, tokenizer vocabulary and step budget; only
``model.knowledge`` differs, or, for a method variant (``m3ae:mlm``, ``arl:rk``, ``medvill:s2s``, ...;
:data:`model.variants.METHOD_VARIANTS`), the method and its switches (``coattention``, MedViLL's ``attention_mask``), so MOTOR,
M3AE, ARL and MedViLL rows come side by side (``motor ablate --methods``, :mod:`pipelines.compare_methods`, also finetunes them). Rows of methods without ITC are ranked by ITM. Each is scored by zero-shot image-report retrieval on the test split.
The output directory holds one pretraining run per variant (``OUT/<variant>/``), ``ablation.md``
(a markdown table laid out as Table 1: variants with GK / SK / MLC check marks, report and image
retrieval R@1/5/10 in percent; then each recall's 95 % bootstrap interval over the test studies and,
with ``none`` among the variants, each variant's difference from it with a paired permutation
p-value, :mod:`pipelines.report_significance`), ``ablation.png`` (bar chart) and the usual run bundle.

With ``seeds``, every variant runs once per training seed into ``OUT/<variant>/seed_<s>/`` (same
data, so the same test studies); the table then gives mean ± sample std over seeds, and the
intervals and paired tests pool the seeds (:func:`pipelines.report_significance.ablation_significance`).

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
        # The shared settings (preset, sizes) the method has stay; MOTOR's knowledge switch is not the method's.
        model = shared_model_settings(config.model, switches.method)
        if switches.coattention:
            model["coattention"] = switches.coattention
        model.update(switches.settings)
    return dataclasses.replace(
        config,
        model=model,
        data=dataclasses.replace(config.data, manifest=str(manifest)),
    )


#: Model settings that select a method's own variant; never carried over from one method to another.
# An objectives list would override a variant's switches, so it is not shared either.
METHOD_SWITCHES = ("knowledge", "coattention", "attention_mask", "objectives")


def shared_model_settings(model: dict[str, Any], method: str) -> dict[str, Any]:
    """The ``model`` section for ``method``: ``preset`` and the fields its config class has (sizes,
    dropout, ...), without the other methods' variant switches (:data:`METHOD_SWITCHES`)."""
    from model.registry import get_method

    fields = {f.name for f in dataclasses.fields(get_method(method).config_class())}
    kept = {k: v for k, v in model.items() if k in fields and k not in METHOD_SWITCHES}
    if "preset" in model:
        kept["preset"] = model["preset"]
    return {"method": method, **kept}


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
    seeds: Sequence[int] | None = None,
    show_progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> RunResult:
    """Pretrain and evaluate each knowledge variant with the same data, seed(s) and budget.

    Args:
        config: the pretraining configuration shared by all variants (its ``model.knowledge`` is
            replaced per variant).
        variants: knowledge switches to run, in table order.
        out_dir: output directory.
        seeds: training seeds (``train.seed``) to run every variant with, each into
            ``OUT/<variant>/seed_<s>/``; ``None`` runs ``config.train.seed`` once into
            ``OUT/<variant>/``. The data (``data.synthetic_seed``) and so the test studies stay the
            same for every seed.
        echo: where progress messages go; ``None`` is silent.

    Returns:
        The ablation's :class:`RunResult`; ``metrics[variant]`` is that variant's zero-shot
        retrieval (``itc`` recalls with their ``chance`` levels, ``n``); with ``seeds``, the recalls
        are the mean over seeds, with ``itc.std`` their sample standard deviation and ``seeds``
        each seed's own retrieval.
    """
    from pipelines.pretrain import pretrain

    say = echo or (lambda message: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_list = [config.train.seed] if seeds is None else list(seeds)
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise InputError(f"give each seed once, e.g. 0 1 2; got {seed_list}", field="--seeds")
    image_size = _image_size(config)
    manifest = prepare_data(config.data, out_dir, image_size, DistributedContext())
    per_seed: dict[str, dict[int, Any]] = {}
    run_dirs: dict[str, list[Path]] = {}
    for variant in variants:
        per_seed[variant], run_dirs[variant] = {}, []
        for seed in seed_list:
            seeded = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
            variant_config = _variant_config(seeded, variant, manifest)
            run_dir = out_dir / _directory(variant) if seeds is None else out_dir / _directory(variant) / f"seed_{seed}"
            run_dirs[variant].append(run_dir)
            tag = variant if seeds is None else f"{variant}, seed {seed}"
            done = _finished(run_dir, variant_config)
            if done is not None:
                say(f"[{tag}] already done in {run_dir}; reusing its results")
                per_seed[variant][seed] = done
                continue
            say(f"[{tag}] pretraining into {run_dir}")
            result = pretrain(variant_config, run_dir, show_progress=show_progress, echo=None)
            # Per-study ranks stay in the variant's own run (<run_dir>/per_study/), as for a reused run.
            per_seed[variant][seed] = split_per_study(result.metrics["zero_shot_retrieval"])[0]
    if seeds is None:
        results = {variant: runs[seed_list[0]] for variant, runs in per_seed.items()}
    else:
        results = {variant: pool_seeds(runs) for variant, runs in per_seed.items()}
    from pipelines.report_significance import ablation_significance, ablation_significance_table

    uncertainty = ablation_significance(run_dirs)
    table = ablation_table(results) + ablation_significance_table(uncertainty)
    write_text_atomic(out_dir / "ablation.md", table)
    plot_ablation(results, out_dir / "ablation.png", intervals=uncertainty.intervals if uncertainty else None)
    ablation = RunResult(
        kind="ablate",
        config={"variants": list(variants), "pretrain": to_dict(config),
                **({"seeds": seed_list} if seeds is not None else {})},
        metrics=results,
        seeds={"train": seed_list[0] if seeds is None else seed_list, "synthetic_data": config.data.synthetic_seed},
        data={"manifest": describe_file(manifest)},
        checkpoints={variant: [str(d.relative_to(out_dir) / "model") for d in dirs] if seeds is not None
                     else f"{_directory(variant)}/model" for variant, dirs in run_dirs.items()},
        metrics_markdown=table,
        run_dir=out_dir,
    )
    ablation.save_to_directory(out_dir)
    say(table)
    return ablation


def pool_seeds(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One variant's zero-shot retrieval over several seeds: the mean of every recall.

    Args:
        runs: seed → retrieval as :func:`pipelines.evaluate.retrieval_evaluation` returns it.

    Returns:
        The first seed's retrieval with each ranking head's recalls replaced by their mean over
        seeds, its ``std`` (sample standard deviation, 0 for one seed) beside them, and ``seeds``:
        ``{seed: retrieval}``.
    """
    import numpy as np

    first = next(iter(runs.values()))
    pooled: dict[str, Any] = {**first, "seeds": {str(seed): retrieval for seed, retrieval in runs.items()}}
    for head in ("itc", "itm"):
        if head not in first:
            continue
        keys = [key for key, value in first[head].items() if isinstance(value, (int, float))]
        values = {key: np.array([float(r[head][key]) for r in runs.values()]) for key in keys}
        pooled[head] = {**first[head], **{key: float(v.mean()) for key, v in values.items()},
                        "std": {key: float(v.std(ddof=1)) if v.size > 1 else 0.0 for key, v in values.items()}}
    return pooled


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
        cells = []
        for key in (f"{d}_R@{k}" for d in ("i2t", "t2i") for k in KS):
            spread = scores.get("std", {}).get(key) if "seeds" in retrieval else None
            cells.append(f"{100 * scores[key]:.1f}" + ("" if spread is None else f" ± {100 * spread:.1f}"))
        label = variant if retrieval.get("ranked_by", "itc") == "itc" else f"{variant} (ITM)"
        lines.append("| " + " | ".join([label, *marks, *cells]) + " |")
    some = next(iter(results.values()))
    chance = [100 * ranked_by(some)["chance"][f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in KS]
    lines.append("| chance |  |  |  | " + " | ".join(f"{value:.1f}" for value in chance) + " |")
    seeds = some.get("seeds")
    over_seeds = (f"; mean ± sample std over {len(seeds)} training seeds ({', '.join(seeds)}) on the same data"
                  if seeds else "")
    return (
        "\n".join(lines)
        + f"\n\nZero-shot retrieval on {some['n']} test studies (report retrieval: image → report; "
        "image retrieval: report → image), recall in percent" + over_seeds + "; rows marked (ITM) rank every "
        "pair by ITM (methods without ITC), the others by ITC.\n"
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
