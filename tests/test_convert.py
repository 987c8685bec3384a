"""Checkpoint import: a tiny model's weights renamed to BLIP's naming come back exactly.

The reference naming is written out here by hand (not by inverting model.convert.RULES), so a
wrong rule makes the round trip fail.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kg.errors import InputError, MissingResourceError
from model.convert import ConversionReport, convert_checkpoint, map_key, read_checkpoint
from model.motor import MotorModel
from model_cases import make_batch, tiny_config, train_tiny_tokenizer
from pipelines.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BLIP_TOWERS = (("momentum.image_encoder.vit.", "visual_encoder_m."), ("image_encoder.vit.", "visual_encoder."),
               ("momentum.text_encoder.", "text_encoder_m."), ("momentum.vision_proj.", "vision_proj_m."),
               ("momentum.text_proj.", "text_proj_m."))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    train_tiny_tokenizer(directory)
    return directory


def blip_state(model: MotorModel) -> dict[str, torch.Tensor]:
    """``model``'s state dict as BLIP saves it: towers renamed, ITC queue column-wise, no SK queue."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith(("itc_queue.", "report_queue.")):
            continue
        for ours, theirs in BLIP_TOWERS:
            if key.startswith(ours):
                key = theirs + key[len(ours):]
                break
        state[key] = value.clone()
    queue = model.itc_queue
    state.update({"image_queue": queue.image.t().clone(), "text_queue": queue.text.t().clone(),
                  "idx_queue": queue.index[None].clone(), "ptr_queue": queue.ptr.reshape(1).clone()})
    return state


def full_queue_model(config, tokenizer) -> MotorModel:
    """A tiny model whose ITC queue is full of distinct entries and whose pointer is mid-way."""
    torch.manual_seed(0)
    model = MotorModel(config, tokenizer).eval()
    n = config.queue_size + 3
    model.itc_queue.enqueue(image=torch.randn(n, config.embed_dim), text=torch.randn(n, config.embed_dim),
                            index=torch.arange(n))
    return model


@pytest.mark.parametrize("source, target", [
    ("visual_encoder.blocks.0.attn.qkv.weight", "image_encoder.vit.blocks.0.attn.qkv.weight"),
    ("visual_encoder.patch_embed.proj.weight", "image_encoder.vit.patch_embed.proj.weight"),
    ("visual_encoder_m.pos_embed", "momentum.image_encoder.vit.pos_embed"),
    ("text_encoder.encoder.layer.0.attention.self.query.weight",
     "text_encoder.encoder.layer.0.attention.self.query.weight"),
    ("text_encoder_m.embeddings.word_embeddings.weight", "momentum.text_encoder.embeddings.word_embeddings.weight"),
    ("text_decoder.bert.encoder.layer.1.crossattention.self.key.bias",
     "text_decoder.bert.encoder.layer.1.crossattention.self.key.bias"),
    ("text_decoder.cls.predictions.bias", "text_decoder.cls.predictions.bias"),
    ("vision_proj_m.weight", "momentum.vision_proj.weight"),
    ("itm_head.bias", "itm_head.bias"),
    ("temp", "temp"),
    ("image_queue", "itc_queue.image"),
    ("text_feat_queue", "itc_queue.text"),
    ("idx_queue", "itc_queue.index"),
    ("queue_ptr", "itc_queue.ptr"),
    ("text_encoder.embeddings.position_ids", None),
    ("tag_encoder.layers.0.weight", False),
])
def test_name_mapping_table(source: str, target: str | None | bool) -> None:
    assert map_key(source) == target


