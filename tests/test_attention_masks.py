"""MedViLL's self-attention masks, entry by entry against the rules recomputed here, and the bi+s2s draw."""
from __future__ import annotations

import pytest
import torch

from kg.errors import InputError
from model.attention_masks import MASK_SCHEMES, attention_mask, sample_mask_scheme


def expected_entry(scheme: str, visual_len: int, real: list[bool], i: int, j: int) -> bool:
    """Whether query i may attend to key j, from the rules as the issue states them."""
    if not (real[i] and real[j]):
        return False  # padding neither attends nor is attended to
    i_visual, j_visual = i < visual_len, j < visual_len
    if scheme == "bi":
        return True
    if scheme == "s2s":
        if i_visual:
            return j_visual  # visual tokens attend only to visual tokens
        return j_visual or j <= i  # text: every visual token, earlier text and itself
    if scheme == "bar":
        if i_visual:
            return True  # visual tokens may attend to text
        return j_visual or j <= i  # only text → later text is blocked
    if scheme == "non_crossing":
        return i_visual == j_visual
    raise AssertionError(scheme)


# Text masks of different lengths, with and without padding, one row per sample.
TEXT_MASKS = [
    [[1, 1, 1, 1, 1]],
    [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]],
]


@pytest.mark.parametrize("scheme", MASK_SCHEMES)
@pytest.mark.parametrize("visual_len", [1, 3, 6])
@pytest.mark.parametrize("text_mask", TEXT_MASKS)
def test_every_entry_follows_the_rules(scheme, visual_len, text_mask):
    text = torch.tensor(text_mask, dtype=torch.bool)
    mask = attention_mask(scheme, visual_len, text)
    length = visual_len + text.shape[1]
    assert mask.shape == (text.shape[0], length, length) and mask.dtype == torch.bool
    for b, row in enumerate(text_mask):
        real = [True] * visual_len + [bool(x) for x in row]
        for i in range(length):
            for j in range(length):
                assert bool(mask[b, i, j]) == expected_entry(scheme, visual_len, real, i, j), (scheme, b, i, j)


def test_schemes_differ_where_the_paper_says():
    text = torch.ones(1, 4, dtype=torch.bool)
    masks = {s: attention_mask(s, 3, text)[0] for s in MASK_SCHEMES}
    visual, words = slice(0, 3), slice(3, 7)
    # BAR and S2S agree on the text rows and differ only in whether the image sees the report.
    assert torch.equal(masks["bar"][words], masks["s2s"][words])
    assert masks["bar"][visual, words].all() and not masks["s2s"][visual, words].any()
    # Non-crossing is block-diagonal; bi is full.
    assert not masks["non_crossing"][visual, words].any() and not masks["non_crossing"][words, visual].any()
    assert masks["bi"].all()


def test_accepts_integer_text_masks_on_the_same_device():
    ints = torch.tensor([[1, 1, 0]])
    assert torch.equal(attention_mask("s2s", 2, ints), attention_mask("s2s", 2, ints.bool()))


@pytest.mark.parametrize("scheme", ["causal", "bi+s2s", ""])
def test_unknown_scheme_is_refused(scheme):
    with pytest.raises(InputError, match="attention_mask"):
        attention_mask(scheme, 3, torch.ones(1, 2, dtype=torch.bool))


def test_bad_shapes_are_refused():
    with pytest.raises(InputError, match="text_mask"):
        attention_mask("bi", 3, torch.ones(4, dtype=torch.bool))
    with pytest.raises(InputError, match="visual_len"):
        attention_mask("bi", 0, torch.ones(1, 2, dtype=torch.bool))


def test_bi_s2s_draws_s2s_three_times_in_four():
    generator = torch.Generator().manual_seed(0)
    draws = [sample_mask_scheme("bi+s2s", generator) for _ in range(4000)]
    assert set(draws) == {"bi", "s2s"}
    share = draws.count("s2s") / len(draws)
    # Standard error sqrt(0.75·0.25/4000) ≈ 0.007: five of them either side.
    assert abs(share - 0.75) < 0.035, share


def test_bi_s2s_draws_are_reproducible_and_probability_is_honoured():
    def draws(seed: int) -> list[str]:
        generator = torch.Generator().manual_seed(seed)
        return [sample_mask_scheme("bi+s2s", generator) for _ in range(20)]

    first, again = draws(7), draws(7)
    assert first == again
    generator = torch.Generator().manual_seed(1)
    assert {sample_mask_scheme("bi+s2s", generator, s2s_probability=1.0) for _ in range(50)} == {"s2s"}
    assert {sample_mask_scheme("bi+s2s", generator, s2s_probability=0.0) for _ in range(50)} == {"bi"}


@pytest.mark.parametrize("scheme", MASK_SCHEMES)
def test_fixed_schemes_are_returned_without_a_draw(scheme):
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    assert sample_mask_scheme(scheme, generator) == scheme
    assert torch.equal(generator.get_state(), state)


def test_unknown_pretraining_scheme_is_refused():
    with pytest.raises(InputError, match="attention_mask"):
        sample_mask_scheme("s2s+bi")
    with pytest.raises(InputError, match="s2s_probability"):
        sample_mask_scheme("bi+s2s", s2s_probability=1.5)
