"""``motor report`` on hand-written run bundles: grouping by seed, mean ± std, malformed bundles."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml

from kg.errors import InputError
from pipelines.cli import main
from pipelines.run_report import default_metrics, group_runs, is_seed_key, load_run, report_table, summarise_groups


def make_run(root: Path, name: str, config: dict[str, Any], metrics: dict[str, Any], kind: str = "finetune") -> Path:
    """A run bundle as pipelines.run_bundle lays it out (only the files the report reads)."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "run.json").write_text(json.dumps({"kind": kind, "seeds": {"train": config["train"]["seed"]}}))
    return run


def config(knowledge: str, seed: int, lr: float = 1e-4, manifest: str | None = None) -> dict[str, Any]:
    return {"model": {"knowledge": knowledge}, "train": {"seed": seed, "lr": lr},
            "data": {"synthetic_seed": seed, "manifest": manifest}}


# Values chosen so mean ± std can be checked by hand: {0.5, 0.6, 0.7} → 0.600 ± 0.100,
# {0.3, 0.4} → 0.350 ± 0.071 (std = 0.1 / √2), loss = 1 − value.
VALUES = {("full", 0): 0.50, ("full", 1): 0.60, ("full", 2): 0.70, ("none", 0): 0.30, ("none", 1): 0.40}


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    return [
        make_run(tmp_path, f"{k}_s{s}", config(k, s),
                 {"retrieval": {"i2t": {"R@1": v}, "t2i": {"R@1": v / 2}}, "loss": 1.0 - v,
                  "notes": "text is skipped", "per_class": [1, 2], "failed": None})
        for (k, s), v in VALUES.items()
    ]


def parse_table(table: str) -> dict[str, dict[str, str]]:
    """Markdown table → {row name: {column: cell}}."""
    lines = [line.strip().strip("|").split("|") for line in table.strip().splitlines()]
    header = [h.strip() for h in lines[0]]
    return {cells[0].strip(): dict(zip(header[1:], (c.strip() for c in cells[1:]))) for cells in lines[2:]}


def table_of(paths: list[Path], **options: Any) -> dict[str, dict[str, str]]:
    return parse_table(report_table(summarise_groups([load_run(p) for p in paths], **options)))


def test_seed_keys_are_recognised() -> None:
    assert is_seed_key("train.seed") and is_seed_key("data.synthetic_seed") and is_seed_key("seed")
    assert not is_seed_key("train.seeds_used") and not is_seed_key("model.seeded")


def test_runs_differing_only_by_seed_are_pooled(runs: list[Path]) -> None:
    groups = group_runs([load_run(r) for r in runs])
    assert [g.name for g in groups] == ["model.knowledge=full", "model.knowledge=none"]
    assert [[r.path.name for r in g.runs] for g in groups] == [["full_s0", "full_s1", "full_s2"],
                                                              ["none_s0", "none_s1"]]


def test_cells_are_mean_and_sample_std(runs: list[Path]) -> None:
    rows = table_of(runs, metrics=["retrieval.i2t.R@1", "loss"])
    full = rows["model.knowledge=full"]
    expected = f"{statistics.mean([0.5, 0.6, 0.7]):.3f} ± {statistics.stdev([0.5, 0.6, 0.7]):.3f}"
    assert full["retrieval.i2t.R@1"] == expected == "0.600 ± 0.100"
    assert full["n"] == "3" and full["seeds"] == "0, 1, 2"
    assert rows["model.knowledge=none"]["loss"] == "0.650 ± 0.071"
    assert rows["model.knowledge=none"]["n"] == "2"


def test_default_metrics_are_the_numeric_leaves_every_run_has(runs: list[Path], tmp_path: Path) -> None:
    loaded = [load_run(r) for r in runs]
    assert default_metrics(loaded) == ["retrieval.i2t.R@1", "retrieval.t2i.R@1", "loss"]
    extra = make_run(tmp_path, "extra", config("full", 3), {"loss": 0.2, "bleu": 0.1})
    assert default_metrics([*loaded, load_run(extra)]) == ["loss"]
    lonely = make_run(tmp_path, "lonely", config("full", 4), {"auc": 0.9})
    with pytest.raises(InputError, match="share no numeric metric"):
        default_metrics([loaded[0], load_run(lonely)])


def test_a_run_without_a_requested_metric_is_counted(runs: list[Path], tmp_path: Path) -> None:
    extra = make_run(tmp_path, "full_s3", config("full", 3), {"loss": 0.2})
    rows = table_of([*runs[:3], extra], metrics=["retrieval.i2t.R@1", "loss"])
    assert rows["full_s0"]["n"] == "4"
    assert rows["full_s0"]["retrieval.i2t.R@1"] == "0.600 ± 0.100 (n=3)"
    assert rows["full_s0"]["loss"] == f"{statistics.mean([0.5, 0.4, 0.3, 0.2]):.3f} ± " \
                                      f"{statistics.stdev([0.5, 0.4, 0.3, 0.2]):.3f}"


