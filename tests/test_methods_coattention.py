"""M3AE and ARL as methods of the framework: presets, switches, losses, save / load, pretraining.

The co-attention building blocks have their own tests (``test_fusion``, ``test_masking``,
``test_arl``, ``test_coattention_objectives``); these check how :class:`model.m3ae.M3AEModel`
composes them over MOTOR's encoders.
"""
from __future__ import annotations

import pytest
import torch
from model_cases import REPORTS, make_batch

from model.arl_knowledge import PADDING_ENTITY, entity_position_map, entity_token_spans
from model.m3ae import ARLModel, M3AEModel
from model.m3ae_config import ARLConfig, M3AEConfig
from model.pretrained import load_pretrained
from model.registry import get_method

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENTITIES = ["heart", "lungs", "effusion", "pneumothorax", "cardiomegaly", "opacity"]


def tiny(method: str = "m3ae", **sections) -> M3AEConfig:
    """The method's tiny preset without dropout, with ``coattention`` sections changed."""
    config = get_method(method).config_class().preset("tiny").replace(dropout=0.0)
    sections.setdefault("fusion", {}).setdefault("dropout", 0.0)
    return config.with_parts(**sections)


def arl_batch(tokenizer, config: M3AEConfig, n: int = 4) -> dict:
    """A collated batch with each report's entities (the words of :data:`ENTITIES` it contains)."""
    batch = make_batch(tokenizer, config, n)
    length = batch["input_ids"].shape[1]
    ids, spans = [], []
    for i in range(n):
        report = REPORTS[i % len(REPORTS)]
        offsets = tokenizer(report, truncation=True, max_length=length, return_offsets_mapping=True)["offset_mapping"]
        found = [(name, report.find(name)) for name in ENTITIES if name in report]
        ids.append([ENTITIES.index(name) for name, _ in found])
        spans.append(entity_token_spans(offsets, [(start, start + len(name)) for name, start in found]))
    width = max(len(row) for row in ids)
    batch["entity_ids"] = torch.tensor([row + [PADDING_ENTITY] * (width - len(row)) for row in ids])
    batch["entity_position_map"] = entity_position_map(spans, length)
    batch["entity_spans"] = spans
    return batch


def build(config: M3AEConfig, tokenizer):
    torch.manual_seed(0)
    names = ENTITIES if config.parts.knowledge.uses_entities else None
    return get_method(config.method).build(config, tokenizer, entity_names=names)


def losses_of(model, batch, seed: int = 1) -> dict[str, float]:
    torch.manual_seed(seed)
    return {name: value.item() for name, value in model(batch).losses.items()}


# ---------------------------------------------------------------------------- presets
@pytest.mark.parametrize("method", ["m3ae", "arl"])
def test_base_presets_have_the_papers_sizes(method):
    config = get_method(method).config_class().preset("base")
    parts = config.parts
    assert (config.image_size, config.patch_size, config.vision_width, config.vision_layers) == (224, 16, 768, 12)
    assert (config.text_width, config.text_layers) == (768, 12)
    assert (parts.fusion.layers, parts.fusion.width) == (6, 768)
    assert (parts.mlm.probability, parts.mim.ratio) == (0.15, 0.75)
    knowledge = parts.knowledge
    assert (knowledge.ak, knowledge.rk, knowledge.lk) == ((True,) * 3 if method == "arl" else (False,) * 3)
    assert method != "arl" or knowledge.entity_dim == 256


def test_m3ae_rejects_motor_knowledge_paths_and_unknown_parts():
    from kg.errors import InputError

    with pytest.raises(InputError, match="knowledge"):
        M3AEConfig.preset("tiny").replace(knowledge="full")
    with pytest.raises(InputError, match="coattention.mim.ratio"):
        M3AEConfig.preset("tiny").with_parts(mim={"ratio": 1.5})


