"""``motor visualize RUN``: the MOTOR paper's Figures 2–6 drawn from a run's own model, with the data
behind each figure, and ``RUN/report.html`` gathering them.

Each figure is a PNG (matplotlib, Agg backend) beside its data (JSON or CSV) in ``RUN/figures/``,
computed on the test split of the manifest the run trained on:

* ``fig2``: the specific-knowledge (SK) hits of one test study's image query: the top-k reports of
  the model's report queue (the retrieval the model itself runs, :func:`model.knowledge.retrieve_knowledge`),
  with their inner-product scores, study ids, triplets (from the run's SK store) and SK sentences;
* ``fig3``: general-knowledge (GK) attention of one test study (:meth:`model.motor.MotorModel.gk_attention`):
  the image [CLS] token's attention over the GK nodes and, for the most attended nodes, their
  node-to-patch maps over the image;
* ``fig4``: t-SNE (scikit-learn) of the test studies' ITC image and report embeddings, coloured by
  finding, one panel per run (the run and ``--compare`` runs: the variants side by side);
* ``fig5``: the share of the image [CLS] token's GK attention going to each finding's node, averaged
  per ground-truth finding (rows sum to 1 over all nodes in the data file);
* ``fig6``: greedy generated reports of each run beside the reference report, with the CheXpert
  labels ``kg label`` reads off each (clinical-efficacy labels): green where they agree with the
  reference's, red where not.

Attention is averaged over heads of the last GK cross-attention block. Figures a run cannot draw
(no GK path for fig3 / fig5, no SK path for fig2) are skipped with the reason in ``report.html``.
"""
from __future__ import annotations

import csv
import html
import io
import json
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kg.atomic import write_atomic, write_text_atomic
from kg.errors import InputError

FIGURES = ("fig2", "fig3", "fig4", "fig5", "fig6")
FIGURE_DIR = "figures"
REPORT_FILE = "report.html"
TOP_NODES = 4
MAX_FINDINGS = 9


@dataclass
class LoadedRun:
    """A run's model and the test split it is scored on.

    Attributes:
        label: how figures name the run (its directory and knowledge switch).
        run_dir: the run directory. model: the MOTOR model (eval mode, CPU).
        manifest: the study manifest the run trained on. store: its SK store, when it has one.
    """

    label: str
    run_dir: Path
    model: Any
    manifest: Path
    store: Path | None


def load_run(run_dir: str | Path) -> LoadedRun:
    """The model of a pretraining or finetuning run directory (``RUN/model``) and its manifest.

    Raises:
        InputError: no saved model, or no manifest recorded in ``run.json``.
    """
    from model.motor import MotorModel

    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    if not (model_dir / "config.json").is_file():
        raise InputError("no saved model (model/config.json); give a pretraining or finetuning run directory",
                         file=run_dir)
    info_file = run_dir / "run.json"
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
    manifest = ((info.get("data") or {}).get("manifest") or {}).get("path")
    if manifest is None:
        raise InputError("run.json records no data manifest", file=info_file, field="data.manifest")
    manifest = _find_recorded(Path(manifest), run_dir, info_file)
    model = MotorModel.from_pretrained(model_dir).eval()
    store = run_dir / "knowledge" / "sk.duckdb"
    return LoadedRun(f"{run_dir.name} ({model.config.knowledge})", run_dir, model, manifest,
                     store if store.is_file() else None)


def _find_recorded(path: Path, run_dir: Path, info_file: Path) -> Path:
    """A path ``run.json`` recorded: absolute, or relative to the directory the run was started in
    (the current one, or one of the run directory's ancestors)."""
    candidates = [path] if path.is_absolute() else [path, *(parent / path for parent in run_dir.resolve().parents)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"the recorded manifest {path} is not there", file=info_file, field="data.manifest.path")


# ---------------------------------------------------------------------------- data helpers
def _test_split(run: LoadedRun) -> Any:
    from pipelines.data.datasets import ImageReportDataset

    cfg = run.model.config
    dataset = ImageReportDataset(run.manifest, "test", image_size=cfg.image_size, in_chans=cfg.in_chans)
    if len(dataset) == 0:
        raise InputError("the manifest has no test studies", file=run.manifest, field="split")
    return dataset


