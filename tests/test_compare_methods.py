"""``motor ablate --methods``: every registered method in its default form, pretrained, finetuned and
evaluated alike, in one table (markdown, CSV, figure) with chance and baselines beside."""
from __future__ import annotations

import csv
import json

import pytest

from kg.errors import InputError
from pipelines.ablate import _variant_config, parse_variants
from pipelines.cli import main
from pipelines.compare_methods import (
    DEFAULT_TASKS,
    method_config,
    methods_csv,
    methods_table,
    parse_methods,
    reference_rows,
    table_row,
)
from pipelines.config import PretrainConfig, resolve_model_config


def _retrieval(recall: float, mrr: float, ranked_by: str = "itc") -> dict:
    scores = {f"{d}_R@{k}": recall for d in ("i2t", "t2i") for k in (1, 5, 10)}
    scores.update(i2t_MRR=mrr, t2i_MRR=mrr, n_images=10)
    chance = {**{key: 0.1 * int(key.split("@")[1]) for key in scores if "_R@" in key}, "i2t_MRR": 0.29, "t2i_MRR": 0.29}
    return {ranked_by: {**scores, "chance": chance}, "ranked_by": ranked_by, "n": 10}


def _metrics(recall: float, ranked_by: str = "itc") -> dict:
    return {
        "zero_shot": _retrieval(recall, recall / 2, ranked_by),
        "retrieval": _retrieval(recall + 0.1, recall, ranked_by),
        "diagnosis": {"mean_auroc": 0.6, "macro_f1": 0.2},
        "generation": {"greedy": {"BLEU-4": 0.05, "CIDEr": 0.3}, "most_frequent_report": {"BLEU-4": 0.02, "CIDEr": 0.1}},
        "vqa": {"model": {"overall": 0.7}, "majority_answer": {"overall": 0.5}},
    }


def test_default_tasks_match_the_command_line_default():
    from pipelines.commands.ablate import DEFAULT_TASKS as CLI_DEFAULT

    assert DEFAULT_TASKS == CLI_DEFAULT


def test_methods_come_from_the_registry_once_each():
    assert parse_methods(["motor", "m3ae,arl", "medvill"]) == ["motor", "m3ae", "arl", "medvill"]
    for bad in (["motor", "blip"], ["arl", "arl"], []):
        with pytest.raises(InputError, match="--methods"):
            parse_methods(bad)


def test_each_method_keeps_only_the_shared_settings_it_has(tmp_path):
    base = PretrainConfig(model={"preset": "tiny", "knowledge": "gk", "dropout": 0.0, "momentum": 0.5})
    configs = {m: resolve_model_config(method_config(base, m, tmp_path / "m.jsonl").model)
               for m in ("motor", "m3ae", "arl", "medvill")}
    # Each method's default: its own preset, not another method's switch (MOTOR's tiny preset is full).
    assert configs["motor"].knowledge == "full" and configs["motor"].momentum == 0.5
    assert configs["arl"].parts.knowledge.rk and configs["m3ae"].parts.mim.enabled
    assert configs["medvill"].attention_mask == "bar" and configs["medvill"].text_width == 64
    assert all(c.dropout == 0.0 for c in configs.values())
    assert method_config(base, "medvill", tmp_path / "m.jsonl").data.manifest == str(tmp_path / "m.jsonl")


def test_medvill_mask_variants_set_only_the_mask(tmp_path):
    variants = parse_variants("medvill:bi medvill:s2s medvill:bar medvill:bi+s2s medvill:non_crossing")
    base = PretrainConfig(model={"preset": "tiny", "knowledge": "full", "dropout": 0.0})
    for variant in variants:
        config = resolve_model_config(_variant_config(base, variant, tmp_path / "m.jsonl").model)
        assert config.attention_mask == variant.split(":")[1]
        assert config.dropout == 0.0 and config.text_width == 64 and config.backbone == "test_resnet"


