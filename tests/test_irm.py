"""IRM pairs: non-matching reports never share the image's label vector when another one exists."""
from __future__ import annotations

import math

import pytest
import torch

from kg.errors import InputError
from model.irm import (
    ImageReportMatchingHead,
    ImageReportMatchingLoss,
    draw_matched,
    label_vectors_equal,
    sample_irm_negatives,
)

NAN = math.nan


def _random_labels(generator: torch.Generator, n: int, classes: int = 3) -> torch.Tensor:
    # Few classes and values, so that many studies share a label vector.
    labels = torch.randint(-1, 2, (n, classes), generator=generator).float()
    labels[torch.rand(n, classes, generator=generator) < 0.3] = NAN
    return labels


def test_label_vectors_compare_entry_by_entry_with_nan_equal_to_nan():
    a = torch.tensor([[1.0, NAN, 0.0], [1.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, NAN, 0.0], [1.0, NAN, -1.0]])
    assert label_vectors_equal(a, b).tolist() == [[True, False], [False, False]]


def test_negatives_never_share_the_label_vector_when_an_alternative_exists():
    generator = torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(200):
        labels = _random_labels(generator, 8)
        index = torch.arange(8)
        negatives, distinct = sample_irm_negatives(index, index, labels, labels, generator)
        same = label_vectors_equal(labels, labels)
        for i, j in enumerate(negatives.tolist()):
            assert j != i
            known = [not labels[k].isnan().all() for k in range(8)]
            alternative = known[i] and any(not same[i, k] and known[k] for k in range(8) if k != i)
            assert bool(distinct[i]) == alternative
            if alternative:
                assert not same[i, j]
                checked += 1
    assert checked > 1000


def test_negatives_come_from_a_larger_pool_and_skip_the_same_study():
    generator = torch.Generator().manual_seed(1)
    pool_labels = torch.tensor([[1.0, 0.0]] * 5 + [[0.0, 1.0]])
    pool_index = torch.tensor([10, 11, 12, 13, 14, 15])
    # Study 15 appears again in the batch; its only label-distinct candidates are studies 10-14.
    query_index = torch.tensor([10, 15])
    query_labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    for _ in range(50):
        negatives, distinct = sample_irm_negatives(query_index, pool_index, query_labels, pool_labels, generator)
        assert int(negatives[0]) == 5 and int(negatives[1]) in range(5)
        assert distinct.tolist() == [True, True]


def test_without_an_alternative_any_other_study_is_drawn_and_flagged():
    generator = torch.Generator().manual_seed(2)
    labels = torch.tensor([[0.0, 1.0]] * 4)
    index = torch.tensor([0, 0, 1, 2])  # samples 0 and 1 are the same study
    drawn = set()
    for _ in range(100):
        negatives, distinct = sample_irm_negatives(index, index, labels, labels, generator)
        assert not distinct.any()
        assert int(negatives[0]) in (2, 3) and int(negatives[1]) in (2, 3)
        drawn.update(negatives.tolist())
    assert drawn == {0, 1, 2, 3}


def test_missing_labels_fall_back_to_any_other_study():
    generator = torch.Generator().manual_seed(3)
    index = torch.arange(4)
    negatives, distinct = sample_irm_negatives(index, index, None, None, generator)
    assert not distinct.any() and all(j != i for i, j in enumerate(negatives.tolist()))
    # A study without labels (all NaN) is neither compared nor preferred.
    labels = torch.tensor([[NAN, NAN], [1.0, 0.0], [1.0, 0.0], [NAN, NAN]])
    for _ in range(50):
        negatives, distinct = sample_irm_negatives(index, index, labels, labels, generator)
        assert distinct.tolist() == [False, False, False, False]
        assert all(j != i for i, j in enumerate(negatives.tolist()))
    labels[2] = torch.tensor([0.0, 1.0])
    for _ in range(50):
        negatives, distinct = sample_irm_negatives(index, index, labels, labels, generator)
        assert negatives[1] == 2 and negatives[2] == 1  # label-distinct, never the unlabelled study 3
        assert distinct.tolist() == [False, True, True, False]


def test_a_pool_of_one_study_is_refused():
    index = torch.tensor([4, 4])
    with pytest.raises(InputError, match="two studies"):
        sample_irm_negatives(index, index)


def test_matched_pairs_are_drawn_one_to_one():
    matched = draw_matched(20000, generator=torch.Generator().manual_seed(0))
    assert matched.dtype == torch.bool and abs(matched.float().mean().item() - 0.5) < 0.02


def test_head_uses_both_cls_tokens_when_given_and_the_loss_reads_the_targets():
    torch.manual_seed(0)
    head = ImageReportMatchingHead(8)
    joint, text = torch.randn(3, 8), torch.randn(3, 8)
    assert head(joint).shape == (3, 2)
    assert torch.allclose(head(joint, text), head(joint * text))
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])
    loss = ImageReportMatchingLoss()
    assert loss(logits, torch.tensor([False, True])) < 0.01 < loss(logits, torch.tensor([True, False]))
