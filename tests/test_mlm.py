"""MedViLL's MLM is the shared one: :class:`model.masking.TokenMasker`, the tied BERT head and the loss.

The count rule, the 80/10/10 replacement and reproducibility are tested for every method in
``test_masking.py``; here: what MedViLL adds (the closing [SEP_L] maskable under S2S only) and
that the MedViLL model is wired to the shared pieces.
"""
from __future__ import annotations

import pytest
import torch
from medvill_cases import tiny_medvill_config
from model_cases import train_tiny_tokenizer

from model.losses import IGNORE_INDEX, MaskedLanguageModelingLoss
from model.masking import TokenMasker, mlm_budget
from model.medvill import MedVillModel
from model.pretraining_heads import MaskedLanguageModelingHead
from model.single_stream import text_segment

PAD, CLS, SEP, MASK = 0, 2, 3, 4
SPECIAL = (0, 1, 2, 3, 4)
VOCAB = 200


def _segments(lengths: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Text segments ``w_1 … w_n [SEP] [PAD] …`` (the report's [CLS] already dropped)."""
    ids = torch.full((len(lengths), width), PAD)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.arange(10, 10 + n)
        ids[row, n] = SEP
        mask[row, : n + 1] = 1
    return ids, mask


def test_also_maskable_lets_the_closing_sep_be_chosen_and_counts_it():
    ids, mask = _segments([0, 3, 19], 24)
    masker = TokenMasker(MASK, VOCAB, SPECIAL, 0.15)
    seen_sep = torch.zeros(3, dtype=torch.bool)
    for seed in range(200):
        result = masker.random(ids, mask, torch.Generator().manual_seed(seed), also_maskable=ids == SEP)
        # n counts the words and [SEP]: 1, 4 and 20 maskable positions.
        assert result.chosen.sum(1).tolist() == [mlm_budget(n, 0.15) for n in (1, 4, 20)]
        assert not result.chosen[mask == 0].any()
        seen_sep |= (result.chosen & (ids == SEP)).any(dim=1)
    assert seen_sep.all()  # an empty report still learns to end: its [SEP] is its one target
    plain = masker.random(ids, mask, torch.Generator().manual_seed(0))
    assert not plain.chosen[ids == SEP].any() and plain.chosen.sum(1).tolist() == [0, 1, 3]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> MedVillModel:
    torch.manual_seed(0)
    return MedVillModel(tiny_medvill_config(), train_tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def test_medvill_uses_the_shared_masker_head_and_loss(model):
    assert isinstance(model.token_masker, TokenMasker)
    assert isinstance(model.mlm_head, MaskedLanguageModelingHead)
    assert isinstance(model.mlm_loss, MaskedLanguageModelingLoss)
    assert model.mlm_head.word_embeddings.weight is model.encoder.embeddings.word_embeddings.weight
    assert model.token_masker.probability == model.config.mlm_probability


def test_sep_is_a_target_under_s2s_only(model):
    tok = model.tokenizer(["no acute cardiopulmonary process", "heart size normal"], padding=True, return_tensors="pt")
    sep = model.token_ids["sep"]
    for scheme, may_choose_sep in (("s2s", True), ("bar", False), ("bi", False)):
        ids, mask = text_segment(tok["input_ids"], tok["attention_mask"], scheme)
        chosen_sep = False
        for seed in range(40):
            _, labels = model.masked_tokens(ids, mask, scheme, torch.Generator().manual_seed(seed))
            chosen = labels != IGNORE_INDEX
            assert not chosen[~mask.bool()].any()
            chosen_sep |= bool(chosen[ids == sep].any())
        assert chosen_sep == may_choose_sep, scheme
