"""Standardising a pooled [CLS] feature over the batch before a matching classifier.

Shared by the matching heads (MedViLL's IRM, M3AE / ARL's ITM), whose papers start from pretrained
encoders. From random initialisation the pooled [CLS] is nearly the same vector for every input
(cosine 0.9999 between different pairs at the tiny presets): [CLS] is dominated by its own
embedding, the attention is near uniform, and MLM never trains it. A linear classifier on it then
sees a constant, fits the matched / unmatched prior and stays there. Standardising each feature
over the batch removes the shared part, so the classifier reads what differs between pairs from
the first step; at evaluation the running statistics of training take the batch's place, so a
pair's score does not depend on the pairs scored with it.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


class BatchStandardiser(nn.BatchNorm1d):
    """``BatchNorm1d`` over (B, width) features: batch statistics in training (B ≥ 2), running
    statistics at evaluation (:func:`running_statistics`)."""


@contextmanager
def running_statistics(module: nn.Module) -> Iterator[None]:
    """Within the block every :class:`BatchStandardiser` of ``module`` uses (and does not update)
    its running statistics, whatever the module's mode; the modes are restored after.

    Scoring calls use it so that scores computed while the model is training neither depend on the
    pairs scored together nor leak into the statistics that training keeps.
    """
    norms = [m for m in module.modules() if isinstance(m, BatchStandardiser)]
    modes = [m.training for m in norms]
    for norm in norms:
        norm.eval()
    try:
        yield
    finally:
        for norm, mode in zip(norms, modes):
            norm.train(mode)
