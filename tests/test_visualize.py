"""``motor visualize``: every figure writes its PNG and the data behind it, and the data are the model's."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from kg.errors import InputError
from pipelines.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["data.synthetic_n=40", "model.image_size=32", "train.max_steps=3", "train.batch_size=4",
        "eval.batch_size=8", "train.validate=false", "tokenizer.vocab_size=400"]


def _pretrain(out: Path, knowledge: str) -> Path:
    from pipelines.config import PretrainConfig, builtin_config, load_config
    from pipelines.pretrain import pretrain

    config = load_config(PretrainConfig, builtin_config("pretrain_tiny"), [*TINY, f"model.knowledge={knowledge}"])
    pretrain(config, out, show_progress=False, echo=None)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    full = _pretrain(root / "full", "full")
    # The same data for the second variant, so the two are drawn over the same test studies.
    none = _pretrain(root / "none", "none")
    return {"full": full, "none": none}


@pytest.fixture(scope="module")
def drawn(runs) -> dict[str, Path]:
    assert main(["visualize", str(runs["full"]), "--compare", str(runs["none"]), "--reports", "2"]) == 0
    return runs


def test_every_figure_writes_a_png_and_its_data(drawn):
    figures = drawn["full"] / "figures"
    for name, data in (("fig2", "json"), ("fig3", "json"), ("fig4", "csv"), ("fig5", "csv"), ("fig6", "json")):
        assert (figures / f"{name}.png").read_bytes()[:8] == PNG, name
        assert (figures / f"{name}.{data}").stat().st_size > 0, name
    page = (drawn["full"] / "report.html").read_text()
    for name in ("fig2", "fig3", "fig4", "fig5", "fig6"):
        assert f'src="figures/{name}.png"' in page
    assert "<table>" in page and "http" not in page.replace("http-equiv", "")


def test_sk_hits_are_the_models_retrieval(drawn):
    from pipelines.visualize import _batch, _test_split, load_run
    from model.motor import gk_stage, project_image

    data = json.loads((drawn["full"] / "figures" / "fig2.json").read_text())
    run = load_run(drawn["full"])
    assert 1 <= len(data["hits"]) <= run.model.config.sk_top_k
    query = project_image(run.model, gk_stage(run.model, _batch(run, _test_split(run), [0])["image"]))
    features = run.model.report_queue.entries("feature")
    scores = (query @ features.T)[0]
    expected = torch.topk(scores, len(data["hits"])).values.tolist()
    assert [hit["score"] for hit in data["hits"]] == pytest.approx(expected, abs=1e-5)
    train = {line["study_id"] for line in map(json.loads, run.manifest.read_text().splitlines())
             if line["split"] == "train"}
    assert all(hit["study_id"] in train and hit["sk_sentence"] for hit in data["hits"])


def test_gk_attention_data_sum_to_one_and_match_the_model(drawn):
    from pipelines.visualize import _batch, _test_split, load_run

    data = json.loads((drawn["full"] / "figures" / "fig3.json").read_text())
    assert sum(data["cls_to_nodes"]) == pytest.approx(1.0, abs=1e-5)
    for values in data["node_to_patches"].values():
        assert sum(values) == pytest.approx(1.0, abs=1e-5)
        assert len(values) == data["patch_grid"][0] * data["patch_grid"][1]
    run = load_run(drawn["full"])
    found = run.model.gk_attention(_batch(run, _test_split(run), [0])["image"])
    cls = found["image_to_nodes"][0, :, 0, :].mean(0)
    assert data["cls_to_nodes"] == pytest.approx(cls.tolist(), abs=1e-6)
    from kg.label_schema import label_schema

    findings = set(label_schema().gk_findings) - {"normal"}
    ranked = [found["node_ids"][int(i)] for i in torch.argsort(cls, descending=True)]
    assert data["top_nodes"][0] == next(node for node in ranked if node in findings)

    with (drawn["full"] / "figures" / "fig5.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    nodes = [key for key in rows[0] if key not in ("finding", "n_studies")]
    assert nodes == found["node_ids"]
    for row in rows:
        assert sum(float(row[node]) for node in nodes) == pytest.approx(1.0, abs=1e-4)
        assert int(row["n_studies"]) >= 1


def test_tsne_and_reports_cover_both_variants(drawn):
    from pipelines.visualize import ce_labels

    with (drawn["full"] / "figures" / "fig4.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    runs = {row["run"] for row in rows}
    assert runs == {"full (full)", "none (none)"}
    per_run = len(rows) // 2
    assert per_run % 2 == 0 and sum(row["modality"] == "image" for row in rows) == per_run
    data = json.loads((drawn["full"] / "figures" / "fig6.json").read_text())
    assert len(data["studies"]) == 2
    study = data["studies"][0]
    assert set(study["generated"]) == runs
    for found in study["generated"].values():
        assert found["labels"] == ce_labels([found["text"]])[0]
        assert set(found["agree"]) | set(found["extra"]) == set(found["labels"])
        assert set(found["agree"]) | set(found["missed"]) == set(study["reference"]["labels"])


def test_a_run_without_gk_skips_or_refuses_the_gk_figures(drawn):
    from pipelines.visualize import visualize

    with pytest.raises(InputError, match="no GK path"):
        visualize(drawn["none"], ["fig3"], echo=lambda m: None)
    result = visualize(drawn["none"], ["fig2", "fig5"], echo=lambda m: None)
    assert set(result["skipped"]) == {"fig2", "fig5"}
    assert not (drawn["none"] / "figures" / "fig5.png").exists()
    assert (drawn["none"] / "report.html").is_file()


def test_unknown_figure_and_study_are_named(drawn):
    from pipelines.visualize import visualize

    with pytest.raises(InputError, match="--figure"):
        visualize(drawn["full"], ["fig9"], echo=lambda m: None)
    with pytest.raises(InputError, match="--study"):
        visualize(drawn["full"], ["fig3"], study=10_000, echo=lambda m: None)


def test_markdown_tables_become_escaped_html():
    from pipelines.visualize import markdown_to_html

    page = markdown_to_html("# Title\n\n| a | b |\n|:--|--:|\n| <x> | 1 |\n\ntext")
    assert page == ("<h2>Title</h2>\n<table><tr><th>a</th><th>b</th></tr><tr><td>&lt;x&gt;</td><td>1</td></tr>"
                    "</table>\n<p>text</p>")
