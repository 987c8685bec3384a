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


class LossCase:
    """The checks every objective must pass (a subclass per loss, as PyKEEN's ``cases.py``).

    A subclass gives :meth:`make_loss` and :meth:`call`; the checks: the loss is a finite,
    non-negative scalar, gradients reach the differentiable inputs, and it is deterministic.
    """

    def make_loss(self) -> torch.nn.Module:
        raise NotImplementedError

    def call(self, loss: torch.nn.Module, generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(loss value, the inputs it is differentiable in)`` on random inputs drawn from ``generator``."""
        raise NotImplementedError

    def _value(self, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.call(self.make_loss(), torch.Generator().manual_seed(seed))

    def test_is_a_finite_non_negative_scalar(self) -> None:
        value, _ = self._value()
        assert value.shape == () and torch.isfinite(value) and value >= 0

    def test_gradients_reach_the_inputs(self) -> None:
        value, inputs = self._value()
        value.backward()
        for tensor in inputs:
            assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
        assert any(bool(tensor.grad.abs().sum() > 0) for tensor in inputs)

    def test_is_deterministic(self) -> None:
        first, _ = self._value(seed=3)
        second, _ = self._value(seed=3)
        assert torch.equal(first, second)
