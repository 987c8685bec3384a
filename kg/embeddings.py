"""Entity embeddings of a store's knowledge graph: TransE (PyKEEN), refined by a GAT (PyG).

1. **TransE.** The distinct ``(head, relation, tail)`` triplets of the store (RadGraph ``triplets``
   or ``umls_triplets``) are split 80/10/10 into training, validation and test with
   :meth:`pykeen.triples.TriplesFactory.split` (fixed seed; PyKEEN moves triplets so that every
   entity occurs in training). Corpus counts are not used to repeat triplets: copies of one
   triplet would land in both training and test, and link prediction would measure memorisation.
   TransE is trained with PyKEEN's sLCWA loop and evaluated with its filtered rank-based evaluator
   (MRR, Hits@1/3/10 over head and tail prediction). The same model *before* training (random
   embeddings, same split) is evaluated as the baseline.
2. **GAT.** Two ``GATv2Conv`` layers over the entity graph (nodes: entities; edges: training
   triplets in both directions, self-loops added), input the TransE vectors, output
   ``x + GAT(x)`` so the graph refines TransE rather than replacing it. Objective: link
   reconstruction, binary cross-entropy on dot products of connected pairs against as many
   uniformly drawn random pairs per epoch, plus ``tether * mean ||z - x||^2`` holding the output
   near the TransE vectors. Reported: the loss before and after training and the ROC AUC of dot
   products separating held-out (test) pairs from random pairs, for TransE and GAT vectors.

Output directory (:meth:`EmbeddingResult.save_to_directory`, written to a temporary directory and
renamed into place): ``entity_embeddings.safetensors`` (float32 tensors ``transe`` and ``gat`` of
shape (entities, dim), ``relation_transe`` of shape (relations, dim)), ``entities.json`` and
``relations.json`` (lists: index → label), ``metrics.json``. :func:`load` reads it back without
unpickling anything.
"""
from __future__ import annotations

import gc
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from kg.atomic import has_format_marker, replace_directory, write_atomic, write_json_atomic
from kg.errors import InputError

SOURCES = ("radgraph", "umls")
KINDS = ("transe", "gat")
EMBEDDINGS_FILE = "entity_embeddings.safetensors"
ENTITIES_FILE = "entities.json"
RELATIONS_FILE = "relations.json"
METRICS_FILE = "metrics.json"
FORMAT = "motor-kg entity embeddings"
SPLIT = (0.8, 0.1, 0.1)
MIN_TRIPLETS = 10
"""Fewer triplets cannot be split three ways with every entity kept in training."""
RANK_METRICS = ("mean_reciprocal_rank", "hits_at_1", "hits_at_3", "hits_at_10")


