"""The single-stream encoder: visual sampling, what each mask lets flow (checked numerically), padding."""
from __future__ import annotations

import pytest
import torch
from medvill_cases import TINY_K, tiny_medvill_config
from model_cases import one_torch_thread

from kg.errors import InputError
from model.attention_masks import MASK_SCHEMES
from model.single_stream import SingleStreamEncoder, VisualFeatureSampler, text_segment

VOCAB, CLS, SEP = 50, 2, 3
V = TINY_K + 2
ATOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def encoder() -> SingleStreamEncoder:
    torch.manual_seed(0)
    return SingleStreamEncoder(tiny_medvill_config(), VOCAB, CLS, SEP).eval()


def _inputs(seed: int = 0, batch: int = 2, text_len: int = 7):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, 64, 64, generator=generator)
    ids = torch.randint(5, VOCAB, (batch, text_len), generator=generator)
    return images, ids, torch.ones(batch, text_len, dtype=torch.bool)


# ---------------------------------------------------------------------------- visual features
def test_eval_sampling_is_deterministic_and_evenly_spaced():
    sampler = VisualFeatureSampler("test_resnet", 64, 3, 3).eval()
    images = torch.randn(2, 3, 64, 64)
    features, positions = sampler(images)
    assert features.shape == (2, 3, sampler.width) and positions.tolist() == [[0, 2, 3], [0, 2, 3]]
    again, _ = sampler(images)
    assert torch.equal(features, again)
    # The features are the feature map's columns at those positions.
    flat = sampler.cnn.forward_features(images).flatten(2).transpose(1, 2)
    assert torch.allclose(features, flat[:, [0, 2, 3]])


def test_training_sampling_draws_distinct_sorted_positions_per_image():
    sampler = VisualFeatureSampler("test_resnet", 128, 3, 5).train()  # 4 × 4 = 16 positions
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        positions = sampler.sample_positions(3, torch.device("cpu"), generator)
        assert positions.shape == (3, 5)
        for row in positions.tolist():
            assert row == sorted(set(row)) and all(0 <= p < 16 for p in row)
            seen.add(tuple(row))
    assert len(seen) > 10  # random, not a fixed pattern


def test_every_position_kept_when_k_is_the_whole_map():
    sampler = VisualFeatureSampler("test_resnet", 64, 3, 4).train()
    assert sampler.sample_positions(2, torch.device("cpu")).tolist() == [[0, 1, 2, 3]] * 2


def test_too_many_visual_tokens_and_unknown_backbones_are_refused():
    with pytest.raises(InputError, match="num_visual_tokens"):
        VisualFeatureSampler("test_resnet", 64, 3, 5)
    with pytest.raises(InputError, match="image_size"):
        VisualFeatureSampler("test_resnet", 70, 3, 1)
    with pytest.raises(InputError, match="backbone"):
        VisualFeatureSampler("no_such_cnn", 64, 3, 1)


def test_wrong_image_shape_is_refused(encoder):
    _, ids, mask = _inputs()
    with pytest.raises(InputError, match="image"):
        encoder(torch.randn(2, 3, 32, 32), ids, mask, "bi")


# ---------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("scheme", MASK_SCHEMES)
def test_shapes_and_finite_outputs_with_padding(encoder, scheme):
    images, ids, mask = _inputs()
    mask[1, 3:] = False
    out = encoder(images, ids, mask, scheme)
    assert out.hidden.shape == (2, V + 7, 64)
    assert torch.isfinite(out.hidden).all()  # padding rows have no key but stay finite
    assert out.joint_cls.shape == (2, 64) and out.text_hidden.shape == (2, 7, 64)
    assert (out.text_cls is not None) == (scheme == "non_crossing")


@pytest.mark.parametrize("scheme", MASK_SCHEMES)
def test_padding_changes_no_real_output(encoder, scheme):
    images, ids, mask = _inputs(text_len=4)
    short = encoder(images, ids, mask, scheme).hidden
    padded_ids = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    padded = encoder(images, padded_ids, padded_mask, scheme).hidden
    assert torch.allclose(short, padded[:, : V + 4], atol=ATOL)


def _perturb_text(ids: torch.Tensor, position: int) -> torch.Tensor:
    changed = ids.clone()
    changed[:, position] = (changed[:, position] - 5 + 1) % (VOCAB - 5) + 5
    return changed


