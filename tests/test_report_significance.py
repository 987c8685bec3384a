"""``motor report --ci / --baseline``: intervals and paired tests from the runs' per-study outputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from kg.errors import InputError
from pipelines.cli import main
from pipelines.per_study import write_per_study
from pipelines.run_report import group_runs, load_run
from pipelines.report_significance import metric_for_key, significance

KEY = "zero_shot_retrieval.itc.i2t_R@10"
N = 40


def make_run(root: Path, knowledge: str, seed: int, ranks: np.ndarray | None) -> Path:
    run = root / f"{knowledge}_s{seed}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"knowledge": knowledge}, "train": {"seed": seed}}))
    recall = float(np.mean(ranks <= 10)) if ranks is not None else 0.5
    (run / "metrics.json").write_text(json.dumps({"zero_shot_retrieval": {"itc": {"i2t_R@10": recall}}}))
    (run / "run.json").write_text(json.dumps({"kind": "pretrain", "seeds": {"train": seed}}))
    if ranks is not None:
        write_per_study(run, {"zero_shot_retrieval": [
            {"study_id": f"s{i}", "itc_i2t_rank": int(r), "itc_t2i_rank": int(r)} for i, r in enumerate(ranks)]})
    return run


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for seed in range(3):
        paths.append(make_run(tmp_path, "none", seed, rng.integers(1, 40, size=N)))
        paths.append(make_run(tmp_path, "full", seed, rng.integers(1, 12, size=N)))
    return paths


def test_keys_map_to_per_study_metrics() -> None:
    rows = {"itc_i2t_rank": np.array([1, 3, 12]), "itc_t2i_rank": np.array([2, 2, 2]),
            "correct": np.array([1, 0, 1]), "answer_type": np.array(["closed", "open", "CLOSED"])}
    stem, metric = metric_for_key("test.itc.i2t_R@5")
    assert stem == "test" and metric(rows) == pytest.approx(2 / 3)
    assert metric_for_key("test.itc.t2i_MedR")[1](rows) == 2
    assert metric_for_key("zero_shot.itc.mean_R")[1](rows) == pytest.approx((1 / 3 + 2 / 3 + 2 / 3 + 0 + 1 + 1) / 6)
    assert metric_for_key("test.model.closed")[1](rows) == 1.0
    assert metric_for_key("test.model.overall")[1](rows) == pytest.approx(2 / 3)
    assert metric_for_key("training.seconds") is None
    assert metric_for_key("test.greedy.CIDEr") is None


def test_intervals_pool_seeds_and_the_clear_effect_is_significant(runs: list[Path]) -> None:
    records = [load_run(p) for p in runs]
    cells = significance(group_runs(records), [KEY, "training.steps"], baseline="none", n_resamples=300)
    by_group = {cell.group: cell for cell in cells}
    assert set(by_group) == {"model.knowledge=none", "model.knowledge=full"}
    full = by_group["model.knowledge=full"]
    assert full.interval.value == pytest.approx(np.mean([r.metrics[KEY] for r in records if "full" in r.path.name]))
    assert full.interval.n_seeds == 3 and full.interval.n_studies == N
    assert full.versus_baseline.p_value < 0.05 and full.versus_baseline.low > 0
    assert by_group["model.knowledge=none"].versus_baseline is None


def test_cli_appends_the_significance_table(runs: list[Path], tmp_path: Path, capsys) -> None:
    old = make_run(tmp_path / "old", "gk", 0, None)  # a run from before per-study outputs
    assert main(["report", *map(str, runs), str(old), "--metrics", KEY, "--baseline", "none",
                 "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "95% CI" in out and "Δ vs none" in out and "paired permutation" in out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if "·" in line and line.startswith("|")}
    full = rows[f"model.knowledge=full · {KEY}"]
    assert float(full[-1]) < 0.05
    assert rows[f"model.knowledge=gk · {KEY}"] == ["–"] * 5

    assert main(["report", *map(str, runs), "--metrics", KEY, "--ci", "--json", "--resamples", "50"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["groups"]) == 2 and data["significance"][0]["interval"]["n_studies"] == N


def test_an_unknown_baseline_lists_the_rows(runs: list[Path], capsys) -> None:
    assert main(["report", *map(str, runs), "--metrics", KEY, "--baseline", "gk"]) == 1
    assert "model.knowledge=none" in capsys.readouterr().err
    with pytest.raises(InputError, match="several"):
        significance(group_runs([load_run(p) for p in runs]), [KEY], baseline="model.knowledge")


def test_ablation_table_gives_intervals_and_tests_against_none(tmp_path: Path) -> None:
    from pipelines.report_significance import ablation_significance, ablation_significance_table

    rng = np.random.default_rng(1)
    dirs = {"none": make_run(tmp_path, "none", 0, rng.integers(1, 60, size=N)),
            "full": make_run(tmp_path, "full", 0, rng.integers(1, 8, size=N))}
    found = ablation_significance(dirs, n_resamples=200)
    assert found.intervals["full"]["i2t_R@10"].low > found.intervals["none"]["i2t_R@10"].high
    text = ablation_significance_table(found)
    assert f"over the {N} test studies" in text and "one study is 2.5 points" in text
    full_test = [line for line in text.splitlines() if line.startswith("| full") and "p=" in line][0]
    report_r10 = full_test.split("|")[4]  # "+62.5 (p=0.01)": a clear effect
    assert float(report_r10.split("p=")[1].rstrip(") ")) < 0.05
    assert ablation_significance({**dirs, "gk": tmp_path / "absent"}) is None
    assert ablation_significance_table(None) == ""


def test_ablation_significance_pools_seed_runs(tmp_path: Path) -> None:
    from pipelines.report_significance import ablation_significance, ablation_significance_table

    rng = np.random.default_rng(2)
    dirs = {"none": [make_run(tmp_path, "none", s, rng.integers(1, 60, size=N)) for s in (0, 1)],
            "full": [make_run(tmp_path, "full", s, rng.integers(1, 8, size=N)) for s in (0, 1)]}
    found = ablation_significance(dirs, n_resamples=200)
    assert found.n_seeds == 2
    interval = found.intervals["full"]["i2t_R@10"]
    assert interval.n_seeds == 2 and found.tests["full"]["i2t_R@10"].n_seeds == 2
    assert found.tests["full"]["i2t_R@10"].p_value < 0.05
    assert "2 training seeds pooled" in ablation_significance_table(found)
    # A variant run with fewer seeds than the baseline gets an interval but no paired test.
    found = ablation_significance({**dirs, "gk": dirs["full"][:1]}, n_resamples=50)
    assert found.intervals["gk"] and not found.tests["gk"]
