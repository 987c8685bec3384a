"""Shared pieces of the model tests: a tiny tokenizer, tiny configs and synthetic batches.

The corpus is made up from the GK graph's own words (no real reports), so the tokenizer knows
every node word and label prompt the model tokenises.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch

from kg.gk import load_gk
from kg.label_schema import load_chexpert_classes
from model import MotorCollator, MotorConfig, train_tokenizer

BATCH = 4


def synthetic_corpus() -> list[str]:
    """Short report-like sentences over the GK words and label prompts."""
    graph = load_gk()
    words = [w for node in graph.nodes for w in node.surface_forms]
    prompts = [c.prompt for c in load_chexpert_classes()]
    sentences = [f"there is {w} . no acute findings" for w in words]
    sentences += [f"{p} is seen in the {o.words[0]}" for p in prompts for o in graph.organs]
    return sentences


def one_torch_thread() -> Iterator[None]:
    """Run with one torch thread, then restore the setting (a generator for a module fixture).

    The tiny models gain nothing from a second thread, and on a machine busy with other jobs
    OpenMP threads that wait on each other make them ten times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_tiny_tokenizer(directory: Path):
    """A WordPiece tokenizer trained on :func:`synthetic_corpus`, saved in ``directory``."""
    return train_tokenizer(synthetic_corpus(), directory, vocab_size=400)


def tiny_config(knowledge: str = "full", **changes) -> MotorConfig:
    """The tiny preset without dropout and with queues a few batches long."""
    defaults = {"knowledge": knowledge, "dropout": 0.0, "queue_size": 2 * BATCH, "sk_queue_size": 3 * BATCH}
    return MotorConfig.preset("tiny").replace(**{**defaults, **changes})


REPORTS = (
    "heart size is normal . lungs are clear",
    "small left pleural effusion with basilar atelectasis",
    "no pneumothorax . mild cardiomegaly",
    "right lower lobe consolidation concerning for pneumonia",
    "stable fracture of the rib",
    "pulmonary edema with bilateral effusion",
)
SK_SENTENCES = (
    "heart normal ; lungs clear",
    "effusion located_at pleural ; atelectasis located_at basilar",
    "",
    "consolidation located_at lobe ; consolidation suggestive_of pneumonia",
    "fracture located_at rib",
    "edema located_at pulmonary ; effusion modify bilateral",
)


def make_samples(n: int = BATCH, seed: int = 0, first_index: int = 0) -> list[dict]:
    """``n`` collator samples with random images, fixed reports / SK sentences and mixed labels."""
    generator = torch.Generator().manual_seed(seed)
    num_labels = len(load_chexpert_classes())
    samples = []
    for i in range(n):
        labels = torch.randint(-1, 2, (num_labels,), generator=generator).float()
        labels[torch.rand(num_labels, generator=generator) < 0.3] = math.nan
        samples.append({
            "image": torch.rand(3, 64, 64, generator=generator),
            "report": REPORTS[i % len(REPORTS)],
            "sk_sentence": SK_SENTENCES[i % len(SK_SENTENCES)],
            "labels": labels,
            "index": first_index + i,
        })
    return samples


def make_batch(tokenizer, config: MotorConfig, n: int = BATCH, seed: int = 0, first_index: int = 0) -> dict:
    """A collated batch of :func:`make_samples`."""
    return MotorCollator.from_config(tokenizer, config)(make_samples(n, seed, first_index))
