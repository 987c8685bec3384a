"""``motor reproduce``: every table's recipe resolves at the paper's settings, runs at smoke size, and
names what is missing."""
from __future__ import annotations

import json

import pytest

from kg.errors import InputError
from pipelines.cli import main
from pipelines.reproduce import TABLES, load_recipe, plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = {"mimic-cxr": "/data/mimic-cxr", "iu-xray": "/data/iu-xray", "chestxray14": "/data/cxr14",
        "vqa-rad": "/data/vqa-rad/vqa.jsonl", "slake": "/data/slake/vqa.jsonl"}


def data_args(table: str) -> list[str]:
    keys = {run.dataset for run in load_recipe(table).runs} | {"mimic-cxr"}
    return [part for key in sorted(keys) for part in ("--data", f"{key}={DATA[key]}")]


@pytest.mark.parametrize("table", TABLES)
def test_dry_run_prints_every_command_and_config_and_runs_nothing(table, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reproduce", table, "--dry-run", "--out", str(out), *data_args(table)]) == 0
    text = capsys.readouterr().out
    recipe = load_recipe(table)
    assert text.count("## step ") == 1 + len(recipe.runs)
    assert f"motor pretrain --config pipelines/configs/pretrain_base.yaml --out {out / 'pretrain'}" in text
    for run in recipe.runs:
        assert f"motor finetune --task {run.task} --from {out / 'pretrain'} --out {out / run.name}" in text
    assert "manifest: /data/mimic-cxr" in text  # the pretraining reads MIMIC-CXR
    assert not out.exists()


def test_recipes_carry_the_paper_settings_into_the_resolved_configs():
    steps = {s.name: s for s in plan(load_recipe("table2"), "out", data=DATA)}
    pretrain = steps["pretrain"].config
    assert (pretrain.train.epochs, pretrain.optim.lr, pretrain.optim.weight_decay) == (30, 1e-4, 0.02)
    assert pretrain.model["image_size"] == 224
    iu = steps["generation_iu_xray"].config
    assert (iu.train.epochs, iu.train.batch_size, iu.eval.max_length, iu.eval.num_beams) == (50, 16, 90, 3)
    assert iu.data.manifest == "/data/iu-xray" and iu.init_from == "out/pretrain"
    vqa = {s.name: s for s in plan(load_recipe("table5"), "out", data=DATA, from_run="runs/p")}
    assert "pretrain" not in vqa
    assert vqa["vqa_slake"].config.data.vqa_manifest == "/data/slake/vqa.jsonl"
    assert vqa["vqa_rad"].config.init_from == "runs/p" and vqa["vqa_rad"].config.optim.grad_clip == 0.25
    cxr14 = plan(load_recipe(3), "out", data=DATA)[1].config
    assert cxr14.model["labels_file"] == "labels_chestxray14.yaml"


def test_a_missing_dataset_is_named_with_the_command_that_builds_it(tmp_path):
    with pytest.raises(InputError, match=r"no data for 'slake'.*--data slake=PATH.*motor build-dataset slake"):
        plan(load_recipe("table5"), tmp_path, data={"mimic-cxr": "m", "vqa-rad": "v"})
    with pytest.raises(InputError, match="table9"):
        load_recipe("table9")


def test_cli_rejects_data_without_a_key(tmp_path, capsys):
    assert main(["reproduce", "table4", "--dry-run", "--out", str(tmp_path), "--data", "data/mimic"]) != 0
    assert "DATASET=PATH" in capsys.readouterr().err


def test_a_malformed_recipe_names_file_record_and_field(tmp_path, monkeypatch):
    import pipelines.reproduce as reproduce

    for name in ("pretrain_mimic", "smoke"):
        (tmp_path / f"{name}.yaml").write_text((reproduce.RECIPE_DIR / f"{name}.yaml").read_text())
    (tmp_path / "table1.yaml").write_text(
        "title: t\ndatasets: {mimic-cxr: build it}\nruns:\n  - {name: r, task: retrieval, dataset: iu-xray}\n")
    monkeypatch.setattr(reproduce, "RECIPE_DIR", tmp_path)
    with pytest.raises(InputError) as err:
        load_recipe("table1")
    assert "table1.yaml" in str(err.value) and "runs[0]" in str(err.value) and "dataset" in str(err.value)


def _smoke(table: str, out) -> dict:
    assert main(["reproduce", table, "--smoke", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "table.json").read_text())
    assert summary["smoke"] is True and summary["table"] == table
    for run in load_recipe(table).runs:
        assert json.loads((out / run.name / "metrics.json").read_text())["test"]
        # Smoke size turns METEOR off (eval.meteor: off, no Java needed); every other metric is there.
        assert all(value is not None for label, value in summary["runs"][run.name].items()
                   if label != "METEOR"), run.name
    assert (out / "pretrain" / "model").is_dir()
    assert (out / "table.md").read_text().startswith(f"# {table}: ")
    return summary


@pytest.mark.timeout(300)
def test_smoke_runs_table4_end_to_end(tmp_path):
    summary = _smoke("table4", tmp_path / "t4")
    assert 0.0 <= summary["runs"]["diagnosis_mimic"]["mean AUROC"] <= 1.0


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("table", [t for t in TABLES if t != "table4"])
def test_smoke_runs_every_other_table(table, tmp_path):
    _smoke(table, tmp_path / table)