@dataclass(frozen=True)
class EmbedConfig:
    """Hyper-parameters of :func:`train_embeddings`.

    Attributes:
        source: ``"radgraph"`` (table ``triplets``) or ``"umls"`` (table ``umls_triplets``).
        dim: embedding dimension of entities and relations.
        epochs: TransE training epochs.
        gat_epochs: GAT training epochs (full graph per epoch).
        seed: seeds the split, initialisation, negative sampling and GAT.
        device: ``"cpu"`` or ``"cuda"``.
        batch_size: TransE training batch (triplets).
        lr: TransE Adam learning rate.
        gat_lr: GAT Adam learning rate.
        gat_heads: attention heads per GAT layer (averaged, so the width stays ``dim``).
        tether: weight of the L2 pull of GAT vectors towards TransE vectors.
    """

    source: str = "radgraph"
    dim: int = 64
    epochs: int = 100
    gat_epochs: int = 100
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 256
    lr: float = 0.01
    gat_lr: float = 0.005
    gat_heads: int = 4
    tether: float = 1.0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise InputError(f"unknown source {self.source!r}; choose one of {', '.join(SOURCES)}", field="source")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"unknown device {self.device!r}; choose cpu or cuda", field="device")
        for name in ("dim", "epochs", "batch_size", "gat_heads"):
            if getattr(self, name) < 1:
                raise InputError(f"must be at least 1, got {getattr(self, name)}", field=name)
        if self.gat_epochs < 0:
            raise InputError(f"must not be negative, got {self.gat_epochs}", field="gat_epochs")
        for name in ("lr", "gat_lr", "tether"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                raise InputError(f"must be a finite non-negative number, got {getattr(self, name)}", field=name)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, file: str | os.PathLike | None = None) -> EmbedConfig:
        """A config from a mapping; unknown keys are an :class:`InputError` naming the key."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise InputError(f"unknown option; known: {', '.join(sorted(known))}", file=file, field=key)
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> EmbedConfig:
        """A config from a YAML mapping of the attribute names."""
        import yaml

        try:
            values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise InputError(f"not valid YAML: {err}", file=path) from err
        if not isinstance(values, dict):
            raise InputError("expected a mapping of option names to values", file=path)
        return cls.from_dict(values, file=path)


@dataclass
class EmbeddingResult:
    """Trained embeddings with their labels, metrics and config; saves itself.

    Attributes:
        entities: entity labels, row ``i`` of the entity tensors is ``entities[i]``.
        relations: relation labels, row ``i`` of ``relation_transe`` is ``relations[i]``.
        transe: (entities, dim) float32 TransE entity vectors.
        gat: (entities, dim) float32 GAT-refined entity vectors.
        relation_transe: (relations, dim) float32 TransE relation vectors.
        metrics: rank metrics of TransE and the random baseline, GAT losses and AUCs, split sizes.
        config: the hyper-parameters used.
    """

    entities: list[str]
    relations: list[str]
    transe: np.ndarray
    gat: np.ndarray
    relation_transe: np.ndarray
    metrics: dict[str, Any]
    config: EmbedConfig

    def save_to_directory(self, directory: str | os.PathLike) -> Path:
        """Write the output bundle (see the module docstring) to ``directory``, replacing an old one."""
        from safetensors.numpy import save_file

        # A mistyped --out that names unrelated files is refused rather than deleted.
        with replace_directory(directory, is_replaceable=_replaceable, what="an entity embedding directory") as tmp:
            save_file(
                {
                    "transe": np.ascontiguousarray(self.transe, dtype=np.float32),
                    "gat": np.ascontiguousarray(self.gat, dtype=np.float32),
                    "relation_transe": np.ascontiguousarray(self.relation_transe, dtype=np.float32),
                },
                str(tmp / EMBEDDINGS_FILE),
                metadata={"format": FORMAT},
            )
            _write_json(tmp / ENTITIES_FILE, self.entities)
            _write_json(tmp / RELATIONS_FILE, self.relations)
            _write_json(tmp / METRICS_FILE, {"format": FORMAT, **self.metrics, "config": asdict(self.config)})
        return Path(directory)


class EntityEmbeddings:
    """Saved entity embeddings, looked up by entity label."""

    def __init__(self, entities: list[str], relations: list[str], tensors: dict[str, np.ndarray],
                 metrics: dict[str, Any], path: Path | None = None) -> None:
        self.entities = entities
        self.relations = relations
        self.tensors = tensors
        self.metrics = metrics
        self.path = path
        self._index = {label: i for i, label in enumerate(entities)}
        self._folded = {label.casefold(): i for label, i in reversed(list(self._index.items()))}

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.tensors["transe"].shape[1])

    def matrix(self, kind: str = "gat") -> np.ndarray:
        """The (entities, dim) float32 matrix of ``kind`` (``"transe"`` or ``"gat"``)."""
        if kind not in KINDS:
            raise InputError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}", field="kind")
        return self.tensors[kind]

    def index(self, name: str) -> int:
        """Row of entity ``name`` (exact label, else case-insensitive).

        Raises:
            InputError: no such entity; the message lists the closest labels.
        """
        if name in self._index:
            return self._index[name]
        if name.casefold() in self._folded:
            return self._folded[name.casefold()]
        import difflib

        close = difflib.get_close_matches(name, self.entities, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise InputError(f"no entity {name!r} among {len(self.entities)} entities{hint}", file=self.path, field="name")

    def vector(self, name: str, kind: str = "gat") -> np.ndarray:
        """The (dim,) float32 vector of entity ``name``."""
        return self.matrix(kind)[self.index(name)]

    def nearest(self, name: str, k: int = 5, kind: str = "gat") -> list[tuple[str, float]]:
        """The ``k`` entities with the highest cosine similarity to ``name`` (itself excluded).

        Returns ``(label, cosine)`` pairs, most similar first; ties in label order.
        """
        matrix = self.matrix(kind).astype(np.float64)
        row = self.index(name)
        norms = np.linalg.norm(matrix, axis=1)
        norms[norms == 0] = 1.0
        cosine = matrix @ matrix[row] / (norms * norms[row])
        order = sorted((i for i in range(len(self.entities)) if i != row),
                       key=lambda i: (-round(float(cosine[i]), 9), self.entities[i]))
        return [(self.entities[i], float(cosine[i])) for i in order[:k]]

    def export_npy(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write ``transe.npy``, ``gat.npy``, ``relation_transe.npy``, ``entities.json``, ``relations.json``.

        The ``.npy`` files load with ``numpy.load(path)`` (no pickle); the JSON lists map row → label.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, array in sorted(self.tensors.items()):
            written.append(out / f"{name}.npy")
            write_atomic(written[-1], lambda tmp, array=array: np.save(tmp, array, allow_pickle=False), suffix=".npy")
        for file_name, labels in ((ENTITIES_FILE, self.entities), (RELATIONS_FILE, self.relations)):
            written.append(out / file_name)
            _write_json(written[-1], labels)
        return written


def load(path: str | os.PathLike) -> EntityEmbeddings:
    """Read an output directory of ``kg embed`` (safetensors and JSON only; nothing is unpickled).

    Raises:
        InputError: a file is missing or the files disagree on the number of entities or relations.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    try:
        tensors = load_file(str(path / EMBEDDINGS_FILE))
        entities = json.loads((path / ENTITIES_FILE).read_text(encoding="utf-8"))
        relations = json.loads((path / RELATIONS_FILE).read_text(encoding="utf-8"))
        metrics = json.loads((path / METRICS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        # safetensors raises without a file name; it is the first file read.
        missing = Path(err.filename).name if err.filename else EMBEDDINGS_FILE
        raise InputError(f"not an entity embedding directory (missing {missing}); "
                         "write one with `kg embed`", file=path) from err
    except (SafetensorError, ValueError) as err:
        raise InputError(f"unreadable entity embeddings: {err}", file=path) from err
    for name, rows in (("transe", len(entities)), ("gat", len(entities)), ("relation_transe", len(relations))):
        if name not in tensors:
            raise InputError("tensor missing", file=path / EMBEDDINGS_FILE, field=name)
        if tensors[name].ndim != 2 or tensors[name].shape[0] != rows:
            raise InputError(f"shape {tuple(tensors[name].shape)} does not match {rows} labels",
                             file=path / EMBEDDINGS_FILE, field=name)
    return EntityEmbeddings(entities, relations, tensors, metrics, path)


def read_triples(store_path: str | os.PathLike, source: str = "radgraph") -> np.ndarray:
    """The distinct labelled triplets of a store, shape (n, 3) of ``str``, sorted.

    ``radgraph``: ``(head, relation, tail)`` of table ``triplets``. ``umls``: ``umls_triplets`` with
    entities labelled by concept name (``"name [CUI]"`` where two concepts share a name).
    """
    from kg.store import open_store

    if source not in SOURCES:
        raise InputError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}", field="source")
    con = open_store(store_path, read_only=True)
    try:
        table = "triplets" if source == "radgraph" else "umls_triplets"
        present = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
        ).fetchall()[0][0]
        if not present:
            raise InputError(f"the store has no {table} table; add it with `kg build --source umls`",
                             file=store_path, field=table)
        if source == "radgraph":
            rows = con.execute(
                "SELECT DISTINCT head, relation, tail FROM triplets ORDER BY head, relation, tail"
            ).fetchall()
        else:
            rows = _umls_labelled(con.execute(
                "SELECT DISTINCT head_cui, relation, tail_cui, head, tail FROM umls_triplets "
                "ORDER BY head_cui, relation, tail_cui"
            ).fetchall())
    finally:
        con.close()
    return np.array(rows, dtype=str).reshape(-1, 3)


