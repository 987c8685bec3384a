"""``motor ablate``: the same budget per knowledge variant, the Table 1 layout, the chart, reuse."""
from __future__ import annotations

import json

import pytest

from kg.errors import InputError
from pipelines.ablate import ablation_table, parse_variants, pool_seeds
from pipelines.cli import main

TINY = ["--set", "data.synthetic_n=24", "--set", "model.image_size=32", "--set", "train.max_steps=2",
        "--set", "train.batch_size=4", "--set", "eval.batch_size=8", "--set", "train.validate=false"]


def fake_retrieval(base: float) -> dict:
    recalls = {f"{d}_R@{k}": base * k / 10 for d in ("i2t", "t2i") for k in (1, 5, 10)}
    chance = {key: 0.01 * int(key.split("@")[1]) for key in recalls}
    return {"itc": {**recalls, "chance": chance}, "n": 100}


def test_table_has_the_paper_layout_with_check_marks_and_percentages():
    table = ablation_table({"none": fake_retrieval(0.2), "full": fake_retrieval(0.5)})
    lines = table.splitlines()
    assert lines[0] == ("| Variant | GK | SK | MLC | Report R@1 | Report R@5 | Report R@10 "
                        "| Image R@1 | Image R@5 | Image R@10 |")
    assert lines[2] == "| none |  |  |  | 2.0 | 10.0 | 20.0 | 2.0 | 10.0 | 20.0 |"
    assert lines[3] == "| full | ✓ | ✓ | ✓ | 5.0 | 25.0 | 50.0 | 5.0 | 25.0 | 50.0 |"
    assert lines[4] == "| chance |  |  |  | 1.0 | 5.0 | 10.0 | 1.0 | 5.0 | 10.0 |"
    assert "100 test studies" in table


@pytest.mark.parametrize("text", ["none,bogus", "gk,gk", "", " , "])
def test_bad_variant_lists_are_rejected(text):
    with pytest.raises(InputError, match="--variants"):
        parse_variants(text)


def test_variant_order_is_kept():
    assert parse_variants("full, none,gk+sk") == ["full", "none", "gk+sk"]


@pytest.mark.timeout(120)
def test_two_variant_ablation_writes_table_chart_and_runs_then_reuses_them(tmp_path, capsys):
    out = tmp_path / "ablation"
    assert main(["ablate", "--variants", "none,full", "--out", str(out), "--no-progress", *TINY]) == 0
    table = (out / "ablation.md").read_text()
    assert [line.split(" | ")[0] for line in table.splitlines()[2:5]] == ["| none", "| full", "| chance"]
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["none", "full"]
    for variant, run_dir in (("none", out / "none"), ("full", out / "full")):
        itc = metrics[variant]["itc"]
        assert all(0.0 <= itc[f"{d}_R@{k}"] <= 1.0 for d in ("i2t", "t2i") for k in (1, 5, 10))
        variant_metrics = json.loads((run_dir / "metrics.json").read_text())
        assert variant_metrics["training"]["steps"] == 2
        assert variant_metrics["zero_shot_retrieval"] == metrics[variant]
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["data"]["manifest"]["sha256"]
    # Both variants trained on the very same manifest.
    for run_dir in (out / "none", out / "full"):
        assert json.loads((run_dir / "run.json").read_text())["data"]["manifest"] == run_info["data"]["manifest"]
    assert (out / "full" / "knowledge" / "sk.duckdb").is_file()
    assert not (out / "none" / "knowledge").exists()

    capsys.readouterr()
    assert main(["ablate", "--variants", "none,full", "--out", str(out), "--no-progress", *TINY]) == 0
    assert capsys.readouterr().out.count("already done") == 2
    assert (out / "ablation.md").read_text() == table


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_seeds_run_every_variant_per_seed_and_pool_them(tmp_path, capsys):
    out = tmp_path / "ablation"
    assert main(["ablate", "--variants", "none,gk", "--seeds", "0", "1", "--out", str(out), "--no-progress",
                 *TINY, "--set", "data.synthetic_n=40"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for variant in ("none", "gk"):
        seeds = metrics[variant]["seeds"]
        assert list(seeds) == ["0", "1"]
        for seed in (0, 1):
            run = json.loads((out / variant / f"seed_{seed}" / "metrics.json").read_text())
            assert run["zero_shot_retrieval"] == seeds[str(seed)]
            config = (out / variant / f"seed_{seed}" / "config.yaml").read_text()
            assert f"seed: {seed}\n" in config
        itc = metrics[variant]["itc"]
        for key in ("i2t_R@10", "t2i_R@5"):
            values = [seeds[s]["itc"][key] for s in ("0", "1")]
            assert itc[key] == pytest.approx(sum(values) / 2)
            assert itc["std"][key] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    table = (out / "ablation.md").read_text()
    none_row = next(line for line in table.splitlines() if line.startswith("| none |"))
    assert none_row.count(" ± ") == 6
    assert "mean ± sample std over 2 training seeds (0, 1)" in table
    assert "2 training seeds pooled" in table
    gk_test = next(line for line in table.splitlines() if line.startswith("| gk") and "p=" in line)
    assert gk_test.count("p=") == 6
    assert json.loads((out / "run.json").read_text())["seeds"]["train"] == [0, 1]

    capsys.readouterr()
    assert main(["ablate", "--variants", "none,gk", "--seeds", "0", "1", "--out", str(out), "--no-progress",
                 *TINY, "--set", "data.synthetic_n=40"]) == 0
    assert capsys.readouterr().out.count("already done") == 4


def test_repeated_seeds_are_rejected(tmp_path):
    from pipelines.ablate import ablate
    from pipelines.config import PretrainConfig

    with pytest.raises(InputError, match="--seeds"):
        ablate(PretrainConfig(), ["none"], tmp_path, seeds=[1, 1])


def test_pooled_seeds_give_mean_and_sample_std_in_the_table():
    pooled = pool_seeds({0: fake_retrieval(0.2), 1: fake_retrieval(0.4), 2: fake_retrieval(0.6)})
    assert pooled["itc"]["i2t_R@10"] == pytest.approx(0.4)
    assert pooled["itc"]["std"]["i2t_R@10"] == pytest.approx(0.2)
    assert pooled["itc"]["chance"] == fake_retrieval(0.2)["itc"]["chance"]
    assert list(pooled["seeds"]) == ["0", "1", "2"]
    table = ablation_table({"none": pooled, "full": pool_seeds({0: fake_retrieval(0.5), 1: fake_retrieval(0.5)})})
    lines = table.splitlines()
    assert lines[2] == ("| none |  |  |  | 4.0 ± 2.0 | 20.0 ± 10.0 | 40.0 ± 20.0 "
                        "| 4.0 ± 2.0 | 20.0 ± 10.0 | 40.0 ± 20.0 |")
    assert lines[3].startswith("| full | ✓ | ✓ | ✓ | 5.0 ± 0.0 |")
    assert "mean ± sample std over 3 training seeds (0, 1, 2)" in table