def _batch(run: LoadedRun, dataset: Any, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """The model's input batch of test items ``indices`` (the training collator's preprocessing)."""
    from model.processing import MotorCollator

    collate = MotorCollator.from_config(run.model.tokenizer, run.model.config)
    samples = []
    for i in indices:
        item = dataset[i]
        samples.append({"image": item["image"], "report": item["report"], "sk_sentence": "",
                        "labels": item["labels"], "index": i})
    return collate(samples)


def _batches(run: LoadedRun, dataset: Any, size: int = 32):
    for start in range(0, len(dataset), size):
        yield list(range(start, min(start + size, len(dataset))))


def _display(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) item image in [0, 1] → (H, W) array for imshow (first channel)."""
    return image[0].numpy()


def findings_of(dataset: Any) -> tuple[list[str], np.ndarray]:
    """Ground-truth finding names and a (N, F) 1/0 matrix for the test studies.

    GK finding labels when the manifest has them (the synthetic set does), else the 14 CheXpert
    classes (positive = 1; uncertain and unmentioned count as absent).
    """
    from kg.label_schema import label_schema

    schema = label_schema()
    items = [dataset[i] for i in range(len(dataset))]
    gk = np.stack([item["gk_labels"].numpy() for item in items])
    if not np.isnan(gk).all():
        return list(schema.gk_findings), (gk == 1).astype(int)
    chexpert = np.stack([item["labels"].numpy() for item in items])
    return list(schema.chexpert), (chexpert == 1).astype(int)


def finding_category(names: Sequence[str], row: np.ndarray) -> str:
    """One colour class per study: its first positive finding other than normal, else ``normal``."""
    for name, value in zip(names, row):
        if value and name.lower() not in ("normal", "no finding"):
            return name
    return "normal"


def _save_png(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        write_atomic(path, lambda tmp: figure.savefig(tmp, dpi=110, bbox_inches="tight"), suffix=".png")
    finally:
        plt.close(figure)
    return path


def _write_json(path: Path, data: Any) -> Path:
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return path


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------- Fig. 2
@torch.no_grad()
def sk_hits(run: LoadedRun, study: int = 0) -> dict[str, Any]:
    """The top-k SK hits of test study ``study``'s image query, as the model retrieves them.

    Returns:
        ``{"study_id", "report", "k", "queue_filled", "hits": [{"rank", "slot", "study_id",
        "score", "sk_sentence", "triplets"}]}``; ``score`` is the inner product of the L2-normalised
        image query with the queued report feature.

    Raises:
        InputError: the model has no SK path, or its report queue is empty.
    """
    from kg.manifest import read_manifest
    from model.knowledge import retrieve_knowledge
    from model.motor import gk_stage, project_image

    model = run.model
    if not model.config.uses_sk:
        raise InputError(f"knowledge {model.config.knowledge!r} has no SK path (Fig. 2 needs one)", field="knowledge")
    queue = model.report_queue
    if len(queue) == 0:
        raise InputError("the model's report queue is empty: nothing to retrieve", file=run.run_dir)
    dataset = _test_split(run)
    study = _check_study(study, dataset)
    batch = _batch(run, dataset, [study])
    query = project_image(model, gk_stage(model, batch["image"]))
    knowledge = retrieve_knowledge(queue, query, model.config.sk_top_k)
    train_ids = [r.study_id for r in read_manifest(run.manifest) if r.split == "train"]
    features, indices = queue.entries("feature"), queue.entries("index")
    slots = [int(s) for s in knowledge.slots[0] if s >= 0]
    triplets: dict[str, list] = {}
    ids = [train_ids[int(indices[s])] if int(indices[s]) < len(train_ids) else f"index {int(indices[s])}" for s in slots]
    if run.store is not None:
        from kg.retrieval import KnowledgeBase

        with KnowledgeBase.open(run.store) as kb:
            known = [i for i in ids if i in set(train_ids)]
            for sid, found in zip(known, kb.triplets(known) if known else []):
                triplets[sid] = [list(t[:3]) for t in found]
    hits = []
    for rank, (slot, sid) in enumerate(zip(slots, ids), start=1):
        mask = queue.sk_mask[slot].bool()
        sentence = model.tokenizer.decode(queue.sk_ids[slot][mask].tolist(), skip_special_tokens=True)
        hits.append({"rank": rank, "slot": slot, "study_id": sid, "score": float(query[0] @ features[slot].float()),
                     "sk_sentence": sentence, "triplets": triplets.get(sid, [])})
    return {"study_id": dataset.items[study][0].study_id, "report": dataset.items[study][0].report,
            "k": model.config.sk_top_k, "queue_filled": len(queue), "hits": hits, "_image": dataset[study]["image"]}


def fig2(run: LoadedRun, out_dir: Path, study: int = 0) -> list[Path]:
    """Fig. 2: one test study's image beside its SK hits; ``fig2.png`` + ``fig2.json``."""
    plt = _pyplot()
    data = sk_hits(run, study)
    image = data.pop("_image")
    figure = plt.figure(figsize=(11, 1.2 + 1.3 * max(1, len(data["hits"]))))
    grid = figure.add_gridspec(1, 2, width_ratios=(1, 3))
    axis = figure.add_subplot(grid[0])
    axis.imshow(_display(image), cmap="gray")
    axis.set_title(f"query: test study {data['study_id']}", fontsize=9)
    axis.axis("off")
    text = figure.add_subplot(grid[1])
    text.axis("off")
    lines = [f"Top-{data['k']} SK hits from the report queue ({data['queue_filled']} reports)", ""]
    for hit in data["hits"]:
        lines.append(f"#{hit['rank']}  score {hit['score']:.3f}  study {hit['study_id']}")
        triplets = "; ".join(f"({h}, {r}, {t})" for h, r, t in hit["triplets"][:4]) or "(none in the store)"
        lines += textwrap.wrap("triplets: " + triplets, 95, subsequent_indent="    ")
        lines += textwrap.wrap("SK sentence: " + (hit["sk_sentence"] or "(empty)"), 95, subsequent_indent="    ")
        lines.append("")
    if not data["hits"]:
        lines.append("(no report with an SK sentence in the queue)")
    text.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8)
    figure.suptitle(f"Fig. 2 — specific knowledge retrieved by the model ({run.label})", fontsize=10)
    return [_save_png(figure, out_dir / "fig2.png"), _write_json(out_dir / "fig2.json", data)]


