"""The co-attention fusion: attention against torch's reference, shapes, padding, layer outputs, config."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from kg.errors import InputError
from model.coattention_config import CoAttentionConfig, FusionConfig
from model.fusion import Attention, CoAttentionFusion, CoAttentionLayer

TEXT_WIDTH, VISION_WIDTH = 24, 20
CONFIG = FusionConfig(width=32, layers=3, heads=4, intermediate=64, dropout=0.0)


def _fusion(seed: int = 0) -> CoAttentionFusion:
    torch.manual_seed(seed)
    return CoAttentionFusion(CONFIG, TEXT_WIDTH, VISION_WIDTH).eval()


def _inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    text = torch.randn(3, 10, TEXT_WIDTH, generator=generator)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    image = torch.randn(3, 7, VISION_WIDTH, generator=generator)
    return text, mask, image


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = Attention(16, 4).eval()
    reference = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        reference.in_proj_weight.copy_(torch.cat([ours.query.weight, ours.key.weight, ours.value.weight]))
        reference.in_proj_bias.copy_(torch.cat([ours.query.bias, ours.key.bias, ours.value.bias]))
        reference.out_proj.weight.copy_(ours.out.weight)
        reference.out_proj.bias.copy_(ours.out.bias)
    x, kv = torch.randn(2, 5, 16), torch.randn(2, 6, 16)
    padding = torch.tensor([[False] * 6, [False, False, False, True, True, True]])
    expected, _ = reference(x, kv, kv, key_padding_mask=padding)
    assert torch.allclose(ours(x, kv, padding), expected, atol=1e-5)


def test_attention_with_no_key_at_all_stays_finite():
    attention = Attention(8, 2).eval()
    padding = torch.tensor([[True, True, True], [False, True, True]])
    assert torch.isfinite(attention(torch.randn(2, 2, 8), torch.randn(2, 3, 8), padding)).all()


def test_output_shapes_and_layer_outputs():
    fusion = _fusion()
    text, mask, image = _inputs()
    out = fusion(text, mask, image)
    assert out.text.shape == (3, 10, 32) and out.image.shape == (3, 7, 32)
    assert out.text_pooled.shape == out.image_pooled.shape == (3, 32)
    assert len(out.image_layers) == CONFIG.layers + 1
    assert out.image_layers[-1] is out.image
    assert all(t.shape == (3, 7, 32) for t in out.image_layers)
    assert out.entities is None
    # The layers really change the image stream (MIM at different layers reads different features).
    assert not torch.allclose(out.image_layers[1], out.image_layers[2])


def test_text_padding_is_ignored():
    fusion = _fusion()
    text, mask, image = _inputs()
    changed = text.clone()
    changed[mask == 0] = 100.0
    a, b = fusion(text, mask, image), fusion(changed, mask, image)
    assert torch.allclose(a.image, b.image, atol=1e-5)
    assert torch.allclose(a.text[mask == 1], b.text[mask == 1], atol=1e-5)
    assert torch.allclose(a.text_pooled, b.text_pooled, atol=1e-5)


def test_image_padding_is_ignored():
    fusion = _fusion()
    text, mask, image = _inputs()
    image_mask = torch.ones(3, 7, dtype=torch.long)
    image_mask[0, 5:] = 0
    changed = image.clone()
    changed[0, 5:] = -50.0
    a, b = fusion(text, mask, image, image_mask), fusion(text, mask, changed, image_mask)
    assert torch.allclose(a.text, b.text, atol=1e-5)
    assert torch.allclose(a.image[image_mask == 1], b.image[image_mask == 1], atol=1e-5)


def test_each_stream_reads_the_other():
    fusion = _fusion()
    text, mask, image = _inputs()
    a = fusion(text, mask, image)
    b = fusion(text, mask, image + torch.randn_like(image))
    c = fusion(text + torch.randn_like(text), mask, image)
    assert not torch.allclose(a.text, b.text)  # text attends to the image
    assert not torch.allclose(a.image, c.image)  # and the image to the text


def test_layer_reads_the_other_streams_layer_input():
    torch.manual_seed(0)
    layer = CoAttentionLayer(16, 2, 32).eval()
    text, image = torch.randn(2, 5, 16), torch.randn(2, 4, 16)
    new_text, new_image = layer(text, image)
    expected_text = layer.text_ffn(layer.text_cross(layer.text_self(text, text), image))
    expected_image = layer.image_ffn(layer.image_cross(layer.image_self(image, image), text))
    assert torch.allclose(new_text, expected_text) and torch.allclose(new_image, expected_image)


def test_state_dict_round_trip():
    fusion, other = _fusion(0), _fusion(1)
    text, mask, image = _inputs()
    assert not torch.allclose(fusion(text, mask, image).text, other(text, mask, image).text)
    other.load_state_dict(fusion.state_dict())
    assert torch.equal(fusion(text, mask, image).text, other(text, mask, image).text)


def test_fusion_without_knowledge_refuses_entities():
    from model.fusion import EntityInputs

    fusion = _fusion()
    text, mask, image = _inputs()
    entities = EntityInputs(torch.zeros(3, 1, 8), torch.zeros(3, 1, dtype=torch.bool), torch.zeros(3, 1, 10))
    with pytest.raises(ValueError, match="rk is off"):
        fusion(text, mask, image, entities=entities)


# ---------------------------------------------------------------------------- config
def test_config_from_yaml_round_trip(tmp_path):
    path = tmp_path / "coattention.yaml"
    path.write_text("fusion: {layers: 2, width: 64, heads: 4}\nmim: {layer: 1}\nknowledge: {ak: true, rk: true}\n")
    config = CoAttentionConfig.from_yaml(path)
    assert config.fusion.layers == 2 and config.mim.layer == 1 and config.knowledge.ak and not config.knowledge.lk
    assert CoAttentionConfig.from_dict(config.to_dict()) == config
    assert CoAttentionConfig.from_dict({"fusion": {"layers": 2}, "mim": {"layer": -1}}).mim_layer_index == 2


@pytest.mark.parametrize(("data", "field"), [
    ({"fusion": {"width": 30, "heads": 4}}, "fusion.heads"),
    ({"fusion": {"depth": 2}}, "fusion.depth"),
    ({"mim": {"ratio": 1.0}}, "mim.ratio"),
    ({"mlm": {"probability": 0}}, "mlm.probability"),
    ({"fusion": {"layers": 2}, "mim": {"layer": 3}}, "mim.layer"),
    ({"knowledge": {"embedding_kind": "rotate"}}, "knowledge.embedding_kind"),
    ({"knowledge": {"lk": True}, "mlm": {"enabled": False}}, "knowledge.lk"),
    ({"decoder": {}}, "decoder"),
])
def test_config_errors_name_the_field(data, field):
    with pytest.raises(InputError) as err:
        CoAttentionConfig.from_dict(data, source="run.yaml")
    assert err.value.field == field and err.value.file == "run.yaml"


def test_itm_head_reads_both_pooled_streams():
    from model.losses import MatchingLoss
    from model.pretraining_heads import PairMatchingHead

    fusion, head = _fusion(), PairMatchingHead(CONFIG.width)
    text, mask, image = _inputs()
    out = fusion(text, mask, image)
    logits = head(out.text_pooled, out.image_pooled)
    assert logits.shape == (3, 2)
    assert not torch.allclose(head(out.text_pooled, out.image_pooled.flip(0)), logits)
    MatchingLoss()(logits, positives=1).backward()
    assert fusion.image_pooler.dense.weight.grad.abs().sum() > 0
    assert fusion.text_pooler.dense.weight.grad.abs().sum() > 0