def test_table_csv_and_reference_rows():
    results = {"motor": _metrics(0.5), "medvill": _metrics(0.3, "itm")}
    table = {row: table_row(metrics) for row, metrics in results.items()}
    assert table["medvill"]["zs_i2t_MRR"] == 0.15 and table["medvill"]["ft_i2t_R@10"] == pytest.approx(0.4)
    columns = ["zs_i2t_R@10", "zs_i2t_MRR", "diagnosis_auroc", "generation_cider", "vqa_overall"]
    reference = reference_rows(results, columns)
    assert reference["chance"]["zs_i2t_R@10"] == 1.0 and reference["chance"]["diagnosis_auroc"] == 0.5
    assert reference["baseline"] == {"generation_bleu4": 0.02, "generation_cider": 0.1, "vqa_overall": 0.5}
    markdown = methods_table(table, reference, columns, failures={"medvill": {"vqa": "ValueError: no"}})
    lines = markdown.splitlines()
    assert lines[0] == ("| Method | Zero-shot report R@10 | Zero-shot report MRR | Diagnosis mean AUROC | "
                        "Generation CIDEr | VQA overall accuracy |")
    assert lines[2] == "| motor | 0.500 | 0.250 | 0.600 | 0.300 | 0.700 |"
    assert lines[3].startswith("| medvill (ITM) | 0.300 | 0.150 |")
    assert lines[4] == "| chance | 1.000 | 0.290 | 0.500 | – | – |"
    assert lines[5] == "| baseline | – | – | – | 0.100 | 0.500 |"
    assert "- medvill, vqa failed: ValueError: no" in markdown
    rows = list(csv.DictReader(methods_csv(table, reference, columns).splitlines()))
    assert [r["row"] for r in rows] == ["motor", "medvill", "chance", "baseline"]
    assert rows[1]["ranked_by"] == "itm" and float(rows[1]["zs_i2t_MRR"]) == 0.15 and rows[3]["zs_i2t_R@10"] == ""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_four_method_table_on_the_embedded_data_then_reused_and_pooled(tmp_path, capsys):
    out = tmp_path / "methods"
    tiny = ["--set", "data.synthetic_n=24", "--set", "train.max_steps=2", "--set", "train.batch_size=4",
            "--set", "eval.batch_size=8", "--set", "train.validate=false",
            "--finetune-set", "train.max_steps=1", "--finetune-set", "train.batch_size=4",
            "--finetune-set", "eval.batch_size=8", "--finetune-set", "train.validate=false"]
    args = ["ablate", "--methods", "motor", "m3ae", "arl", "medvill", "--variants", "medvill:s2s",
            "--tasks", "retrieval", "diagnosis", "--out", str(out), "--no-progress", *tiny]
    assert main(args) == 0
    lines = (out / "methods.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in lines[2:9]] == [
        "| motor", "| m3ae (ITM)", "| arl (ITM)", "| medvill (ITM)", "| medvill:s2s (ITM)", "| chance", "| baseline"]
    assert (out / "methods.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {r["row"]: r for r in csv.DictReader((out / "methods.csv").read_text().splitlines())}
    assert set(rows) == {"motor", "m3ae", "arl", "medvill", "medvill:s2s", "chance", "baseline"}
    metrics = json.loads((out / "metrics.json").read_text())
    for row in ("motor", "m3ae", "arl", "medvill", "medvill:s2s"):
        assert 0.0 <= metrics[row]["diagnosis_auroc"] <= 1.0 or metrics[row]["diagnosis_auroc"] is None
        assert 0.0 < metrics[row]["zs_i2t_MRR"] <= 1.0
    # Every row trained on the very same manifest, with the same seed and budget.
    manifests = {json.loads((out / d / "run.json").read_text())["data"]["manifest"]["sha256"]
                 for d in ("motor", "m3ae", "arl", "medvill", "medvill_s2s")}
    assert len(manifests) == 1
    assert json.loads((out / "medvill_s2s" / "metrics.json").read_text())["training"]["steps"] == 2
    assert (out / "finetune" / "medvill_s2s-diagnosis" / "head.safetensors").is_file()

    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("already done") == 5 * 3  # each pretraining and both tasks of each row, reused

    # `motor report` reads the comparison's bundle like any run's.
    assert main(["report", str(out), "--metrics", "medvill.zs_i2t_MRR", "motor.zs_i2t_MRR"]) == 0
    assert "medvill.zs_i2t_MRR" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_medvill_mask_study_pretrains_every_scheme(tmp_path):
    out = tmp_path / "masks"
    variants = ["medvill:bi", "medvill:s2s", "medvill:bar", "medvill:bi+s2s", "medvill:non_crossing"]
    assert main(["ablate", "--variants", *variants, "--out", str(out), "--no-progress",
                 "--set", "data.synthetic_n=24", "--set", "train.max_steps=2", "--set", "train.batch_size=4",
                 "--set", "eval.batch_size=8", "--set", "train.validate=false"]) == 0
    table = (out / "ablation.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in table[2:8]] == [f"| {v} (ITM)" for v in variants] + ["| chance"]
    for variant in variants:
        run = out / variant.replace("+", "_").replace(":", "_")
        config = json.loads((run / "model" / "config.json").read_text())
        assert config["method"] == "medvill" and config["motor_config"]["attention_mask"] == variant.split(":")[1]
        assert json.loads((run / "metrics.json").read_text())["training"]["steps"] == 2