# ---------------------------------------------------------------------------- Fig. 3 / Fig. 5
@torch.no_grad()
def gk_attention_of(run: LoadedRun, indices: Sequence[int], dataset: Any) -> dict[str, Any]:
    """Head-averaged GK attention of test items ``indices``.

    Returns:
        ``cls_to_nodes`` (B, N): the image [CLS] token's attention over the N nodes (rows sum to 1);
        ``node_to_patches`` (B, N, P): each node's map over the P patches (rows sum to 1);
        ``node_ids``: the N node ids.

    Raises:
        InputError: the model has no GK path.
    """
    model = run.model
    if not model.config.uses_gk:
        raise InputError(f"knowledge {model.config.knowledge!r} has no GK path (Figs. 3 and 5 need one)",
                         field="knowledge")
    found = model.gk_attention(_batch(run, dataset, indices)["image"])
    return {"cls_to_nodes": found["image_to_nodes"][:, :, 0, :].mean(1).numpy(),
            "node_to_patches": found["node_to_patches"].mean(1).numpy(), "node_ids": found["node_ids"]}


def fig3(run: LoadedRun, out_dir: Path, study: int = 0) -> list[Path]:
    """Fig. 3: GK attention of one test study; ``fig3.png`` + ``fig3.json``."""
    plt = _pyplot()
    dataset = _test_split(run)
    study = _check_study(study, dataset)
    found = gk_attention_of(run, [study], dataset)
    cls, maps, nodes = found["cls_to_nodes"][0], found["node_to_patches"][0], found["node_ids"]
    side = int(round(maps.shape[1] ** 0.5))
    # Maps of the most attended finding nodes: the organ nodes lead the [CLS] ranking (bar chart),
    # the findings are what the paper's figure reads.
    from kg.label_schema import label_schema

    findings = set(label_schema().gk_findings) - {"normal"}
    ranked = [int(i) for i in np.argsort(-cls)]
    top = ([i for i in ranked if nodes[i] in findings] or ranked)[:TOP_NODES]
    image = _display(dataset[study]["image"])
    figure, axes = plt.subplots(1, 2 + len(top), figsize=(3.0 * (2 + len(top)), 3.3))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title(f"test study {dataset.items[study][0].study_id}", fontsize=9)
    order = np.argsort(-cls)[:10][::-1]
    axes[1].barh([nodes[i] for i in order], cls[order], color="C0")
    axes[1].set_title("image [CLS] → nodes", fontsize=9)
    axes[1].tick_params(labelsize=7)
    for axis, node in zip(axes[2:], top):
        axis.imshow(image, cmap="gray")
        heat = axis.imshow(maps[node].reshape(side, side), cmap="jet", alpha=0.45, interpolation="bilinear",
                           extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
        axis.set_title(f"{nodes[node]} → patches\n([CLS] share {cls[node]:.3f})", fontsize=9)
        figure.colorbar(heat, ax=axis, fraction=0.046, pad=0.02)
    for axis in (axes[0], *axes[2:]):
        axis.axis("off")
    figure.suptitle(f"Fig. 3 — GK attention, last E_gk→v block, heads averaged ({run.label}); "
                    "maps of the most attended finding nodes", fontsize=10)
    figure.tight_layout()
    data = {"study_id": dataset.items[study][0].study_id, "node_ids": nodes, "cls_to_nodes": cls.tolist(),
            "patch_grid": [side, side], "top_nodes": [nodes[i] for i in top],
            "node_to_patches": {nodes[i]: maps[i].tolist() for i in top}}
    return [_save_png(figure, out_dir / "fig3.png"), _write_json(out_dir / "fig3.json", data)]


def attention_shares(run: LoadedRun) -> dict[str, Any]:
    """Fig. 5's numbers: mean [CLS]→node attention share per ground-truth finding over the test split.

    Returns:
        ``{"node_ids": [N], "classes": [...], "n_studies": {class: count}, "shares": {class: [N]},
        "all_studies": [N]}`` with each share vector summing to 1 (classes without a positive test
        study left out; ``all_studies``: the mean over every test study).
    """
    dataset = _test_split(run)
    names, truth = findings_of(dataset)
    rows, node_ids = [], None
    for indices in _batches(run, dataset):
        found = gk_attention_of(run, indices, dataset)
        rows.append(found["cls_to_nodes"])
        node_ids = found["node_ids"]
    cls = np.concatenate(rows)
    shares, counts = {}, {}
    for column, name in enumerate(names):
        positive = truth[:, column] == 1
        if positive.any():
            shares[name] = cls[positive].mean(0).tolist()
            counts[name] = int(positive.sum())
    return {"node_ids": node_ids, "classes": list(shares), "n_studies": counts, "shares": shares,
            "all_studies": cls.mean(0).tolist()}


def fig5(run: LoadedRun, out_dir: Path) -> list[Path]:
    """Fig. 5: share of GK attention to each finding's node per ground-truth class; ``fig5.png`` + ``fig5.csv``."""
    plt = _pyplot()
    data = attention_shares(run)
    nodes, classes = data["node_ids"], data["classes"]
    # Rows and columns in the same finding order, so a finding's own node lies on the diagonal.
    columns = [c for c in classes if c in nodes] or nodes
    overall = np.array([data["all_studies"][nodes.index(n)] for n in columns])
    # Plotted: each share over its mean across all test studies (1 = no preference), because the
    # raw shares differ more between studies (how much a study attends to findings at all) than
    # between nodes; the CSV keeps the raw shares.
    lift = np.array([[data["shares"][c][nodes.index(n)] for n in columns] for c in classes]) / overall
    figure, axis = plt.subplots(figsize=(1.5 + 0.45 * len(columns), 1.4 + 0.42 * len(classes)))
    from matplotlib.colors import TwoSlopeNorm

    spread = max(float(np.abs(lift - 1).max()), 1e-3)
    image = axis.imshow(lift, cmap="RdBu_r", aspect="auto", norm=TwoSlopeNorm(1.0, 1 - spread, 1 + spread))
    axis.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=8)
    axis.set_yticks(range(len(classes)), [f"{c} (n={data['n_studies'][c]})" for c in classes], fontsize=8)
    axis.set_xlabel("GK node attended")
    axis.set_ylabel("ground-truth finding of the test studies")
    for i, name in enumerate(classes):
        if name in columns:
            j = columns.index(name)
            axis.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.2))
    figure.colorbar(image, ax=axis, label="[CLS] attention share / its mean over all test studies")
    axis.set_title(f"Fig. 5 — share of GK attention to each finding's node, per ground-truth finding\n"
                   f"({run.label}; boxed: the finding's own node)", fontsize=10)
    figure.tight_layout()
    rows = [[c, data["n_studies"][c], *(f"{v:.6f}" for v in data["shares"][c])] for c in classes]
    return [_save_png(figure, out_dir / "fig5.png"),
            _write_csv(out_dir / "fig5.csv", ["finding", "n_studies", *nodes], rows)]