def test_reference_checkpoint_round_trips(tmp_path: Path, tokenizer_dir: Path) -> None:
    config = tiny_config()
    tokenizer = train_tiny_tokenizer(tmp_path / "tok")
    original = full_queue_model(config, tokenizer)
    state = original.state_dict()
    reference = blip_state(original)
    reference["text_encoder.embeddings.position_ids"] = torch.arange(config.max_position_embeddings)[None]
    reference["cls_head.weight"] = torch.zeros(3, 3)  # a head this project does not have
    reference["itm_head.weight"] = torch.zeros(3, config.text_width)  # wrong shape
    src = tmp_path / "model_base.pth"
    torch.save({"model": reference, "epoch": 3}, src)

    report = convert_checkpoint(src, config, tmp_path / "out", tokenizer_dir)
    assert report.unexpected == ["cls_head.weight"]
    assert report.mismatched == [{"key": "itm_head.weight", "source_key": "itm_head.weight",
                                  "source_shape": [3, config.text_width], "model_shape": [2, config.text_width]}]
    assert report.dropped == ["text_encoder.embeddings.position_ids"]
    assert report.missing == ["itm_head.weight"]  # the SK report queue starts empty and is not "missing"
    assert report.momentum_copied == [] and not report.clean
    assert {"itc_queue.image", "itc_queue.index", "itc_queue.ptr"} <= set(report.mapped)

    loaded = MotorModel.from_pretrained(tmp_path / "out").eval()
    for key, tensor in loaded.state_dict().items():
        if key not in report.missing:
            assert torch.equal(tensor, state[key]), key
    assert json.loads((tmp_path / "out" / "conversion.json").read_text())["unexpected"] == ["cls_head.weight"]

    # Outputs that do not involve the unmapped ITM head equal the original's on a batch.
    batch = make_batch(tokenizer, config)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(batch["image"]), original.encode_image(batch["image"]))
        assert torch.equal(loaded.encode_text(batch["input_ids"], batch["attention_mask"]),
                           original.encode_text(batch["input_ids"], batch["attention_mask"]))
    torch.manual_seed(5)
    assert loaded.generate(batch["image"][:2], max_length=8) == original.generate(batch["image"][:2], max_length=8)
    with torch.no_grad():
        original.itm_head.load_state_dict(loaded.itm_head.state_dict())
        assert torch.equal(loaded.itm_scores(batch["image"], batch["input_ids"], batch["attention_mask"]),
                           original.itm_scores(batch["image"], batch["input_ids"], batch["attention_mask"]))


def test_online_only_checkpoint_copies_momentum_and_resamples_vit(tmp_path: Path, tokenizer_dir: Path) -> None:
    source_config = tiny_config(knowledge="none", in_chans=3)
    torch.manual_seed(1)
    source = MotorModel(source_config, train_tiny_tokenizer(tmp_path / "tok"))
    online = {k: v for k, v in blip_state(source).items() if not k.startswith(("visual_encoder_m.", "text_encoder_m.",
                                                                              "vision_proj_m.", "text_proj_m."))}
    online = {k: v for k, v in online.items() if not k.endswith("_queue")}
    src = tmp_path / "online.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in online.items()}, str(src))
    # A smaller grayscale model: the 64 px RGB ViT is resampled and reduced to one channel.
    target_config = tiny_config(knowledge="none", in_chans=1, image_size=32)
    report = convert_checkpoint(src, target_config, tmp_path / "out", tokenizer_dir)
    assert report.clean and report.unexpected == []
    assert report.momentum_copied == ["image_encoder", "vision_proj", "text_encoder", "text_proj"]
    model = MotorModel.from_pretrained(tmp_path / "out")
    assert len(model.itc_queue) == 0  # no queue in the checkpoint: it starts empty
    assert model.image_encoder.vit.pos_embed.shape == (1, 1 + 4, target_config.vision_width)
    assert torch.equal(model.momentum.text_encoder.embeddings.word_embeddings.weight,
                       model.text_encoder.embeddings.word_embeddings.weight)
    patch = source.state_dict()["image_encoder.vit.patch_embed.proj.weight"]
    assert torch.allclose(model.image_encoder.vit.patch_embed.proj.weight, patch.sum(dim=1, keepdim=True))


def test_blip_pretraining_queue_without_ids_never_holds_positives(tmp_path: Path, tokenizer_dir: Path) -> None:
    config = tiny_config(knowledge="none")
    state = blip_state(full_queue_model(config, train_tiny_tokenizer(tmp_path / "tok")))
    del state["idx_queue"]
    torch.save(state, tmp_path / "pretrain.pth")
    convert_checkpoint(tmp_path / "pretrain.pth", config, tmp_path / "out", tokenizer_dir)
    queue = MotorModel.from_pretrained(tmp_path / "out").itc_queue
    assert len(queue) == config.queue_size and torch.equal(queue.index, torch.full((config.queue_size,), -1))


def test_tokenizer_defaults_to_the_one_beside_the_checkpoint(tmp_path: Path, tokenizer_dir: Path) -> None:
    config = tiny_config(knowledge="none")
    state = blip_state(MotorModel(config, train_tiny_tokenizer(tmp_path / "ckpt")))
    torch.save(state, tmp_path / "ckpt" / "model.pth")
    report = convert_checkpoint(tmp_path / "ckpt" / "model.pth", config, tmp_path / "out")
    assert report.clean
    torch.save(state, tmp_path / "bare.pth")
    with pytest.raises(MissingResourceError, match="no tokenizer given and none beside"):
        convert_checkpoint(tmp_path / "bare.pth", config, tmp_path / "out2")