# ---------------------------------------------------------------------------- M3AE
def test_m3ae_trains_itm_mlm_mim_and_shares_motors_encoders(tokenizer):
    from model.encoders import ImageEncoder

    config = tiny()
    model = build(config, tokenizer)
    assert isinstance(model, M3AEModel) and isinstance(model.image_encoder, ImageEncoder)
    assert model.parts.mlm_head.word_embeddings is model.text_encoder.embeddings.word_embeddings  # tied
    output = model(make_batch(tokenizer, config))
    assert set(output.losses) == {"itm", "mlm", "mim"}
    assert torch.isfinite(output.loss)
    output.loss.backward()
    for part in (model.parts.itm_head, model.parts.mlm_head.dense, model.parts.mim_decoder, model.image_encoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


@pytest.mark.parametrize("section, part, loss", [("mlm", "mlm_head", "mlm"), ("mim", "mim_decoder", "mim")])
def test_switching_an_objective_off_removes_exactly_its_parameters_and_its_loss(tokenizer, section, part, loss):
    full = build(tiny(), tokenizer)
    config = tiny(**{section: {"enabled": False}})
    without = build(config, tokenizer)
    removed = set(full.state_dict()) - set(without.state_dict())
    assert removed and all(name.startswith(f"parts.{part}.") for name in removed)
    assert set(without.state_dict()) <= set(full.state_dict())
    assert not hasattr(without.parts, part)
    assert set(without(make_batch(tokenizer, config)).losses) == {"itm", "mlm", "mim"} - {loss}


def test_arl_with_every_knowledge_part_off_is_m3ae(tokenizer):
    """``arl:none`` builds the same parameters as M3AE and, from the same seed, gives the same losses."""
    m3ae_config = tiny()
    arl_config = tiny("arl", knowledge={"ak": False, "rk": False, "lk": False})
    m3ae, arl = build(m3ae_config, tokenizer), build(arl_config, tokenizer)
    assert isinstance(arl, ARLModel)
    assert {k: v.shape for k, v in m3ae.state_dict().items()} == {k: v.shape for k, v in arl.state_dict().items()}
    assert all(torch.equal(v, arl.state_dict()[k]) for k, v in m3ae.state_dict().items())
    batch = make_batch(tokenizer, m3ae_config)
    assert losses_of(m3ae, batch) == losses_of(arl, batch)


def test_itm_uses_the_unmasked_pass(tokenizer):
    """Turning MLM and MIM off changes nothing in the ITM loss: masked views never reach it."""
    config = tiny()
    batch = make_batch(tokenizer, config)
    with_masks = losses_of(build(config, tokenizer), batch)
    plain = losses_of(build(tiny(mlm={"enabled": False}, mim={"enabled": False}), tokenizer), batch)
    assert with_masks["itm"] == pytest.approx(plain["itm"], abs=1e-6)


# ---------------------------------------------------------------------------- ARL
def test_arl_trains_ak_and_reasons_over_the_reports_entities(tokenizer):
    config = tiny("arl")
    model = build(config, tokenizer)
    batch = arl_batch(tokenizer, config)
    output = model(batch)
    assert set(output.losses) == {"itm", "mlm", "mim", "ak"}
    output.loss.backward()
    assert model.parts.entity_table.weight.grad.abs().sum() > 0
    assert model.parts.fusion.knowledge_blocks[0].entity_to_text.weight.grad.abs().sum() > 0
    with pytest.raises(Exception, match="entities"):
        model({k: v for k, v in batch.items() if not k.startswith("entity")})


@pytest.mark.parametrize("switch, part", [("ak", "alignment_head"), ("rk", "fusion.knowledge_blocks")])
def test_arl_switch_off_removes_its_parameters(tokenizer, switch, part):
    full = build(tiny("arl"), tokenizer)
    without = build(tiny("arl", knowledge={switch: False}), tokenizer)
    removed = set(full.state_dict()) - set(without.state_dict())
    assert removed and all(name.startswith(f"parts.{part}.") for name in removed)


# ---------------------------------------------------------------------------- save / load, retrieval
@pytest.mark.parametrize("method", ["m3ae", "arl"])
def test_save_load_round_trip(tokenizer, tmp_path, method):
    config = tiny(method)
    model = build(config, tokenizer).eval()
    model.save_pretrained(tmp_path / "model")
    loaded = load_pretrained(tmp_path / "model").eval()
    assert type(loaded) is type(model) and loaded.config.to_dict() == model.config.to_dict()
    assert loaded.entity_names == model.entity_names
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    batch = arl_batch(tokenizer, config) if method == "arl" else make_batch(tokenizer, config)
    images = model.image_tokens(batch["image"])
    torch.testing.assert_close(loaded.match_matrix(images, loaded.text_side(batch)),
                               model.match_matrix(images, model.text_side(batch)))


def test_match_matrix_scores_every_pair_as_itm_scores_does(tokenizer):
    config = tiny()
    model = build(config, tokenizer).eval()
    batch = make_batch(tokenizer, config)
    matrix = model.match_matrix(model.image_tokens(batch["image"]), model.text_side(batch), pairs_per_call=5)
    assert matrix.shape == (4, 4)
    torch.testing.assert_close(matrix.diagonal(), model.itm_scores(batch["image"], batch["input_ids"],
                                                                   batch["attention_mask"]))
    swapped = batch["input_ids"].roll(1, 0), batch["attention_mask"].roll(1, 0)
    torch.testing.assert_close(matrix[torch.arange(4), torch.arange(4).roll(1)],
                               model.itm_scores(batch["image"], *swapped))


def test_itm_scoring_uses_the_running_statistics_in_any_mode(tokenizer):
    """Scores never depend on the pairs scored together, and scoring never moves the statistics."""
    config = tiny()
    model = build(config, tokenizer).eval()
    batch = make_batch(tokenizer, config)
    norm = model.parts.itm_head.norm
    norm.running_mean.uniform_(-0.5, 0.5)  # away from the defaults, so batch statistics would differ
    expected = model.match_matrix(model.image_tokens(batch["image"]), model.text_side(batch))
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    model.train()
    with torch.no_grad():
        in_training = model.match_matrix(model.image_tokens(batch["image"]), model.text_side(batch), pairs_per_call=1)
        pairs = model.itm_scores(batch["image"], batch["input_ids"], batch["attention_mask"])
    assert norm.training
    for key, value in norm.state_dict().items():
        torch.testing.assert_close(value, before[key])
    model.eval()
    torch.testing.assert_close(model.match_matrix(model.image_tokens(batch["image"]), model.text_side(batch)),
                               expected)
    # Dropout is off in tiny(), so training mode changes nothing but the norm's mode: scores agree.
    torch.testing.assert_close(in_training, expected)
    torch.testing.assert_close(pairs, expected.diagonal())


@pytest.mark.timeout(120)
def test_pretrain_cli_runs_m3ae_and_ranks_retrieval_by_itm(tmp_path):
    import json

    from pipelines.cli import main

    out = tmp_path / "m3ae"
    assert main(["pretrain", "--method", "m3ae", "--out", str(out), "--no-progress",
                 "--set", "data.synthetic_n=24", "--set", "train.batch_size=4", "--set", "train.max_steps=2",
                 "--set", "eval.batch_size=8", "--set", "model.coattention.mim.layer=1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["zero_shot_retrieval"]
    assert metrics["ranked_by"] == "itm" and "itc" not in metrics
    saved = load_pretrained(out / "model")
    assert isinstance(saved, M3AEModel) and saved.config.parts.mim.layer == 1
    assert saved.config.parts.fusion.width == M3AEConfig.preset("tiny").parts.fusion.width  # preset kept


# ---------------------------------------------------------------------------- ARL's entity data
def test_entity_collator_maps_each_mention_to_its_tokens_and_vocabulary_row(tokenizer):
    from kg.records import Entity, ReportRecord
    from model.processing import MotorCollator
    from pipelines.arl_entities import EntityCollator, Mention, entity_vocabulary, locate_mentions

    report = "Small left pleural effusion. No pneumothorax."
    record = ReportRecord("s1", "Small left pleural effusion . No pneumothorax .", entities={
        "1": Entity("1", "pleural", "ANAT-DP", 2, 2), "2": Entity("2", "effusion", "OBS-DP", 3, 3),
        "3": Entity("3", "pneumothorax", "OBS-DA", 6, 6)})
    mentions = locate_mentions(report, record)
    assert [(m.name, report[m.start:m.end]) for m in mentions] == [
        ("pleural", "pleural"), ("effusion", "effusion"), ("pneumothorax", "pneumothorax")]
    names = entity_vocabulary({"s1": mentions, "s2": [Mention("effusion", 0, 1)]})
    assert names[0] == "effusion" and set(names) == {"pleural", "effusion", "pneumothorax"}
    config = tiny("arl")
    collate = EntityCollator(MotorCollator.from_config(tokenizer, config), ["effusion", "pleural"])
    samples = [{"image": torch.rand(3, 64, 64), "report": report, "index": 0, "mentions": mentions},
               {"image": torch.rand(3, 64, 64), "report": "heart size is normal", "index": 1, "mentions": []}]
    batch = collate(samples)
    assert batch["entity_ids"].tolist() == [[1, 0], [PADDING_ENTITY, PADDING_ENTITY]]  # pneumothorax: not in vocabulary
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    for slot, word in enumerate(["pleural", "effusion"]):
        start, end = batch["entity_spans"][0][slot]
        assert "".join(t.removeprefix("##") for t in tokens[start:end]) == word
        assert batch["entity_position_map"][0, slot].nonzero().squeeze(1).tolist() == list(range(start, end))
    assert batch["entity_position_map"][1].sum() == 0


@pytest.mark.timeout(120)
def test_pretrain_cli_runs_arl_with_the_reports_entities(tmp_path):
    import json

    from pipelines.cli import main

    out = tmp_path / "arl"
    assert main(["pretrain", "--method", "arl", "--out", str(out), "--no-progress",
                 "--set", "data.synthetic_n=24", "--set", "train.batch_size=4", "--set", "train.max_steps=2",
                 "--set", "eval.batch_size=8"]) == 0
    assert json.loads((out / "metrics.json").read_text())["zero_shot_retrieval"]["ranked_by"] == "itm"
    saved = load_pretrained(out / "model")
    assert isinstance(saved, ARLModel) and len(saved.entity_names) > 5
    assert (out / "model" / "entities.txt").read_text().split("\n")[0] == saved.entity_names[0]


# ---------------------------------------------------------------------------- ablation
def test_ablation_method_variants_switch_only_their_parts(tmp_path):
    from pipelines.ablate import _variant_config, ablation_table, parse_variants
    from pipelines.config import PretrainConfig, resolve_model_config

    assert parse_variants("full arl:none,arl:ak m3ae:mim") == ["full", "arl:none", "arl:ak", "m3ae:mim"]
    base = PretrainConfig(model={"preset": "tiny", "knowledge": "full", "dropout": 0.0})
    configs = {v: resolve_model_config(_variant_config(base, v, tmp_path / "m.jsonl").model)
               for v in ("full", "m3ae:mlm", "m3ae:mim", "arl:none", "arl:rk", "arl:full")}
    assert configs["full"].knowledge == "full" and configs["full"].dropout == 0.0
    assert (configs["m3ae:mlm"].parts.mlm.enabled, configs["m3ae:mlm"].parts.mim.enabled) == (True, False)
    assert (configs["m3ae:mim"].parts.mlm.enabled, configs["m3ae:mim"].parts.mim.enabled) == (False, True)
    switches = {v: (c.parts.knowledge.ak, c.parts.knowledge.rk, c.parts.knowledge.lk)
                for v, c in configs.items() if v.startswith("arl")}
    assert switches == {"arl:none": (False,) * 3, "arl:rk": (False, True, False), "arl:full": (True,) * 3}
    assert all(c.dropout == 0.0 and c.parts.fusion.width == 64 for v, c in configs.items() if ":" in v)  # shared kept

    recalls = {f"{d}_R@{k}": 0.5 for d in ("i2t", "t2i") for k in (1, 5, 10)}
    metrics = {**recalls, "chance": recalls}
    table = ablation_table({"full": {"itc": metrics, "n": 4, "ranked_by": "itc"},
                            "arl:rk": {"itm": metrics, "n": 4, "ranked_by": "itm"}})
    assert "| full |" in table and "| arl:rk (ITM) |" in table


# ---------------------------------------------------------------------------- downstream
def test_generation_attaches_a_decoder_initialised_from_the_text_encoder_and_it_survives_save_load(tokenizer, tmp_path):
    config = tiny()
    model = build(config, tokenizer)
    assert not hasattr(model, "text_decoder")
    with pytest.raises(Exception, match="no report decoder"):
        model.generate(torch.zeros(1, 3, 64, 64))
    assert model.attach_report_decoder() and not model.attach_report_decoder()
    assert model.config.report_decoder
    decoder, encoder = model.text_decoder.bert.state_dict(), model.text_encoder.state_dict()
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                 "encoder.layer.1.output.dense.weight"):
        assert torch.equal(decoder[name], encoder[name]), name
    model.eval()
    reports = model.generate(torch.zeros(2, 3, 64, 64), max_length=8)
    assert len(reports) == 2 and all(isinstance(r, str) for r in reports)
    model.save_pretrained(tmp_path / "model")
    loaded = load_pretrained(tmp_path / "model").eval()
    assert loaded.generate(torch.zeros(2, 3, 64, 64), max_length=8) == reports