# ---------------------------------------------------------------------------- Fig. 4
@torch.no_grad()
def embeddings(run: LoadedRun) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Test split ITC embeddings: ``(study_ids, images (N, D), reports (N, D), finding per study)``."""
    dataset = _test_split(run)
    names, truth = findings_of(dataset)
    images, reports = [], []
    for indices in _batches(run, dataset):
        batch = _batch(run, dataset, indices)
        images.append(run.model.encode_image(batch["image"]).numpy())
        reports.append(run.model.encode_text(batch["input_ids"], batch["attention_mask"]).numpy())
    ids = [record.study_id for record, _ in dataset.items]
    return ids, np.concatenate(images), np.concatenate(reports), [finding_category(names, row) for row in truth]


def fig4(runs: Sequence[LoadedRun], out_dir: Path, seed: int = 0) -> list[Path]:
    """Fig. 4: t-SNE of image and report embeddings, one panel per run; ``fig4.png`` + ``fig4.csv``."""
    from sklearn.manifold import TSNE

    plt = _pyplot()
    figure, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 4.6), squeeze=False)
    rows: list[list[Any]] = []
    found = [embeddings(run) for run in runs]
    categories = [c for _, _, _, finding in found for c in finding]
    counts = {c: categories.count(c) for c in set(categories)}
    shown = sorted(counts, key=lambda c: (-counts[c], c))[:MAX_FINDINGS]
    colours = {c: f"C{i}" for i, c in enumerate(shown)}
    for axis, run, (ids, images, reports, finding) in zip(axes[0], runs, found):
        points = np.concatenate([images, reports])
        perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
        n = len(ids)
        for modality, part, marker in (("image", slice(0, n), "o"), ("report", slice(n, 2 * n), "^")):
            colour = [colours.get(f, "lightgray") for f in finding]
            axis.scatter(xy[part, 0], xy[part, 1], c=colour, marker=marker, s=16, alpha=0.8, linewidths=0)
            for (x, y), sid, f in zip(xy[part], ids, finding):
                rows.append([run.label, modality, sid, f, f"{x:.4f}", f"{y:.4f}"])
        axis.set_title(run.label, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    handles = [plt.Line2D([], [], color=colours[c], marker="s", linestyle="", label=c) for c in shown]
    handles += [plt.Line2D([], [], color="gray", marker="o", linestyle="", label="image"),
                plt.Line2D([], [], color="gray", marker="^", linestyle="", label="report")]
    if len(counts) > len(shown):
        handles.append(plt.Line2D([], [], color="lightgray", marker="s", linestyle="", label="other findings"))
    axes[0][-1].legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.suptitle("Fig. 4 — t-SNE of test image (●) and report (▲) ITC embeddings, coloured by finding", fontsize=10)
    figure.tight_layout()
    return [_save_png(figure, out_dir / "fig4.png"),
            _write_csv(out_dir / "fig4.csv", ["run", "modality", "study_id", "finding", "x", "y"], rows)]


# ---------------------------------------------------------------------------- Fig. 6
def ce_labels(texts: Sequence[str]) -> list[list[str]]:
    """The CheXpert classes ``kg label`` marks positive in each text (clinical-efficacy labels)."""
    from kg.label import chexpert_columns, label_texts

    columns = chexpert_columns()
    values = label_texts(list(texts))
    return [[c for c, v in zip(columns, row) if v == 1] for row in values]


@torch.no_grad()
def generated_reports(runs: Sequence[LoadedRun], n_studies: int = 4, max_length: int = 60) -> dict[str, Any]:
    """Greedy reports of each run for the first ``n_studies`` test studies, with CE labels.

    Returns:
        ``{"studies": [{"study_id", "reference": {"text", "labels"}, "generated": {run: {"text",
        "labels", "agree", "extra", "missed"}}}]}``.
    """
    dataset = _test_split(runs[0])
    indices = list(range(min(n_studies, len(dataset))))
    references = [dataset.items[i][0].report for i in indices]
    texts = {run.label: run.model.generate(_batch(run, _test_split(run), indices)["image"], max_length=max_length)
             for run in runs}
    labels = ce_labels(references + [t for run in runs for t in texts[run.label]])
    studies = []
    for position, i in enumerate(indices):
        truth = labels[position]
        entry = {"study_id": dataset.items[i][0].study_id,
                 "reference": {"text": references[position], "labels": truth}, "generated": {}}
        for number, run in enumerate(runs):
            found = labels[len(indices) * (number + 1) + position]
            entry["generated"][run.label] = {
                "text": texts[run.label][position], "labels": found,
                "agree": [c for c in found if c in truth], "extra": [c for c in found if c not in truth],
                "missed": [c for c in truth if c not in found]}
        studies.append(entry)
    return {"max_length": max_length, "decoding": "greedy", "studies": studies}


def fig6(runs: Sequence[LoadedRun], out_dir: Path, n_studies: int = 4) -> list[Path]:
    """Fig. 6: generated reports beside the reference with CE labels; ``fig6.png`` + ``fig6.json``."""
    plt = _pyplot()
    data = generated_reports(runs, n_studies)
    columns = ["reference"] + [run.label for run in runs]
    width = 40
    figure, axes = plt.subplots(len(data["studies"]), len(columns),
                                figsize=(3.6 * len(columns), 2.6 * len(data["studies"])), squeeze=False)
    for number, (row, study) in enumerate(zip(axes, data["studies"])):
        reference = study["reference"]
        cells = [(reference["text"], [("CE: " + (", ".join(reference["labels"]) or "no positive label"), "black")])]
        for run in runs:
            found = study["generated"][run.label]
            lines = [(f"agrees: {', '.join(found['agree']) or '–'}", "green")]
            lines += [(f"extra: {', '.join(found['extra'])}", "red")] if found["extra"] else []
            lines += [(f"missed: {', '.join(found['missed'])}", "darkorange")] if found["missed"] else []
            cells.append((found["text"], lines))
        for axis, name, (text, lines) in zip(row, columns, cells):
            axis.axis("off")
            body = "\n".join(textwrap.wrap(text or "(empty)", width)[:12])
            axis.text(0, 1, body, va="top", fontsize=7, family="monospace", transform=axis.transAxes)
            for offset, (line, colour) in enumerate(reversed(lines)):
                axis.text(0, 0.02 + 0.09 * offset, line, va="bottom", fontsize=7, color=colour,
                          transform=axis.transAxes)
            title = f"{name} · {study['study_id']}" if name == "reference" else (name if number == 0 else "")
            axis.set_title(title, fontsize=8, loc="left")
    figure.suptitle("Fig. 6 — greedy generated reports beside the reference; CE labels (kg label): "
                    "green agrees with the reference, red is extra, orange lists the missed", fontsize=9)
    figure.tight_layout()
    return [_save_png(figure, out_dir / "fig6.png"), _write_json(out_dir / "fig6.json", data)]


# ---------------------------------------------------------------------------- the command
def _check_study(study: int, dataset: Any) -> int:
    if not 0 <= study < len(dataset):
        raise InputError(f"test study {study} out of range: the test split has {len(dataset)}", field="--study")
    return study


def visualize(
    run_dir: str | Path,
    figures: Sequence[str] = FIGURES,
    *,
    compare: Sequence[str | Path] = (),
    study: int = 0,
    n_reports: int = 4,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Draw ``figures`` of ``run_dir`` into ``RUN/figures`` and write ``RUN/report.html``.

    Args:
        run_dir: a pretraining or finetuning run directory (with ``model/`` and ``run.json``).
        figures: names from :data:`FIGURES`.
        compare: further runs drawn beside it in Figs. 4 and 6 (e.g. other ablation variants).
        study: the test study (position in the test split) of Figs. 2 and 3.
        n_reports: test studies shown in Fig. 6.

    Returns:
        ``{figure: [paths]}`` for the figures drawn and ``{"skipped": {figure: reason}}``.
    """
    unknown = [f for f in figures if f not in FIGURES]
    if unknown:
        raise InputError(f"unknown figure {unknown[0]!r}; choose from {', '.join(FIGURES)} or all", field="--figure")
    run = load_run(run_dir)
    others = [load_run(path) for path in compare]
    out_dir = run.run_dir / FIGURE_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    drawers: dict[str, Callable[[], list[Path]]] = {
        "fig2": lambda: fig2(run, out_dir, study),
        "fig3": lambda: fig3(run, out_dir, study),
        "fig4": lambda: fig4([run, *others], out_dir),
        "fig5": lambda: fig5(run, out_dir),
        "fig6": lambda: fig6([run, *others], out_dir, n_reports),
    }
    drawn: dict[str, Any] = {"skipped": {}}
    for name in figures:
        try:
            drawn[name] = drawers[name]()
            echo(f"{name}: {', '.join(str(p) for p in drawn[name])}")
        except InputError as err:
            if len(figures) == 1:
                raise
            drawn["skipped"][name] = str(err)
            echo(f"{name}: skipped ({err})")
    report = write_report(run.run_dir)
    echo(f"report: {report}")
    return drawn