def embed_store(store_path: str | os.PathLike, out_dir: str | os.PathLike, config: EmbedConfig,
                *, progress: bool = True) -> EmbeddingResult:
    """Train embeddings on a store's triplets and save them to ``out_dir`` (see :func:`train_embeddings`)."""
    result = train_embeddings(read_triples(store_path, config.source), config, progress=progress)
    result.metrics["store"] = str(store_path)
    result.save_to_directory(out_dir)
    return result


def train_embeddings(triples: np.ndarray | Sequence[Sequence[str]], config: EmbedConfig,
                     *, progress: bool = True) -> EmbeddingResult:
    """TransE then GAT on labelled triplets (see the module docstring).

    Args:
        triples: (n, 3) ``head, relation, tail`` labels; duplicates are dropped.
        config: hyper-parameters.
        progress: show progress bars.

    Returns:
        the embeddings, labels and metrics; deterministic on CPU for a fixed ``config.seed``.

    Raises:
        InputError: fewer than :data:`MIN_TRIPLETS` distinct triplets, or CUDA asked for but absent.
    """
    import torch
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.models import TransE
    from pykeen.training import SLCWATrainingLoop
    from pykeen.triples import TriplesFactory
    from pykeen.utils import set_random_seed

    device = _device(config.device)
    triples = np.unique(np.asarray(triples, dtype=str).reshape(-1, 3), axis=0)
    if len(triples) < MIN_TRIPLETS:
        raise InputError(f"{len(triples)} distinct triplets; at least {MIN_TRIPLETS} are needed for a "
                         "training/validation/test split", field="triplets")
    factory = TriplesFactory.from_labeled_triples(triples)
    training, validation, testing = factory.split(list(SPLIT), random_state=config.seed)
    set_random_seed(config.seed)
    model = TransE(triples_factory=training, embedding_dim=config.dim, random_seed=config.seed).to(device)
    evaluator = RankBasedEvaluator(filtered=True)

    def evaluate(mapped: torch.Tensor, others: list[torch.Tensor]) -> dict[str, float]:
        with _quiet_cpu_memory_probe():
            results = evaluator.evaluate(model, mapped, additional_filter_triples=others,
                                         batch_size=config.batch_size, use_tqdm=False)
        return {name: float(results.get_metric(name)) for name in RANK_METRICS}

    filters_test = [training.mapped_triples, validation.mapped_triples]
    random_baseline = evaluate(testing.mapped_triples, filters_test)
    # Batch-size probing is meant for GPUs (on CPU it only warns); the configured batch is used.
    loop = SLCWATrainingLoop(model=model, triples_factory=training, optimizer="Adam",
                             optimizer_kwargs={"lr": config.lr}, automatic_memory_optimization=False)
    with _frozen_gc():
        losses = loop.train(triples_factory=training, num_epochs=config.epochs, batch_size=config.batch_size,
                            use_tqdm=progress, use_tqdm_batch=False, num_workers=0, pin_memory=False,
                            tqdm_kwargs={"desc": "TransE", "leave": False})
    model.eval()
    metrics_valid = evaluate(validation.mapped_triples, [training.mapped_triples, testing.mapped_triples])
    metrics_test = evaluate(testing.mapped_triples, filters_test)
    with torch.no_grad():
        transe = model.entity_representations[0](indices=None).detach().float().cpu()
        relation_transe = model.relation_representations[0](indices=None).detach().float().cpu()

    gat, gat_metrics = refine_with_gat(transe, training.mapped_triples, testing.mapped_triples, config,
                                       progress=progress)
    entities = [label for label, _ in sorted(factory.entity_to_id.items(), key=lambda item: item[1])]
    relations = [label for label, _ in sorted(factory.relation_to_id.items(), key=lambda item: item[1])]
    metrics = {
        "source": config.source,
        "triplets": len(triples),
        "entities": len(entities),
        "relations": len(relations),
        "split": {"training": training.num_triples, "validation": validation.num_triples,
                  "testing": testing.num_triples, "ratios": list(SPLIT), "seed": config.seed},
        "transe": {"test": metrics_test, "validation": metrics_valid,
                   "loss_first": float(losses[0]), "loss_last": float(losses[-1])},
        "random_baseline": {"test": random_baseline},
        "gat": gat_metrics,
    }
    return EmbeddingResult(entities, relations, transe.numpy(), gat.numpy(), relation_transe.numpy(),
                           metrics, config)