@pytest.mark.parametrize("position", [0, 3, 6])
def test_s2s_text_never_sees_later_text(encoder, position):
    images, ids, mask = _inputs()
    before = encoder(images, ids, mask, "s2s").hidden
    after = encoder(images, _perturb_text(ids, position), mask, "s2s").hidden
    cut = V + position
    assert torch.allclose(before[:, :cut], after[:, :cut], atol=ATOL)  # image and earlier text unchanged
    assert not torch.allclose(before[:, cut:], after[:, cut:], atol=1e-3)  # the token itself and later text change


def test_bar_lets_the_image_see_the_report_but_not_text_see_later_text_directly():
    # One layer: a text token reads only the layer's inputs, so the mask alone decides what it sees.
    torch.manual_seed(0)
    one_layer = SingleStreamEncoder(tiny_medvill_config(text_layers=1), VOCAB, CLS, SEP).eval()
    images, ids, mask = _inputs()
    before = one_layer(images, ids, mask, "bar").hidden
    after = one_layer(images, _perturb_text(ids, 4), mask, "bar").hidden
    assert torch.allclose(before[:, V : V + 4], after[:, V : V + 4], atol=ATOL)
    assert not torch.allclose(before[:, :V], after[:, :V], atol=1e-3)


def test_bar_carries_later_text_to_earlier_text_through_the_image_after_two_layers(encoder):
    # Layer 1's image tokens have read the whole report and layer 2's text reads them: unlike
    # S2S, BAR does not make earlier text independent of later text, hence S2S for generation.
    images, ids, mask = _inputs()
    before = encoder(images, ids, mask, "bar").hidden
    after = encoder(images, _perturb_text(ids, 4), mask, "bar").hidden
    assert not torch.equal(before[:, V : V + 4], after[:, V : V + 4])


def test_bi_lets_every_token_see_every_token(encoder):
    images, ids, mask = _inputs()
    before = encoder(images, ids, mask, "bi").hidden
    after = encoder(images, _perturb_text(ids, 6), mask, "bi").hidden
    assert not torch.allclose(before[:, 0], after[:, 0], atol=1e-3)
    assert not torch.allclose(before[:, V], after[:, V], atol=1e-3)


def test_non_crossing_keeps_the_modalities_apart(encoder):
    images, ids, mask = _inputs()
    ids[:, 0] = CLS  # [CLS_T]
    base = encoder(images, ids, mask, "non_crossing")
    other_image = encoder(torch.randn_like(images), ids, mask, "non_crossing")
    other_text = encoder(images, _perturb_text(ids, 3), mask, "non_crossing")
    assert torch.allclose(base.text_hidden, other_image.text_hidden, atol=ATOL)
    assert not torch.allclose(base.hidden[:, :V], other_image.hidden[:, :V], atol=1e-3)
    assert torch.allclose(base.hidden[:, :V], other_text.hidden[:, :V], atol=ATOL)
    assert torch.equal(base.text_cls, base.hidden[:, V])


def test_text_segment_drops_the_report_cls_except_for_non_crossing():
    ids = torch.tensor([[CLS, 7, 8, SEP, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    text, text_mask = text_segment(ids, mask, "bar")
    assert text.tolist() == [[7, 8, SEP, 0]] and text_mask.tolist() == [[True, True, True, False]]
    text, text_mask = text_segment(ids, mask, "non_crossing")
    assert text.tolist() == ids.tolist() and text_mask.dtype == torch.bool


# ---------------------------------------------------------------------------- incremental decoding
def test_cached_decoding_equals_encoding_the_whole_sequence_under_s2s(encoder):
    images, ids, mask = _inputs()
    full = encoder(images, ids, mask, "s2s").text_hidden
    cache = encoder.start_decoding(images)
    steps = []
    for position in range(ids.shape[1]):
        hidden, cache = encoder.decode_step(ids[:, position : position + 1], cache, keep=1)
        steps.append(hidden)
    assert cache.text_len == ids.shape[1]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=ATOL)


def test_gradients_reach_the_backbone_and_the_embeddings():
    torch.manual_seed(0)
    encoder = SingleStreamEncoder(tiny_medvill_config(), VOCAB, CLS, SEP).train()
    images, ids, mask = _inputs()
    mask[0, 4:] = False
    encoder(images, ids, mask, "bar").hidden.square().mean().backward()
    for name in ("visual_sampler", "embeddings", "layers"):
        grads = [p.grad for p in getattr(encoder, name).parameters()]
        assert all(g is None or torch.isfinite(g).all() for g in grads), name
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_text_longer_than_max_text_len_is_refused(encoder):
    images, ids, mask = _inputs(text_len=65)
    with pytest.raises(InputError, match="max_text_len"):
        encoder(images, ids, mask, "bi")
