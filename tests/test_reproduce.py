"""``motor reproduce``: every table's recipe resolves at the paper's settings, runs at smoke size, and
names what is missing."""
from __future__ import annotations

import json

import pytest

from kg.errors import InputError
from kg.manifest import read_manifest
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
    assert load_recipe(3).datasets["chestxray14"].label_set == "chestxray14"


def test_recipes_set_the_reference_codes_choices():
    """The options of the reference code (README "The reference code's choices as options") reach
    every resolved config, and --dry-run prints them."""
    pretrain = plan(load_recipe("table1"), "out", data=DATA)[0].config.model
    assert (pretrain["sk_fusion"], pretrain["sk_order"], pretrain["views"]) == ("weighted_sum", "report", "first")
    runs = {s.name: s.config for table in TABLES for s in plan(load_recipe(table), "out", data=DATA)[1:]}
    assert set(runs) == {"retrieval_mimic", "generation_iu_xray", "generation_mimic", "diagnosis_chestxray14",
                         "diagnosis_mimic", "vqa_rad", "vqa_slake"}
    # Every task script of the reference finetunes plain BLIP (no GK / SK modules).
    assert all(config.knowledge_at_finetune is False for config in runs.values())
    assert {name for name, config in runs.items() if config.vqa_head == "question_type"} == {"vqa_rad", "vqa_slake"}
    # Both IU-Xray views through a projection, as BLIP_Decoder's iu_proj; MIMIC-CXR keeps one image.
    assert {name: (c.model.get("views"), c.model.get("num_views")) for name, c in runs.items()
            if c.model.get("views")} == {"generation_iu_xray": ("all", 2)}


def test_dry_run_prints_the_reference_options(tmp_path, capsys):
    assert main(["reproduce", "table2", "--dry-run", "--out", str(tmp_path / "o"), *data_args("table2")]) == 0
    text = capsys.readouterr().out
    assert "--set model.sk_fusion=weighted_sum" in text and "  sk_fusion: weighted_sum" in text
    assert text.count("knowledge_at_finetune: false") == 2 and "--set model.views=all --set model.num_views=2" in text
    assert main(["reproduce", "table5", "--dry-run", "--out", str(tmp_path / "o"), *data_args("table5")]) == 0
    assert capsys.readouterr().out.count("vqa_head: question_type") == 2


def test_smoke_gives_a_label_set_dataset_its_own_classes(tmp_path):
    from pipelines.reproduce import _smoke_label_set, _synthetic
    from pipelines.tasks.label_sets import dataset_label_set

    recipe = load_recipe("table3")
    [step] = plan(recipe, tmp_path, smoke=True, from_run="runs/p")
    _synthetic(tmp_path, [step])
    _smoke_label_set(tmp_path, recipe.datasets["chestxray14"])
    labels = dataset_label_set(step.config.data.manifest)
    assert labels is not None and labels.name == "chestxray14" and len(labels.names) == 15
    assert set(labels.labels) == {r.study_id for r in read_manifest(step.config.data.manifest)}


def test_a_label_set_dataset_without_its_labels_file_is_refused(tmp_path):
    from pipelines.reproduce import reproduce

    (tmp_path / "cxr14").mkdir()
    (tmp_path / "cxr14" / "manifest.jsonl").write_text("")
    with pytest.raises(InputError, match="labels_chestxray14.csv.*motor build-dataset chestxray14"):
        reproduce("table3", tmp_path / "out", data={"chestxray14": str(tmp_path / "cxr14")}, from_run="runs/p")
    assert not (tmp_path / "out").exists()


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
    out = tmp_path / table
    _smoke(table, out)
    if table == "table2":
        saved = json.loads((out / "generation_iu_xray" / "model" / "config.json").read_text())["motor_config"]
        assert (saved["views"], saved["num_views"], saved["knowledge"]) == ("all", 2, "none")
    if table == "table3":  # smoke diagnosis runs on ChestX-ray14's label set, not CheXpert's 14
        classes = json.loads((out / "diagnosis_chestxray14" / "run.json").read_text())["data"]["label_set"]["classes"]
        assert len(classes) == 15 and "Infiltration" in classes and "No Finding" in classes


def test_finetuning_with_views_all_adds_a_fresh_view_projection_to_a_single_view_pretraining(tmp_path):
    """Table 2's IU-Xray run: the reference pretrains on single MIMIC-CXR images and creates iu_proj
    when finetuning on IU-Xray's pairs; every pretrained weight is kept."""
    import torch
    from model_cases import tiny_config, train_tiny_tokenizer

    from model import build_model
    from pipelines.tasks.sources import load_motor, resolve_source

    model = build_model(tiny_config("gk"), train_tiny_tokenizer(tmp_path / "tok"))
    model.save_pretrained(tmp_path / "model")
    loaded = load_motor(resolve_source(tmp_path / "model"), {"views": "all", "num_views": 2})
    assert (loaded.config.views, loaded.image_encoder.view_proj.in_features) == ("all", 2 * model.config.vision_width)
    pretrained = model.state_dict()
    for key, value in loaded.state_dict().items():
        if ".view_proj." not in f".{key}":
            torch.testing.assert_close(value, pretrained[key], msg=key)
    assert loaded.image_encoder(torch.randn(1, 2, 3, 64, 64)).shape[-1] == model.config.vision_width
    with pytest.raises(InputError, match="architecture"):
        load_motor(resolve_source(tmp_path / "model"), {"vision_width": 32})