def test_strict_refuses_and_writes_nothing(tmp_path: Path, tokenizer_dir: Path) -> None:
    config = tiny_config(knowledge="none")
    state = blip_state(MotorModel(config, train_tiny_tokenizer(tmp_path / "tok")))
    state["cls_head.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "m.pth")
    with pytest.raises(InputError, match=r"m.pth.*strict(.|\n)*unexpected: cls_head.weight"):
        convert_checkpoint(tmp_path / "m.pth", config, tmp_path / "out", tokenizer_dir, strict=True)
    assert not (tmp_path / "out").exists()


def test_unreadable_checkpoints_are_refused_without_unpickling(tmp_path: Path) -> None:
    with pytest.raises(MissingResourceError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "absent.pth")
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    pickled = tmp_path / "pickled.pth"
    torch.save({"model": {"w": torch.zeros(1), "x": Payload()}}, pickled)
    with pytest.raises(InputError, match="weights_only=True"):
        read_checkpoint(pickled)
    assert not marker.exists()
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="bad.safetensors"):
        read_checkpoint(tmp_path / "bad.safetensors")
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(InputError, match="mapping of parameter names to tensors"):
        read_checkpoint(tmp_path / "empty.pth")


def test_cli_imports_a_checkpoint(tmp_path: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture) -> None:
    model = MotorModel(tiny_config(knowledge="none"), train_tiny_tokenizer(tmp_path / "tok"))
    reference = blip_state(model)
    src = tmp_path / "m.pth"
    torch.save({"state_dict": reference}, src)
    (tmp_path / "model.yaml").write_text("knowledge: none\ndropout: 0.0\nqueue_size: 8\n")
    args = ["import-checkpoint", str(src), "--preset", "tiny", "--config", str(tmp_path / "model.yaml"),
            "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "out"), "--strict"]
    assert main(args) == 0
    mapped = sum(1 for k in reference if k != "text_encoder.embeddings.position_ids")
    assert capsys.readouterr().out.startswith(f"mapped {mapped}, missing 0, unexpected 0, mismatched 0")
    assert MotorModel.from_pretrained(tmp_path / "out").config.queue_size == 8
    torch.save({"state_dict": {**reference, "cls_head.weight": torch.zeros(1)}}, src)
    assert main(args) == 1
    assert "unexpected: cls_head.weight" in capsys.readouterr().err
    assert ConversionReport(missing=["a"]).summary().splitlines()[1] == "  missing: a"


# ---------------------------------------------------------------------------- MOTOR's knowledge modules
OUR_KNOWLEDGE = ("gk_encoder.", "gk_image_encoder.", "sk_encoder.", "sk_image_encoder.", "momentum.gk_image_encoder.",
                 "report_queue.")


def reference_block(state: dict, ours: str, theirs: str, attention: str, norms: tuple, ffn: tuple) -> dict:
    """One pre-norm block of ``state`` in the Annotated Transformer naming the reference code uses."""
    out = {}
    their_attention = "src_attn" if attention == "attention" else "self_attn"
    for parameter in ("weight", "bias"):
        for j, part in enumerate(state[f"{ours}{attention}.in_proj_{parameter}"].chunk(3)):
            out[f"{theirs}{their_attention}.linears.{j}.{parameter}"] = part.clone()
        out[f"{theirs}{their_attention}.linears.3.{parameter}"] = state[f"{ours}{attention}.out_proj.{parameter}"]
        for j, norm in enumerate(norms):
            out[f"{theirs}sublayer.{j}.norm.{'gamma' if parameter == 'weight' else 'beta'}"] = state[f"{ours}{norm}.{parameter}"]
        for j, linear in enumerate(ffn, start=1):
            out[f"{theirs}feed_forward.w_{j}.{parameter}"] = state[f"{ours}{linear}.{parameter}"]
    return out


def reference_knowledge_state(model: MotorModel, layers: int, word_embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
    """``model``'s knowledge modules as the MOTOR reference code names them (written out by hand)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in (("gk_image_encoder.", "cross_attn."), ("momentum.gk_image_encoder.", "cross_attn_m."),
                         ("sk_image_encoder.", "create_knowledge.cross_attn.")):
        for i in range(layers):
            out.update(reference_block(state, f"{ours}blocks.{i}.", f"{theirs}layers.{i}.", "attention",
                                       ("norm_query", "norm_mlp"), ("mlp.fc1", "mlp.fc2")))
        out[f"{theirs}norm.gamma"], out[f"{theirs}norm.beta"] = state[f"{ours}norm.weight"], state[f"{ours}norm.bias"]
    for i in range(model.config.gk_layers):
        out.update(reference_block(state, f"gk_encoder.layers.layers.{i}.", f"tag_encoder.encoder.layers.{i}.",
                                   "self_attn", ("norm1", "norm2"), ("linear1", "linear2")))
    out["tag_encoder.encoder.norm.gamma"] = state["gk_encoder.layers.norm.weight"]
    out["tag_encoder.encoder.norm.beta"] = state["gk_encoder.layers.norm.bias"]
    out["tag_encoder.bert.embeddings.word_embeddings.weight"] = word_embeddings
    out["tag_encoder.bert.encoder.layer.0.attention.self.query.weight"] = torch.zeros(2, 2)  # unused by the reference
    out["tag_encoder.pe.pe"] = torch.zeros(1, 20, model.config.text_width)
    for key, value in state.items():
        if key.startswith("sk_encoder.encoder."):
            out["create_knowledge.knowledge_encoder." + key[len("sk_encoder.encoder."):]] = value
        if key.startswith("text_proj."):  # the reference registers the shared projection twice
            out["create_knowledge." + key] = value
    queue = model.report_queue
    out["create_knowledge.text_queue"] = queue.feature.t().clone()
    out["create_knowledge.knowledge_input_ids_queue"] = queue.sk_ids.long()
    out["create_knowledge.knowledge_attention_mask_queue"] = queue.sk_mask.float()
    out["create_knowledge.queue_ptr"] = queue.ptr.reshape(1)
    return out


def test_reference_knowledge_modules_map_onto_the_gk_and_sk_paths(tmp_path: Path, tokenizer_dir: Path) -> None:
    config = tiny_config("gk+sk", gk_image_layers=2, sk_image_layers=2)
    tokenizer = train_tiny_tokenizer(tmp_path / "tok")
    original = full_queue_model(config, tokenizer)
    n = config.sk_queue_size
    ids = torch.randint(7, len(tokenizer), (n, config.sk_max_len))
    mask = torch.arange(config.sk_max_len) < torch.randint(2, config.sk_max_len, (n, 1))
    original.report_queue.enqueue(feature=torch.randn(n, config.embed_dim), sk_ids=ids, sk_mask=mask,
                                  has_sk=mask.sum(1) > 2, index=torch.arange(n))
    words = torch.randn(len(tokenizer), config.text_width)
    reference = {k: v for k, v in blip_state(original).items() if not k.startswith(OUR_KNOWLEDGE)}
    reference.update(reference_knowledge_state(original, 2, words))
    torch.save({"model": reference}, tmp_path / "motor.pth")

    report = convert_checkpoint(tmp_path / "motor.pth", config, tmp_path / "out", tokenizer_dir)
    no_counterpart = {"gk_encoder.type_embedding.weight", "sk_image_encoder.null_knowledge"} | {
        f"{tower}.blocks.{i}.norm_kv.{p}" for tower in ("gk_image_encoder", "sk_image_encoder",
                                                        "momentum.gk_image_encoder")
        for i in range(2) for p in ("weight", "bias")}
    assert set(report.missing) == no_counterpart and report.unexpected == [] and report.mismatched == []
    assert report.dropped == ["create_knowledge.text_proj.bias", "create_knowledge.text_proj.weight",
                              "tag_encoder.bert.encoder.layer.0.attention.self.query.weight", "tag_encoder.pe.pe"]
    assert report.sources["gk_image_encoder.blocks.1.attention.in_proj_weight"] == [
        f"cross_attn.layers.1.src_attn.linears.{j}.weight" for j in range(3)]
    assert report.sources["sk_encoder.encoder.encoder.layer.0.output.dense.weight"] == [
        "create_knowledge.knowledge_encoder.encoder.layer.0.output.dense.weight"]
    assert report.sources["gk_encoder.layers.norm.weight"] == ["tag_encoder.encoder.norm.gamma"]
    assert "cross_attn.* -> gk_image_encoder" in report.summary()
    assert "create_knowledge.knowledge_encoder.* -> sk_encoder" in report.summary()

    loaded = MotorModel.from_pretrained(tmp_path / "out").eval()
    state = original.state_dict()
    for key, tensor in loaded.state_dict().items():
        if key not in no_counterpart and key not in ("gk_encoder.word_embedding", "report_queue.index"):
            assert torch.equal(tensor, state[key]), key
    node_rows = torch.stack([words[ids].mean(0) for ids in loaded._node_token_ids])
    torch.testing.assert_close(loaded.gk_encoder.word_embedding, node_rows)
    assert len(loaded.report_queue) == n and (loaded.report_queue.index == -1).all()
    assert torch.equal(loaded.report_queue.has_sk, mask.sum(1) > 2)


def test_the_reference_two_view_projection_maps_onto_view_proj() -> None:
    assert map_key("iu_proj.weight") == "image_encoder.view_proj.weight"
    assert map_key("iu_proj_m.bias") == "momentum.image_encoder.view_proj.bias"