def test_group_by_pools_other_differences(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", config("full", 0, lr=1e-4), {"auc": 0.8})
    b = make_run(tmp_path, "b", config("full", 1, lr=3e-4), {"auc": 0.9})
    c = make_run(tmp_path, "c", config("none", 0, lr=1e-4), {"auc": 0.7})
    loaded = [load_run(p) for p in (a, b, c)]
    assert [g.name for g in group_runs(loaded)] == ["model.knowledge=full, train.lr=0.0001",
                                                   "model.knowledge=full, train.lr=0.0003",
                                                   "model.knowledge=none, train.lr=0.0001"]
    rows = table_of([a, b, c], group_by=["config.model.knowledge"])
    assert rows["model.knowledge=full"]["auc"] == "0.850 ± 0.071"
    assert rows["model.knowledge=none"]["auc"] == "0.700" and rows["model.knowledge=none"]["n"] == "1"


def test_output_paths_inside_each_run_do_not_split_groups(tmp_path: Path) -> None:
    # motor ablate --out abl_sN writes abl_sN/data/manifest.jsonl and abl_sN/full/ (the variant run).
    runs = [make_run(tmp_path / f"abl_s{s}", "full", config("full", s, manifest=str(tmp_path / f"abl_s{s}/data/m.jsonl")),
                     {"auc": 0.5 + s / 10}) for s in (0, 1)]
    other = make_run(tmp_path / "elsewhere", "full", config("full", 0, manifest=str(tmp_path / "iu/m.jsonl")),
                     {"auc": 0.1})
    groups = group_runs([load_run(p) for p in (*runs, other)])
    assert [len(g.runs) for g in groups] == [2, 1]
    assert groups[0].name == "data.manifest=<run>/../data/m.jsonl"


def test_different_kinds_never_pool(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", config("full", 0), {"auc": 0.8}, kind="finetune")
    b = make_run(tmp_path, "b", config("full", 1), {"auc": 0.9}, kind="evaluate")
    assert [len(g.runs) for g in group_runs([load_run(a), load_run(b)])] == [1, 1]


def test_single_group_is_named_after_its_first_run(runs: list[Path]) -> None:
    assert [g.name for g in group_runs([load_run(runs[0]), load_run(runs[1])])] == ["full_s0"]


@pytest.mark.parametrize("name", ["config.yaml", "metrics.json", "run.json"])
def test_a_missing_bundle_file_is_named(runs: list[Path], name: str) -> None:
    (runs[0] / name).unlink()
    with pytest.raises(InputError, match=f"missing {name} \\(not a run bundle"):
        load_run(runs[0])


def test_malformed_bundles_name_the_file(runs: list[Path]) -> None:
    (runs[1] / "config.yaml").write_text("model: [unclosed")
    with pytest.raises(InputError, match="config.yaml.*not valid YAML"):
        load_run(runs[1])
    (runs[2] / "metrics.json").write_text("[0.5]")
    with pytest.raises(InputError, match="metrics.json.*expected an object of metrics"):
        load_run(runs[2])
    with pytest.raises(InputError, match="no run reports 'bleu'"):
        summarise_groups([load_run(runs[3])], metrics=["bleu"])
    with pytest.raises(InputError, match="model.nothing"):
        summarise_groups([load_run(runs[3])], group_by=["model.nothing"])


def test_cli_prints_and_writes_markdown_and_json(runs: list[Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "table.md"
    assert main(["report", *map(str, runs), "--metrics", "retrieval.i2t.R@1", "--out", str(out)]) == 0
    assert parse_table(out.read_text())["model.knowledge=full"]["retrieval.i2t.R@1"] == "0.600 ± 0.100"
    assert "0.350 ± 0.071" in capsys.readouterr().out

    out_json = tmp_path / "table.json"
    assert main(["report", *map(str, runs), "--group-by", "model.knowledge", "--json", "--out", str(out_json)]) == 0
    groups = json.loads(out_json.read_text())
    assert json.loads(capsys.readouterr().out) == groups
    none = groups[1]
    assert none["name"] == "model.knowledge=none" and none["n"] == 2 and none["seeds"] == [0, 1]
    assert none["metrics"]["loss"]["mean"] == pytest.approx(0.65)
    assert none["metrics"]["loss"]["std"] == pytest.approx(statistics.stdev([0.7, 0.6]))
    assert none["metrics"]["loss"]["values"] == pytest.approx([0.7, 0.6])

    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "nope" in capsys.readouterr().err