def refine_with_gat(
    transe: Any, training: Any, testing: Any, config: EmbedConfig, *, progress: bool = True
) -> tuple[Any, dict[str, Any]]:
    """Train the GAT of the module docstring on the training graph.

    Args:
        transe: (entities, dim) float tensor, the input features.
        training: (n, 3) long tensor of ``head, relation, tail`` ids, the graph and the positives.
        testing: (m, 3) long tensor of held-out triplets for the AUC.
        config: ``gat_epochs``, ``gat_lr``, ``gat_heads``, ``tether``, ``seed``, ``device``.
        progress: show a progress bar.

    Returns:
        ``(gat, metrics)``: (entities, dim) float tensor on CPU and ``{"loss_first", "loss_last",
        "heldout_auc_transe", "heldout_auc_gat", "epochs"}``.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from kg.entity_gat import EntityGAT

    device = _device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x = transe.to(device)
    pairs = torch.unique(torch.cat([training[:, [0, 2]], training[:, [2, 0]]]), dim=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    edge_index = pairs.t().contiguous().to(device)
    model = EntityGAT(x.shape[1], heads=config.gat_heads).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.gat_lr)
    positives = edge_index
    count = x.shape[0]

    def loss_of(z: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        pos = (z[positives[0]] * z[positives[1]]).sum(-1)
        neg = (z[negatives[0]] * z[negatives[1]]).sum(-1)
        logits = torch.cat([pos, neg])
        labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
        return F.binary_cross_entropy_with_logits(logits, labels) + config.tether * (z - x).pow(2).sum(-1).mean()

    def random_pairs(n: int) -> torch.Tensor:
        return torch.randint(0, count, (2, n), generator=generator).to(device)

    losses = []
    model.train()
    for _ in tqdm(range(config.gat_epochs), desc="GAT", leave=False, disable=not progress):
        optimizer.zero_grad()
        loss = loss_of(model(x, edge_index), random_pairs(positives.shape[1]))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        z = model(x, edge_index)
        held_out = testing[:, [0, 2]].t().to(device)
        negatives = random_pairs(held_out.shape[1])
        if not losses:
            losses.append(float(loss_of(z, random_pairs(positives.shape[1]))))
        metrics = {
            "epochs": config.gat_epochs,
            "loss_first": losses[0],
            "loss_last": losses[-1],
            "heldout_auc_transe": _pair_auc(x, held_out, negatives),
            "heldout_auc_gat": _pair_auc(z, held_out, negatives),
        }
    return z.float().cpu(), metrics


def _pair_auc(z: Any, positives: Any, negatives: Any) -> float:
    """ROC AUC of dot products separating ``positives`` from ``negatives`` (both (2, n) index tensors)."""
    from sklearn.metrics import roc_auc_score

    pos = (z[positives[0]] * z[positives[1]]).sum(-1).cpu().numpy()
    neg = (z[negatives[0]] * z[negatives[1]]).sum(-1).cpu().numpy()
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    return float(roc_auc_score(labels, np.concatenate([pos, neg])))


def _umls_labelled(rows: list[tuple[str, str, str, str, str]]) -> list[tuple[str, str, str]]:
    """UMLS triplets with concept names as labels, made unique with ``[CUI]`` where names clash."""
    names: dict[str, str] = {}
    for head_cui, _, tail_cui, head, tail in rows:
        names[head_cui] = head
        names[tail_cui] = tail
    cuis_of: dict[str, set[str]] = {}
    for cui, name in names.items():
        cuis_of.setdefault(name, set()).add(cui)
    label = {cui: name if len(cuis_of[name]) == 1 else f"{name} [{cui}]" for cui, name in names.items()}
    return [(label[h], relation, label[t]) for h, relation, t, _, _ in rows]


def _device(name: str) -> Any:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA was requested but torch sees no GPU; use --device cpu", field="device")
    return torch.device(name)


class _DropCpuProbeWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "considered safe for automatic memory utilization" not in record.getMessage()


@contextmanager
def _quiet_cpu_memory_probe() -> Iterator[None]:
    """Silence torch_max_mem's warning that its GPU batch-size probing also runs on CPU tensors.

    PyKEEN's evaluator always goes through the probe, which warns once per evaluation on CPU;
    the warning says nothing actionable for graphs of this size.
    """
    logger = logging.getLogger("torch_max_mem.api")
    quiet = _DropCpuProbeWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


@contextmanager
def _frozen_gc() -> Iterator[None]:
    """Exclude the objects alive now from garbage collection while the block runs.

    PyKEEN's training loop calls ``gc.collect()`` after every epoch; with torch and PyG imported a
    full collection walks millions of objects (about 0.3 s), which dominated small trainings.
    Freezing the existing heap makes each collection look only at objects made since.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _replaceable(path: Path) -> bool:
    return has_format_marker(path, METRICS_FILE, FORMAT)


def _write_json(path: Path, value: Any) -> None:
    write_json_atomic(path, value, indent=1, ensure_ascii=False)
