"""Run configs: YAML loading, ``--set`` overrides, type conversion and errors that say where."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kg.errors import InputError
from pipelines.config import (
    FinetuneConfig,
    PretrainConfig,
    builtin_config,
    dump_config,
    load_config,
    parse_overrides,
)


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_shipped_configs_load_and_base_has_the_papers_settings():
    tiny = load_config(PretrainConfig, builtin_config("pretrain_tiny"))
    assert tiny.model["preset"] == "tiny"
    base = load_config(PretrainConfig, builtin_config("pretrain_base"))
    assert base.model == {"preset": "base", "knowledge": "full"}
    assert (base.train.batch_size, base.train.epochs) == (32, 30)
    assert (base.optim.lr, base.optim.weight_decay, base.optim.schedule) == (1e-4, 0.05, "cosine")
    assert base.optim.warmup_steps > 0
    for task in ("retrieval", "generation", "diagnosis", "vqa"):
        assert load_config(FinetuneConfig, builtin_config(f"finetune_{task}")).task == task


def test_file_values_override_defaults_and_keep_the_rest(tmp_path):
    config = load_config(PretrainConfig, write(tmp_path, {"train": {"batch_size": 4}, "optim": {"lr": "1e-3"}}))
    assert config.train.batch_size == 4
    # PyYAML reads 1e-3 without a dot as a string; the float field converts it.
    assert config.optim.lr == pytest.approx(1e-3)
    assert config.train.epochs == PretrainConfig().train.epochs


def test_overrides_apply_in_order_with_yaml_values(tmp_path):
    config = load_config(
        PretrainConfig,
        write(tmp_path, {"train": {"batch_size": 4}}),
        ["train.batch_size=8", "train.max_steps=null", "optim.betas=[0.8, 0.9]", "model.knowledge=gk",
         "train.batch_size=6", "train.validate=false", "optim.grad_clip=1"],
    )
    assert config.train.batch_size == 6
    assert config.train.max_steps is None
    assert config.optim.betas == (0.8, 0.9)
    assert config.model == {"preset": "tiny", "knowledge": "gk"}
    assert config.train.validate is False
    assert config.optim.grad_clip == 1.0 and isinstance(config.optim.grad_clip, float)


def test_dump_then_load_is_identity(tmp_path):
    config = load_config(PretrainConfig, builtin_config("pretrain_tiny"), ["train.seed=7", "model.image_size=32"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config), encoding="utf-8")
    assert load_config(PretrainConfig, path) == config


@pytest.mark.parametrize(
    ("data", "overrides", "field"),
    [
        ({"train": {"batch_sise": 4}}, [], "train.batch_sise"),
        ({"trian": {}}, [], "trian"),
        ({}, ["train.batch_sise=4"], "train.batch_sise"),
        ({"train": {"batch_size": "four"}}, [], "train.batch_size"),
        ({"train": {"batch_size": 2.5}}, [], "train.batch_size"),
        ({"train": {"validate": "yes"}}, [], "train.validate"),
        ({"train": {"batch_size": 0}}, [], "train.batch_size"),
        ({"train": {"precision": "fp8"}}, [], "train.precision"),
        ({"optim": {"betas": [0.9]}}, [], "optim.betas"),
        ({"train": 3}, [], "train"),
        ({"eval": {"meteor": "bleu"}}, [], "eval.meteor"),
        ({"eval": {"num_beams": 0}}, [], "eval.num_beams"),
        ({}, ["eval.itm_k=-1"], "eval.itm_k"),
    ],
)
def test_bad_keys_and_values_name_the_file_and_key(tmp_path, data, overrides, field):
    path = write(tmp_path, data)
    with pytest.raises(InputError) as info:
        load_config(PretrainConfig, path, overrides)
    assert info.value.field == field
    assert info.value.file == (str(path) if not overrides else "--set")
    assert field in str(info.value)


def test_malformed_override_and_file_errors(tmp_path):
    with pytest.raises(InputError, match="key.sub=value"):
        parse_overrides(["train.batch_size"])
    with pytest.raises(InputError, match="not found"):
        load_config(PretrainConfig, tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n", encoding="utf-8")
    with pytest.raises(InputError, match="not valid YAML") as info:
        load_config(PretrainConfig, bad)
    assert info.value.file == str(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(InputError, match="mapping"):
        load_config(PretrainConfig, listing)
    with pytest.raises(InputError, match="pretrain_tiny"):
        builtin_config("pretrain_huge")


def test_finetune_task_is_checked():
    with pytest.raises(InputError, match="retrieval, generation, diagnosis, vqa"):
        load_config(FinetuneConfig, None, ["task=segmentation"])
