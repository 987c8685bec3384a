"""MLM token masking (15 %, 80/10/10), the tied prediction head and the loss."""
from __future__ import annotations

import torch
from torch import nn

from model.losses import IGNORE_INDEX
from model.mlm import MaskedLanguageModelingLoss, MaskedLMHead, mask_text_tokens

MASK, VOCAB = 4, 100


def test_selection_rate_and_80_10_10_split():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, VOCAB, (400, 50), generator=generator)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, -5:] = False
    corrupted, labels = mask_text_tokens(ids, maskable, MASK, VOCAB, 0.15, generator, torch.arange(10, VOCAB))
    selected = labels != IGNORE_INDEX
    assert not selected[:, -5:].any()
    assert abs(selected.float().sum().item() / maskable.sum().item() - 0.15) < 0.01
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(corrupted[~selected], ids[~selected])
    n = selected.sum().item()
    as_mask = (corrupted[selected] == MASK).sum().item() / n
    kept = (corrupted[selected] == ids[selected]).sum().item() / n
    assert abs(as_mask - 0.8) < 0.02
    # 10 % kept on purpose, plus random draws that happen to hit the same token (1 in 90).
    assert abs(kept - (0.1 + 0.1 / 90)) < 0.02
    assert (corrupted >= 10).logical_or(corrupted == MASK).all()  # random tokens come from random_ids


def test_every_row_with_a_maskable_token_gets_a_selection():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(10, VOCAB, (64, 3), generator=generator)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[0] = False
    maskable[1, :2] = False
    _, labels = mask_text_tokens(ids, maskable, MASK, VOCAB, 0.01, generator)
    selected = labels != IGNORE_INDEX
    assert not selected[0].any()
    assert selected[1].tolist() == [False, False, True]
    assert selected[2:].any(dim=1).all()


def test_same_generator_same_masking():
    ids = torch.randint(10, VOCAB, (4, 20))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    first = mask_text_tokens(ids, maskable, MASK, VOCAB, generator=torch.Generator().manual_seed(5))
    again = mask_text_tokens(ids, maskable, MASK, VOCAB, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_head_is_tied_to_the_word_embeddings():
    embeddings = nn.Embedding(VOCAB, 16)
    head = MaskedLMHead(embeddings)
    assert head.decoder.weight is embeddings.weight
    assert head(torch.randn(2, 3, 16)).shape == (2, 3, VOCAB)


def test_loss_counts_only_selected_positions():
    logits = torch.zeros(1, 3, 5)
    logits[0, 0, 2] = 10.0
    labels = torch.tensor([[2, IGNORE_INDEX, IGNORE_INDEX]])
    loss = MaskedLanguageModelingLoss()
    assert loss(logits, labels) < 1e-3
    none = loss(logits.requires_grad_(), torch.full((1, 3), IGNORE_INDEX))
    assert none == 0 and none.requires_grad
