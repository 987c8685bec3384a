"""MLM / LK token masking and MAE patch masking: counts, exclusions, proportions, reproducibility."""
from __future__ import annotations

import pytest
import torch
from model_cases import train_tiny_tokenizer

from model.encoders import ImageEncoder
from model.masking import (
    IGNORE_INDEX,
    TokenMasker,
    encode_visible_patches,
    masked_patch_count,
    mlm_budget,
    patchify,
    random_patch_mask,
)
from model.tokenizer import special_token_ids

SPECIAL = (0, 1, 2, 3, 4)  # pad, unk, cls, sep, mask of the synthetic id space
PAD, CLS, SEP, MASK = 0, 2, 3, 4
VOCAB = 500


def _batch(lengths: list[int], width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``[CLS] tokens [SEP] [PAD]…`` rows with ``lengths[i]`` ordinary tokens."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), width), PAD)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, 0] = CLS
        ids[row, 1 : n + 1] = torch.randint(len(SPECIAL), VOCAB, (n,), generator=generator)
        ids[row, n + 1] = SEP
        mask[row, : n + 2] = 1
    return ids, mask


def _masker(probability: float = 0.15) -> TokenMasker:
    return TokenMasker(MASK, VOCAB, SPECIAL, probability)


@pytest.mark.parametrize(("n", "expected"), [(0, 0), (1, 1), (3, 1), (7, 1), (10, 2), (17, 3), (20, 3), (30, 5)])
def test_budget_rule(n, expected):
    # Halves round up: 0.15 · 30 = 4.5 → 5 (Python's round would give 4); a short report still masks one.
    assert mlm_budget(n, 0.15) == expected


def test_random_masking_chooses_exactly_the_budget_and_never_special_or_padding():
    lengths = [0, 1, 5, 10, 17, 30, 60]
    ids, mask = _batch(lengths, 64)
    masker = _masker()
    for seed in range(20):
        result = masker.random(ids, mask, torch.Generator().manual_seed(seed))
        assert result.chosen.sum(1).tolist() == [mlm_budget(n, 0.15) for n in lengths]
        assert not result.chosen[mask == 0].any()
        special = torch.isin(ids, torch.tensor(SPECIAL))
        assert not result.chosen[special].any()
        # Unchosen positions are untouched and carry no label.
        assert torch.equal(result.input_ids[~result.chosen], ids[~result.chosen])
        assert bool((result.labels[~result.chosen] == IGNORE_INDEX).all())
        assert torch.equal(result.labels[result.chosen], ids[result.chosen])


def test_replacement_proportions_are_80_10_10():
    ids, mask = _batch([40] * 2000, 42, seed=1)
    result = _masker().random(ids, mask, torch.Generator().manual_seed(0))
    chosen = result.chosen
    total = int(chosen.sum())
    assert total == 2000 * 6
    to_mask = int((result.input_ids[chosen] == MASK).sum())
    kept = int((result.input_ids[chosen] == ids[chosen]).sum())
    swapped = total - to_mask - kept
    assert abs(to_mask / total - 0.8) < 0.015
    assert abs(swapped / total - 0.1) < 0.01
    assert abs(kept / total - 0.1) < 0.01
    replaced = result.input_ids[chosen & (result.input_ids != MASK) & (result.input_ids != ids)]
    assert not torch.isin(replaced, torch.tensor(SPECIAL)).any()


def test_masking_is_reproducible_from_the_generator():
    ids, mask = _batch([12, 25, 40], 48)
    masker = _masker()
    first = masker.random(ids, mask, torch.Generator().manual_seed(7))
    again = masker.random(ids, mask, torch.Generator().manual_seed(7))
    other = masker.random(ids, mask, torch.Generator().manual_seed(8))
    assert torch.equal(first.input_ids, again.input_ids) and torch.equal(first.chosen, again.chosen)
    assert not torch.equal(first.chosen, other.chosen)


def test_masker_from_tokenizer_never_chooses_its_special_tokens(tmp_path):
    tokenizer = train_tiny_tokenizer(tmp_path / "tok")
    encoded = tokenizer(["heart size is normal", "[ENC] small left pleural effusion [DEC]"], padding="max_length",
                        max_length=16, return_tensors="pt")
    masker = TokenMasker.from_tokenizer(tokenizer, probability=0.5)
    result = masker.random(encoded["input_ids"], encoded["attention_mask"], torch.Generator().manual_seed(0))
    specials = torch.tensor(list(special_token_ids(tokenizer).values()))
    assert not result.chosen[torch.isin(encoded["input_ids"], specials)].any()
    assert result.chosen.sum() > 0


# ---------------------------------------------------------------------------- knowledge-induced (LK)
def test_lk_masks_whole_entity_spans_and_fills_the_budget():
    ids, mask = _batch([30, 30], 34)  # budget 5 each (0.15 · 30 = 4.5 → 5)
    spans = [[(2, 4), (10, 13)], [(5, 6)]]  # lengths 2 + 3 = 5 fit exactly; one token in row 1
    masker = _masker()
    for seed in range(10):
        result = masker.knowledge_induced(ids, mask, spans, torch.Generator().manual_seed(seed))
        assert result.chosen.sum(1).tolist() == [5, 5]
        # Row 0: both entities fill the whole budget; row 1: its entity plus four random tokens.
        assert result.chosen[0, 2:4].all() and result.chosen[0, 10:13].all()
        assert result.chosen[1, 5]
        assert result.masked_entities.tolist() == [[True, True], [True, False]]


def test_lk_skips_spans_that_do_not_fit_and_keeps_them_whole():
    ids, mask = _batch([20], 24)  # budget 3
    spans = [[(1, 5), (8, 10), (12, 13)]]  # 4 tokens never fit; 2 + 1 do
    for seed in range(10):
        result = _masker().knowledge_induced(ids, mask, spans, torch.Generator().manual_seed(seed))
        assert int(result.chosen.sum()) == 3
        assert not result.chosen[0, 1:5].any()
        assert result.chosen[0, 8:10].all() and result.chosen[0, 12]
        assert result.masked_entities.tolist() == [[False, True, True]]


def test_lk_spans_are_all_or_nothing_over_many_draws():
    ids, mask = _batch([40, 25, 12], 44)
    spans = [[(1, 3), (5, 8), (20, 22), (30, 31)], [(2, 6), (7, 9)], [(1, 3)]]
    masker = _masker(0.3)
    for seed in range(30):
        result = masker.knowledge_induced(ids, mask, spans, torch.Generator().manual_seed(seed))
        assert result.chosen.sum(1).tolist() == [mlm_budget(n, 0.3) for n in (40, 25, 12)]
        for row, row_spans in enumerate(spans):
            # Random filling prefers tokens outside entities, which suffice here: no span is cut.
            for start, end in row_spans:
                part = result.chosen[row, start:end]
                assert bool(part.all()) or not bool(part.any()), (seed, row, start, end)
        assert not result.chosen[mask == 0].any()


def test_lk_nested_mentions_count_once_and_both_report_masked():
    ids, mask = _batch([20], 24)  # budget 3
    spans = [[(2, 5), (3, 4), (4, 6)]]  # (3, 4) lies inside (2, 5); (4, 6) overlaps it
    for seed in range(10):
        result = _masker().knowledge_induced(ids, mask, spans, torch.Generator().manual_seed(seed))
        assert int(result.chosen.sum()) == 3
        for e, (start, end) in enumerate(spans[0]):
            assert bool(result.masked_entities[0, e]) == bool(result.chosen[0, start:end].any())
        if result.chosen[0, 2:5].all():  # the outer mention won: the nested one is masked with it
            assert result.masked_entities[0, :2].all()


def test_lk_without_entities_is_random_masking_with_the_same_count():
    ids, mask = _batch([15, 33], 36)
    result = _masker().knowledge_induced(ids, mask, [[], []], torch.Generator().manual_seed(0))
    assert result.chosen.sum(1).tolist() == [mlm_budget(15, 0.15), mlm_budget(33, 0.15)]
    assert result.masked_entities.shape == (2, 0)


# ---------------------------------------------------------------------------- patches (MIM)
@pytest.mark.parametrize(("patches", "masked"), [(16, 12), (196, 147), (49, 37), (4, 3)])
def test_patch_mask_masks_exactly_75_percent(patches, masked):
    assert masked_patch_count(patches, 0.75) == masked
    result = random_patch_mask(5, patches, 0.75, torch.Generator().manual_seed(0))
    assert result.mask.sum(1).tolist() == [masked] * 5
    assert result.keep.shape == (5, patches - masked)
    # The kept indices are exactly the unmasked patches, and restore inverts the shuffle.
    for row in range(5):
        assert sorted(result.keep[row].tolist()) == (~result.mask[row]).nonzero().squeeze(1).tolist()
    shuffled = torch.cat([result.keep, (result.restore.argsort(1))[:, patches - masked :]], dim=1)
    assert torch.equal(shuffled.gather(1, result.restore), torch.arange(patches).expand(5, -1))


def test_patch_mask_is_reproducible():
    a = random_patch_mask(3, 16, 0.75, torch.Generator().manual_seed(1))
    b = random_patch_mask(3, 16, 0.75, torch.Generator().manual_seed(1))
    assert torch.equal(a.keep, b.keep) and torch.equal(a.mask, b.mask)


def test_patchify_orders_patches_like_the_vit():
    images = torch.randn(2, 3, 8, 12)
    patches = patchify(images, 4)
    assert patches.shape == (2, 6, 4 * 4 * 3)
    row, col = 1, 2  # patch 1 · 3 + 2 = 5
    expected = images[:, :, 4:8, 8:12].permute(0, 2, 3, 1).reshape(2, -1)
    assert torch.equal(patches[:, row * 3 + col], expected)


def test_encode_visible_patches_sees_only_the_kept_patches():
    from model_cases import tiny_config

    torch.manual_seed(0)
    encoder = ImageEncoder(tiny_config(dropout=0.0)).eval()
    images = torch.randn(2, 3, 64, 64)
    everything = torch.arange(16).expand(2, -1)
    with torch.no_grad():
        assert torch.allclose(encode_visible_patches(encoder.vit, images, everything), encoder(images), atol=1e-5)
        masked = random_patch_mask(2, 16, 0.75, torch.Generator().manual_seed(0))
        visible = encode_visible_patches(encoder.vit, images, masked.keep)
        assert visible.shape == (2, 1 + 4, 64)
        # Changing a masked patch's pixels changes nothing the encoder returns.
        hidden = int(masked.mask[0].nonzero()[0])
        row, col = divmod(hidden, 4)
        changed = images.clone()
        changed[0, :, row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16] += 5.0
        assert torch.equal(encode_visible_patches(encoder.vit, changed, masked.keep), visible)