TITLES = {
    "fig2": "Fig. 2 — specific-knowledge hits of a test image",
    "fig3": "Fig. 3 — general-knowledge attention over the image",
    "fig4": "Fig. 4 — t-SNE of image and report embeddings",
    "fig5": "Fig. 5 — share of GK attention per finding",
    "fig6": "Fig. 6 — generated reports with clinical-efficacy labels",
}
SUMMARY_FILES = ("summary.md", "ablation.md", "metrics.md", "table.md")


def markdown_to_html(text: str) -> str:
    """The Markdown the runs write (headings, pipe tables, paragraphs) as HTML; everything escaped."""
    out, table = [], []

    def flush() -> None:
        if not table:
            return
        rows = [[html.escape(cell.strip()) for cell in line.strip().strip("|").split("|")] for line in table]
        body = [r for r in rows[1:] if not all(set(c) <= set(":- ") for c in r)]
        out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in rows[0]) + "</tr>"
                   + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body) + "</table>")
        table.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)


def write_report(run_dir: str | Path) -> Path:
    """``RUN/report.html``: the run's summary tables and every figure in ``RUN/figures`` (relative
    links, no scripts or remote resources: it opens offline)."""
    run_dir = Path(run_dir)
    parts = [f"<h1>{html.escape(run_dir.name)}</h1>"]
    for name in SUMMARY_FILES:
        path = run_dir / name
        if path.is_file():
            parts.append(f"<h2>{html.escape(name)}</h2>" + markdown_to_html(path.read_text(encoding="utf-8")))
    figures = run_dir / FIGURE_DIR
    for name in FIGURES:
        png = figures / f"{name}.png"
        if not png.is_file():
            continue
        data = [p for p in (figures / f"{name}.json", figures / f"{name}.csv") if p.is_file()]
        links = " · ".join(f'<a href="{FIGURE_DIR}/{p.name}">{p.name}</a>' for p in data)
        parts.append(f"<h2>{html.escape(TITLES[name])}</h2><img src=\"{FIGURE_DIR}/{png.name}\" "
                     f"alt=\"{name}\"><p>data: {links}</p>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;}table{border-collapse:collapse;}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%;}img{max-width:100%;}")
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(run_dir.name)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    path = run_dir / REPORT_FILE
    write_text_atomic(path, page)
    return path
