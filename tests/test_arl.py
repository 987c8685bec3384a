"""ARL's knowledge parts: the entity table read from `kg embed` output, P, AK targets, RK, switches."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from kg.embeddings import EmbedConfig, EmbeddingResult
from kg.errors import InputError
from model.arl_knowledge import (
    EntityTable,
    KnowledgeReasoningBlock,
    entity_position_map,
    entity_targets,
    entity_token_spans,
)
from model.coattention import CoAttentionParts
from model.coattention_config import ARLKnowledgeConfig, CoAttentionConfig, FusionConfig, MIMConfig, MLMConfig
from model.fusion import CoAttentionLayer, EntityInputs

ENTITIES = ["effusion", "pleural", "atelectasis", "heart", "cardiomegaly", "pneumothorax"]
TEXT_WIDTH, VISION_WIDTH, VOCAB = 24, 20, 60


def _save_embeddings(directory, entities: list[str], dim: int, seed: int = 0) -> np.ndarray:
    """A `kg embed` output directory written by kg.embeddings itself; returns the TransE matrix."""
    rng = np.random.default_rng(seed)
    transe = rng.normal(size=(len(entities), dim)).astype(np.float32)
    EmbeddingResult(
        entities=entities, relations=["located_at"], transe=transe, gat=transe + 1.0,
        relation_transe=np.zeros((1, dim), np.float32), metrics={}, config=EmbedConfig(dim=dim),
    ).save_to_directory(directory)
    return transe


def _config(*, ak=False, rk=False, lk=False, mlm=True, mim=True, embeddings=None) -> CoAttentionConfig:
    return CoAttentionConfig(
        fusion=FusionConfig(width=32, layers=2, heads=2, intermediate=64, dropout=0.0),
        mlm=MLMConfig(enabled=mlm),
        mim=MIMConfig(enabled=mim, decoder_width=32, decoder_layers=1, decoder_heads=2),
        knowledge=ARLKnowledgeConfig(ak=ak, rk=rk, lk=lk, entity_dim=16, entity_heads=2, entity_intermediate=32,
                                     embeddings=embeddings, dropout=0.0),
    )


def _parts(config: CoAttentionConfig, seed: int = 0) -> CoAttentionParts:
    torch.manual_seed(seed)
    return CoAttentionParts(
        config, text_width=TEXT_WIDTH, vision_width=VISION_WIDTH, word_embeddings=nn.Embedding(VOCAB, TEXT_WIDTH),
        special_ids=range(5), mask_id=4, num_patches=16, patch_dim=48, entity_names=ENTITIES,
    ).eval()


# ---------------------------------------------------------------------------- entity table
def test_entity_table_loads_vectors_by_name(tmp_path):
    transe = _save_embeddings(tmp_path / "emb", ["Effusion", "heart", "lung", "pneumothorax"], dim=16)
    table = EntityTable(ENTITIES, 16)
    before = table.weight.detach().clone()
    assert table.load_embeddings(tmp_path / "emb") == 3
    # Exact names and case-insensitive ones ("effusion" ↔ "Effusion") take the file's vectors.
    assert torch.equal(table.weight[0], torch.from_numpy(transe[0]))
    assert torch.equal(table.weight[3], torch.from_numpy(transe[1]))
    assert torch.equal(table.weight[5], torch.from_numpy(transe[3]))
    # Entities the file does not name get their own learned vector, at the loaded vectors' scale.
    loaded_norm = torch.from_numpy(transe[[0, 1, 3]]).norm(dim=1).mean()
    for row in (1, 2, 4):
        assert not torch.equal(table.weight[row], before[row])
        assert 0.5 < float(table.weight.detach()[row].norm() / loaded_norm) < 2.0
    assert not torch.equal(table.weight[1], table.weight[2])
    assert table.pretrained.tolist() == [True, False, False, True, False, True]
    assert table.weight.requires_grad


def test_entity_table_reads_gat_vectors_when_asked(tmp_path):
    transe = _save_embeddings(tmp_path / "emb", ENTITIES, dim=16)
    table = EntityTable(ENTITIES, 16)
    table.load_embeddings(tmp_path / "emb", kind="gat")
    assert torch.allclose(table.weight.detach(), torch.from_numpy(transe) + 1.0)


def test_entity_table_refuses_a_dimension_mismatch(tmp_path):
    _save_embeddings(tmp_path / "emb", ENTITIES, dim=8)
    with pytest.raises(InputError, match="entity_dim: 8") as err:
        EntityTable(ENTITIES, 16).load_embeddings(tmp_path / "emb")
    assert err.value.field == "entity_dim" and "emb" in err.value.file


def test_entity_table_refuses_a_directory_that_is_not_kg_embed_output(tmp_path):
    with pytest.raises(InputError, match="kg embed"):
        EntityTable(ENTITIES, 16).load_embeddings(tmp_path)


def test_parts_load_the_configured_embeddings(tmp_path):
    transe = _save_embeddings(tmp_path / "emb", ENTITIES, dim=16)
    parts = _parts(_config(ak=True, embeddings=str(tmp_path / "emb")))
    assert torch.equal(parts.entity_table.weight.detach(), torch.from_numpy(transe))


def test_entity_table_refuses_duplicate_names():
    with pytest.raises(InputError, match="'heart' is listed twice"):
        EntityTable(["heart", "lung", "heart"], 8)


def test_entity_lookup_pads_with_zeros():
    table = EntityTable(ENTITIES, 16)
    assert table.ids(["heart", "unknown", "effusion"]) == [3, -1, 0]
    feats, padding = table(torch.tensor([[3, 0], [5, -1]]))
    assert feats.shape == (2, 2, 16)
    assert padding.tolist() == [[False, False], [False, True]]
    assert torch.equal(feats[1, 1], torch.zeros(16)) and torch.equal(feats[0, 0], table.weight[3])


# ---------------------------------------------------------------------------- P and AK targets
def test_token_spans_from_tokenizer_offsets(tmp_path):
    from model_cases import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer(tmp_path / "tok")
    text = "small left pleural effusion with basilar atelectasis"
    encoded = tokenizer(text, return_offsets_mapping=True)
    mentions = [(text.index("pleural effusion"), text.index("pleural effusion") + len("pleural effusion")),
                (text.index("atelectasis"), len(text))]
    spans = entity_token_spans(encoded["offset_mapping"], mentions)
    tokens = encoded.tokens()
    for (start, end), (a, b) in zip(spans, mentions):
        assert tokenizer.convert_tokens_to_string(tokens[start:end]) == text[a:b]


def test_position_map():
    position_map = entity_position_map([[(1, 3), (4, 5)], [], [(2, 6)]], length=8)
    assert position_map.shape == (3, 2, 8)
    assert position_map[0, 0].tolist() == [0, 1, 1, 0, 0, 0, 0, 0]
    assert position_map[0, 1].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    assert position_map[1].sum() == 0 and position_map[2, 1].sum() == 0
    assert position_map[2, 0].tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    with pytest.raises(InputError, match="outside"):
        entity_position_map([[(3, 9)]], length=8)


def test_ak_targets_are_the_reports_entity_set():
    ids = torch.tensor([[3, 0, 3, -1], [-1, -1, -1, -1], [5, 1, 2, 4]])
    targets = entity_targets(ids, len(ENTITIES))
    assert targets.shape == (3, len(ENTITIES))
    for row, report in enumerate(ids.tolist()):
        assert set(targets[row].nonzero().squeeze(1).tolist()) == {e for e in report if e >= 0}
    assert set(targets.unique().tolist()) <= {0.0, 1.0}


# ---------------------------------------------------------------------------- RK
def _entity_inputs(table: EntityTable, length: int = 10) -> EntityInputs:
    ids = torch.tensor([[0, 1, 3], [4, -1, -1], [-1, -1, -1]])
    spans = [[(1, 3), (3, 4), (6, 8)], [(2, 5)], []]
    return table.inputs(ids, entity_position_map(spans, length))


def test_rk_output_shapes():
    parts = _parts(_config(rk=True))
    entities = _entity_inputs(parts.entity_table)
    out = parts.fusion(torch.randn(3, 10, TEXT_WIDTH), torch.ones(3, 10), torch.randn(3, 7, VISION_WIDTH),
                       entities=entities)
    assert out.text.shape == (3, 10, 32) and out.image.shape == (3, 7, 32)
    assert out.entities.shape == (3, 3, 16)
    assert torch.isfinite(out.text).all() and torch.isfinite(out.entities).all()  # a report without entities too
    block = parts.fusion.knowledge_blocks[0]
    z, addition = block(entities.feats, entities.padding, torch.randn(3, 7, 32), None, entities.position_map)
    assert z.shape == (3, 3, 16) and addition.shape == (3, 10, 32)


def test_p_routes_each_entity_to_its_own_tokens_only():
    torch.manual_seed(0)
    block = KnowledgeReasoningBlock(32, 16, 2, 32).eval()
    table = EntityTable(ENTITIES, 16)
    entities = _entity_inputs(table)
    _, addition = block(entities.feats, entities.padding, torch.randn(3, 7, 32), None, entities.position_map)
    touched = entities.position_map.sum(1) > 0  # (B, L) tokens that mention an entity
    assert torch.equal(addition[~touched], torch.zeros_like(addition[~touched]))
    assert bool((addition[touched].abs().sum(-1) > 0).all())
    # Tokens 1-2 of report 0 get entity 0's output, token 3 entity 1's.
    assert torch.equal(addition[0, 1], addition[0, 2]) and not torch.equal(addition[0, 1], addition[0, 3])


def test_text_positions_without_an_entity_are_unchanged_by_the_entity_path():
    torch.manual_seed(0)
    layer = CoAttentionLayer(32, 2, 64).eval()
    block = KnowledgeReasoningBlock(32, 16, 2, 32).eval()
    table = EntityTable(ENTITIES, 16)
    entities = _entity_inputs(table)
    text, image = torch.randn(3, 10, 32), torch.randn(3, 7, 32)
    _, addition = block(entities.feats, entities.padding, image, None, entities.position_map)
    with_knowledge, _ = layer(text, image, text_addition=addition)
    without, _ = layer(text, image)
    touched = entities.position_map.sum(1) > 0
    assert torch.equal(with_knowledge[~touched], without[~touched])
    assert not torch.allclose(with_knowledge[touched], without[touched])


def test_rk_fusion_with_an_empty_p_equals_the_fusion_without_rk():
    plain = _parts(_config()).fusion
    knowing = _parts(_config(rk=True), seed=1).fusion
    missing, unexpected = knowing.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("knowledge_blocks.") for k in missing)
    table = EntityTable(ENTITIES, 16)
    entities = _entity_inputs(table)
    empty = EntityInputs(entities.feats, entities.padding, torch.zeros_like(entities.position_map))
    text, mask, image = torch.randn(3, 10, TEXT_WIDTH), torch.ones(3, 10), torch.randn(3, 7, VISION_WIDTH)
    a, b = plain(text, mask, image), knowing(text, mask, image, entities=empty)
    assert torch.allclose(a.text, b.text, atol=1e-6) and torch.allclose(a.image, b.image, atol=1e-6)
    c = knowing(text, mask, image, entities=entities)
    assert not torch.allclose(a.text, c.text)


def test_fusion_with_rk_needs_entities():
    parts = _parts(_config(rk=True))
    with pytest.raises(ValueError, match="entities"):
        parts.fusion(torch.randn(1, 4, TEXT_WIDTH), torch.ones(1, 4), torch.randn(1, 3, VISION_WIDTH))


# ---------------------------------------------------------------------------- switches
OPTIONAL = {"entity_table", "alignment_head", "mlm_head", "mim_decoder"}


@pytest.mark.parametrize(("ak", "rk", "lk", "mlm", "mim"), [
    combo for combo in itertools.product([False, True], repeat=5) if not (combo[2] and not combo[3])
])
def test_every_switch_off_removes_its_parameters(ak, rk, lk, mlm, mim):
    parts = _parts(_config(ak=ak, rk=rk, lk=lk, mlm=mlm, mim=mim))
    expected = {"fusion", "itm_head"} | {name for name, on in (
        ("entity_table", ak or rk), ("alignment_head", ak), ("mlm_head", mlm), ("mim_decoder", mim)) if on}
    assert set(parts.parameter_counts()) == expected
    for name in OPTIONAL - expected:
        assert not hasattr(parts, name)
    assert hasattr(parts, "token_masker") == mlm
    assert parts.fusion.uses_knowledge == rk
    plain_fusion = _parts(_config(mlm=False, mim=False)).parameter_counts()["fusion"]
    blocks = sum(p.numel() for p in parts.fusion.knowledge_blocks.parameters()) if rk else 0
    assert parts.parameter_counts()["fusion"] == plain_fusion + blocks
    # LK alone adds nothing at all: it is a way of masking.
    if lk:
        without_lk = _parts(_config(ak=ak, rk=rk, lk=False, mlm=mlm, mim=mim))
        assert parts.parameter_counts() == without_lk.parameter_counts()


def test_parts_need_the_entity_vocabulary_for_ak_and_rk():
    with pytest.raises(InputError, match="entity vocabulary"):
        CoAttentionParts(_config(ak=True), text_width=TEXT_WIDTH, vision_width=VISION_WIDTH,
                         word_embeddings=nn.Embedding(VOCAB, TEXT_WIDTH), special_ids=range(5), mask_id=4,
                         num_patches=16, patch_dim=48)


def test_state_dict_round_trip_of_every_part(tmp_path):
    config = _config(ak=True, rk=True, lk=True)
    parts, other = _parts(config, seed=0), _parts(config, seed=1)
    parts.entity_table.pretrained[2] = True
    torch.save(parts.state_dict(), tmp_path / "parts.pt")
    other.load_state_dict(torch.load(tmp_path / "parts.pt", weights_only=True))
    state, loaded = parts.state_dict(), other.state_dict()
    assert state.keys() == loaded.keys() and all(torch.equal(state[k], loaded[k]) for k in state)
    entities = _entity_inputs(parts.entity_table)
    text, mask, image = torch.randn(3, 10, TEXT_WIDTH), torch.ones(3, 10), torch.randn(3, 7, VISION_WIDTH)
    a = parts.fusion(text, mask, image, entities=entities)
    b = other.fusion(text, mask, image, entities=_entity_inputs(other.entity_table))
    assert torch.equal(a.text, b.text) and torch.equal(a.entities, b.entities)


def test_a_batch_without_any_entity_runs():
    parts = _parts(_config(rk=True))
    empty = parts.entity_table.inputs(torch.zeros(2, 0, dtype=torch.long), entity_position_map([[], []], 6))
    text, mask, image = torch.randn(2, 6, TEXT_WIDTH), torch.ones(2, 6), torch.randn(2, 3, VISION_WIDTH)
    out = parts.fusion(text, mask, image, entities=empty)
    assert out.entities.shape == (2, 0, 16) and torch.isfinite(out.text).all()
