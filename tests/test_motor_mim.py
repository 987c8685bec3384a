"""MOTOR's ``objectives``: the default is MOTOR's own set, and ``mim`` adds masked image modelling."""
from __future__ import annotations

import json

import pytest
import torch
from model_cases import BATCH, make_batch, tiny_config

from kg.errors import InputError
from model import build_model
from model.config import MotorConfig
from model.pretraining_heads import MIMDecoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WITH_MIM = "itc,itm,lm,mlc,mim"


def _build(tokenizer, seed: int = 0, **changes):
    torch.manual_seed(seed)
    return build_model(tiny_config("full", **changes), tokenizer)


def test_default_objectives_are_motors_own_set():
    assert MotorConfig(knowledge="full").active_objectives == ["itc", "itm", "lm", "mlc"]
    assert MotorConfig(knowledge="gk+sk").active_objectives == ["itc", "itm", "lm"]
    assert not MotorConfig().uses_mim
    config = MotorConfig(knowledge="gk", objectives="mim+lm, itm,itc,mim")
    assert config.objectives == ["itc", "itm", "lm", "mim"] and config.uses_mim


@pytest.mark.parametrize("objectives, message", [
    ("itc,itm,lm,mlc,mlm", "its objectives are itc, itm, lm, mlc, mim"),
    ("itc,lm,mlc,mim", "cannot train without itm"),
    ("itc,itm,lm,mim", "mlc is trained exactly with knowledge: full"),
    (3, "expected a list of objective names"),
])
def test_bad_objectives_are_refused_by_name(objectives, message):
    with pytest.raises(InputError, match=message) as err:
        MotorConfig.from_dict({"knowledge": "full", "objectives": objectives}, source="model.yaml")
    assert err.value.field == "objectives" and "model.yaml" in str(err.value)


def test_mim_needs_one_view_per_study():
    with pytest.raises(InputError, match="views: first"):
        MotorConfig(knowledge="none", views="all", objectives="itc,itm,lm,mim")


def test_disabled_mim_has_no_parameters_and_leaves_the_other_losses_unchanged(tokenizer):
    batch = make_batch(tokenizer, tiny_config("full"))
    plain = _build(tokenizer)
    with_mim = _build(tokenizer, objectives=WITH_MIM)
    assert not hasattr(plain, "mim_decoder")
    assert not any("mim" in name for name in plain.state_dict())
    assert isinstance(with_mim.mim_decoder, MIMDecoder)
    assert "mim_decoder" not in with_mim.momentum  # no EMA copy: nothing downstream reads it
    counts = with_mim.parameter_counts()
    assert counts["trainable"] == plain.parameter_counts()["trainable"] + counts["mim_decoder"]

    torch.manual_seed(1)
    off = plain(batch)
    torch.manual_seed(1)
    on = with_mim(batch)
    assert set(off.losses) == {"itc", "itm", "lm", "mlc"}
    assert set(on.losses) == {"itc", "itm", "lm", "mlc", "mim"}
    # ITC / ITM / LM / MLC run on the unmasked pass, so switching MIM on changes none of them.
    for name, value in off.losses.items():
        torch.testing.assert_close(on.losses[name], value, rtol=0, atol=0)
    torch.testing.assert_close(on.loss, off.loss + with_mim.config.mim_weight * on.losses["mim"])


def test_mim_reaches_the_vit_through_the_visible_patches_only(tokenizer):
    model = _build(tokenizer, objectives=WITH_MIM, itc_weight=0.0, itm_weight=0.0, lm_weight=0.0, mlc_weight=0.0)
    batch = make_batch(tokenizer, model.config)
    model(batch).loss.backward()
    assert model.mim_decoder.predict.weight.grad.abs().sum() > 0
    assert model.image_encoder.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert float(model.itm_head.weight.grad.abs().sum()) == 0  # the other objectives weigh 0 here


def test_mim_loss_falls_on_a_learnable_toy(tokenizer):
    # Every patch of every image is the same pattern (period = patch side), so a masked patch's
    # normalised pixels are learnable; random pixels (the default batch) are not.
    model = _build(tokenizer, objectives=WITH_MIM)
    batch = make_batch(tokenizer, model.config)
    side = torch.arange(model.config.image_size) * (2 * torch.pi / model.config.patch_size)
    pattern = torch.sin(side[:, None]) + torch.cos(2 * side[None, :])
    batch["image"] = pattern.expand(BATCH, 3, -1, -1).clone()
    parameters = list(model.mim_decoder.parameters()) + list(model.image_encoder.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.0)
    history = []
    for _ in range(8):
        output = model(batch)
        optimiser.zero_grad()
        output.losses["mim"].backward()
        optimiser.step()
        history.append(float(output.losses["mim"].detach()))
    assert history[-1] < 0.3 * history[0], history


def test_mim_model_saves_and_loads(tokenizer, tmp_path):
    model = _build(tokenizer, objectives=WITH_MIM)
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["motor_config"]["objectives"] == WITH_MIM.split(",")
    loaded = type(model).from_pretrained(tmp_path / "m")
    assert loaded.config.uses_mim
    torch.testing.assert_close(loaded.mim_decoder.predict.weight, model.mim_decoder.predict.weight)


@pytest.mark.timeout(120)
def test_pretrain_cli_trains_motor_with_mim(tmp_path):
    from pipelines.cli import main

    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), "--no-progress", "--knowledge", "full",
                 "--set", "data.synthetic_n=24", "--set", "model.image_size=32", "--set", "train.batch_size=4",
                 "--set", "eval.batch_size=8", "--set", "train.log_every=1", "--set", "train.max_steps=2",
                 "--set", f"model.objectives={WITH_MIM}"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [row for row in rows if "mim" in row]
    assert len(logged) == 2 and all(row["mim"] > 0 for row in logged)
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["motor_config"]["objectives"] == WITH_MIM.split(",")
