"""The embedded synthetic dataset: determinism, image / report / label / RadGraph / VQA consistency, CLI.

Consistency checks are independent of the generator's own bookkeeping: findings are recognised in
the report through the GK graph's words and synonyms (``kg.gk``), the RadGraph file through the
project's RadGraph reader (``kg.radgraph``), and the images through simple pixel statistics.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter, uniform_filter

from kg.errors import InputError
from kg.gk import load_gk
from kg.label_schema import label_schema
from kg.manifest import read_manifest, read_vqa_manifest
from kg.radgraph_reader import RadGraphReader
from kg.records import ENTITY_LABELS, RELATION_TYPES, Entity, ReportRecord
from pipelines.cli import main as motor
from pipelines.data.synthetic import generator as synthetic
from pipelines.data.synthetic import assign_splits, generate, make_study
from pipelines.data.synthetic.render import render_scene
from pipelines.data.synthetic.scene import Scene, sample_scene, study_rng

GK = load_gk()
SCHEMA = label_schema()
FINDINGS = SCHEMA.gk_findings
SAMPLE = 300
#: How the reports name each side (the lingula is in the left lung; plural places are bilateral).
SIDE_WORDS = {"right": ("right",), "left": ("left", "lingula"), "bilateral": ("bilateral", "bibasilar", "biapical", "apices")}


@pytest.fixture(scope="module")
def studies() -> list[synthetic.SyntheticStudy]:
    """The first studies of seed 0 at a tiny image size (reports and labels do not depend on it)."""
    return [make_study(0, i, image_size=32) for i in range(SAMPLE)]


def gk_values(study: synthetic.SyntheticStudy) -> dict[str, int]:
    return dict(zip(FINDINGS, study.gk_labels))


def chexpert(study: synthetic.SyntheticStudy) -> dict[str, int | None]:
    return dict(zip(SCHEMA.chexpert, study.labels))


def phrase(record: ReportRecord, entity: Entity) -> str:
    """The text from an observation to its anatomy and modifiers: "small left pleural effusion"."""
    related = [entity] + [record.entities[t] for rel, t in entity.relations if rel == "located_at"]
    related += [e for e in record.entities.values() if ("modify", entity.id) in e.relations]
    tokens = record.text.split()
    return " ".join(tokens[min(e.start_ix for e in related) : max(e.end_ix for e in related) + 1])


def sentence_of(record: ReportRecord, entity: Entity) -> str:
    tokens = record.text.split()
    start, end = entity.start_ix, entity.end_ix
    while start > 0 and tokens[start - 1] not in (".", ":"):
        start -= 1
    while end < len(tokens) - 1 and tokens[end] != ".":
        end += 1
    return " ".join(tokens[start : end + 1]).lower()


# ---------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_studies() -> None:
    for index in (0, 5, 17):
        first, second = make_study(3, index, 64), make_study(3, index, 64)
        assert first.image.tobytes() == second.image.tobytes()
        assert first.report.text == second.report.text and first.report.record.to_json() == second.report.record.to_json()
        assert (first.labels, first.gk_labels, first.questions) == (second.labels, second.gk_labels, second.questions)


def test_different_seeds_differ() -> None:
    a = [make_study(0, i, 48) for i in range(8)]
    b = [make_study(1, i, 48) for i in range(8)]
    assert all(x.image.tobytes() != y.image.tobytes() for x, y in zip(a, b))
    assert sum(x.report.text != y.report.text for x, y in zip(a, b)) >= 6


def test_study_content_does_not_depend_on_image_size() -> None:
    small, large = make_study(0, 9, 32), make_study(0, 9, 96)
    assert small.report.text == large.report.text and small.labels == large.labels
    assert small.image.shape == (32, 32) and large.image.shape == (96, 96) and large.image.dtype == np.uint8


def test_splits_are_80_10_10_and_seeded() -> None:
    splits = assign_splits(200, 4)
    assert Counter(splits) == {"train": 160, "val": 20, "test": 20}
    assert splits == assign_splits(200, 4) and splits != assign_splits(200, 5)


# ---------------------------------------------------------------------- finding mix
def test_normal_rate_and_every_finding_occurs(studies: list[synthetic.SyntheticStudy]) -> None:
    normal = sum(gk_values(s)["normal"] == 1 for s in studies) / len(studies)
    assert 0.28 <= normal <= 0.44
    counts = Counter(f for s in studies for f, v in gk_values(s).items() if v != 0)
    assert all(counts[f] >= 2 for f in FINDINGS), counts
    # normal exactly when nothing else is present
    for s in studies:
        values = gk_values(s)
        assert (values["normal"] == 1) == all(v == 0 for f, v in values.items() if f != "normal")


def test_findings_co_occur_plausibly(studies: list[synthetic.SyntheticStudy]) -> None:
    with_edema = [gk_values(s) for s in studies if gk_values(s)["edema"] == 1]
    assert sum(v["cardiomegaly"] == 1 or v["effusion"] == 1 for v in with_edema) >= 0.6 * len(with_edema)
    with_pneumonia = [gk_values(s) for s in studies if gk_values(s)["pneumonia"] != 0]
    assert all(v["opacity"] == 1 or v["airspace_disease"] == 1 for v in with_pneumonia)


# ---------------------------------------------------------------------- report ↔ labels
def test_every_present_finding_is_mentioned_positively(studies: list[synthetic.SyntheticStudy]) -> None:
    for s in studies:
        record, values = s.report.record, gk_values(s)
        found = {"OBS-DP": set(), "OBS-U": set()}
        for entity in record.entities.values():
            if entity.label in found:
                found[entity.label].update(GK.match_findings(phrase(record, entity)))
        for finding, value in values.items():
            # "other finding" has no natural wording of its own; normal is checked on the whole text
            if finding in ("other_finding", "normal"):
                continue
            if value == 1:
                assert finding in found["OBS-DP"], (finding, s.report.text)
            elif value == -1:
                assert finding in found["OBS-U"] and finding not in found["OBS-DP"], (finding, s.report.text)
        if values["normal"] == 1:
            assert "normal" in GK.match_findings(s.report.impression), s.report.impression


def test_negated_mentions_are_absent_and_labelled_zero(studies: list[synthetic.SyntheticStudy]) -> None:
    negated = 0
    for s in studies:
        record, values, labels = s.report.record, gk_values(s), chexpert(s)
        for entity in record.entities.values():
            if entity.label != "OBS-DA":
                continue
            for finding in GK.match_findings(phrase(record, entity)):
                negated += 1
                assert values[finding] == 0, (finding, s.report.text)
                for name, concepts in zip(SCHEMA.chexpert, SCHEMA.chexpert_concepts):
                    others_present = any(values.get(c) == 1 for c in concepts if c != finding)
                    if finding in concepts and not others_present:
                        assert labels[name] == 0, (name, s.report.text)
    assert negated > SAMPLE  # pertinent negatives are common


def test_chexpert_labels_agree_with_the_image_truth(studies: list[synthetic.SyntheticStudy]) -> None:
    for s in studies:
        values, labels = gk_values(s), chexpert(s)
        for name, concepts in zip(SCHEMA.chexpert, SCHEMA.chexpert_concepts):
            gk_ids = [c for c in concepts if c in values and c != "normal"]
            if not gk_ids:
                continue
            assert (labels[name] == 1) == any(values[g] == 1 for g in gk_ids), (name, s.report.text)
            assert (labels[name] == -1) == (not any(values[g] == 1 for g in gk_ids) and any(values[g] == -1 for g in gk_ids))
        consolidated = s.scene.get("airspace_disease")
        assert (labels["Consolidation"] == 1) == (consolidated is not None and consolidated.variant == "consolidation")
        if labels["Consolidation"] == 1:
            assert "consolidation" in s.report.text.lower()
        pathology = [v for n, v in labels.items() if n not in ("No Finding", "Support Devices")]
        assert (labels["No Finding"] == 1) == all(v not in (1, -1) for v in pathology)
        assert labels["No Finding"] in (1, None)


def test_radgraph_spans_match_the_text(studies: list[synthetic.SyntheticStudy]) -> None:
    for s in studies:
        record = s.report.record
        tokens = record.text.split()
        assert list(record.entities) == [str(i) for i in range(1, len(record.entities) + 1)]
        covered: set[int] = set()
        for entity in record.entities.values():
            assert entity.tokens == " ".join(tokens[entity.start_ix : entity.end_ix + 1])
            assert entity.label in ENTITY_LABELS
            span = set(range(entity.start_ix, entity.end_ix + 1))
            assert not span & covered, "overlapping entities"
            covered |= span
            for relation, target in entity.relations:
                assert relation in RELATION_TYPES and target in record.entities and target != entity.id
        # The manifest text is the RadGraph text with the spaces before punctuation removed.
        assert s.report.text == re.sub(r" (?=[.,;:])", "", record.text)
        assert s.report.text.startswith("FINDINGS: ") and " IMPRESSION: " in s.report.text


# ---------------------------------------------------------------------- VQA
def test_closed_questions_are_balanced_and_true(studies: list[synthetic.SyntheticStudy]) -> None:
    answers = Counter()
    checked = 0
    for s in studies:
        values = gk_values(s)
        closed = [q for q in s.questions if q.answer_type == "closed"]
        assert Counter(q.answer for q in closed)["yes"] == Counter(q.answer for q in closed)["no"]
        for qa in closed:
            answers[qa.answer] += 1
            named = GK.match_findings(qa.question)
            if named:
                checked += 1
                assert any(values[f] == 1 for f in named) == (qa.answer == "yes"), (qa, values)
    assert answers["yes"] == answers["no"] > SAMPLE / 2
    assert checked >= 0.8 * sum(answers.values())


def test_open_answers_agree_with_the_report(studies: list[synthetic.SyntheticStudy]) -> None:
    where = 0
    for s in studies:
        record = s.report.record
        for qa in s.questions:
            if qa.answer_type != "open":
                continue
            noun = re.search(r"(?:Where is|Which side is) the (.+?)(?: on)?\?$", qa.question)
            if noun:
                where += 1
                words = set(qa.answer.split())
                side = "right" if "right" in words else "left" if "left" in words else "bilateral"
                named = set(GK.match_findings(noun.group(1)))
                sentences = [sentence_of(record, e) for e in record.entities.values()
                             if e.label == "OBS-DP" and named & set(GK.match_findings(phrase(record, e)))]
                markers = SIDE_WORDS[side]
                assert any(m in text for m in markers for text in sentences), (qa, s.report.text)
            else:
                side = re.search(r"in the (right|left) lung", qa.question).group(1)
                named = set(GK.match_findings(qa.answer))
                assert named & {f for f, v in gk_values(s).items() if v == 1}
                sentences = [sentence_of(record, e) for e in record.entities.values()
                             if e.label == "OBS-DP" and named & set(GK.match_findings(phrase(record, e)))]
                assert any(m in text for m in SIDE_WORDS[side] + SIDE_WORDS["bilateral"] for text in sentences), (qa, s.report.text)
    assert where > 50


# ---------------------------------------------------------------------- image ↔ findings
def first_scenes(predicate, count: int) -> list[Scene]:
    scenes = []
    index = 0
    while len(scenes) < count:
        scene = sample_scene(study_rng(0, index))
        if predicate(scene):
            scenes.append(scene)
        index += 1
    return scenes


def without(scene: Scene, finding: str) -> Scene:
    """The same patient and exposure with one finding removed."""
    return replace(scene, findings=tuple(f for f in scene.findings if f.id != finding))


def side_box(image: np.ndarray, side: str, rows: tuple[float, float], cols: tuple[float, float]) -> np.ndarray:
    """A box given for the patient's right (image left); mirrored for the left."""
    h, w = image.shape
    c0, c1 = cols if side == "right" else (1 - cols[1], 1 - cols[0])
    return image[int(rows[0] * h) : int(rows[1] * h), int(c0 * w) : int(c1 * w)]


def cardiothoracic_ratio(image: np.ndarray) -> float:
    """Widest heart run over the widest lung span, on column profiles of horizontal bands."""
    smooth = gaussian_filter(image.astype(float), 1.0)
    h, w = smooth.shape
    centre = int(0.55 * w)
    ratios = []
    for top in np.arange(0.5, 0.72, 0.02):
        profile = smooth[int(top * h) : int((top + 0.04) * h)].mean(axis=0)
        lung = np.percentile(profile[int(0.12 * w) : int(0.88 * w)], 5)
        dark = np.nonzero(profile < lung + 0.5 * (profile[centre] - lung))[0]
        left, right = dark[dark < centre], dark[dark > centre]
        if len(left) and len(right):
            ratios.append((right[0] - left[-1]) / (dark[-1] - dark[0]))
    return max(ratios)


def test_cardiomegaly_has_a_larger_cardiothoracic_ratio() -> None:
    normal = [cardiothoracic_ratio(render_scene(s, 128)) for s in first_scenes(lambda s: s.is_normal, 20)]
    enlarged = [cardiothoracic_ratio(render_scene(s, 128)) for s in first_scenes(lambda s: s.has("cardiomegaly"), 20)]
    assert np.mean(enlarged) - np.mean(normal) > 0.06
    # probability that an enlarged heart measures larger than a normal one (AUC)
    auc = np.mean([e > n for e in enlarged for n in normal])
    assert auc > 0.75, auc


def test_effusion_raises_basal_intensity_on_its_side() -> None:
    for scene in first_scenes(lambda s: s.has("effusion"), 12):
        effusion = scene.get("effusion")
        with_fluid = render_scene(scene, 96).astype(float)
        difference = with_fluid - render_scene(without(scene, "effusion"), 96).astype(float)
        for side in ("right", "left"):
            change = side_box(difference, side, (0.62, 0.82), (0.1, 0.35)).mean()
            if effusion.side in (side, "bilateral"):
                assert change > 5.0, (effusion, side, change)
            else:
                assert abs(change) < 0.5, (effusion, side, change)
        assert np.abs(difference[: int(0.35 * 96)]).max() < 1.0  # the upper chest is untouched


def apical_texture(image: np.ndarray, side: str) -> float:
    """Median local energy of fine detail in the lung apex of one side."""
    detail = image - gaussian_filter(image, 1.5)
    return float(np.median(side_box(uniform_filter(detail * detail, 3), side, (0.17, 0.3), (0.22, 0.38))))


def test_pneumothorax_removes_apical_lung_markings_on_its_side() -> None:
    ratios = []
    for scene in first_scenes(lambda s: s.has("pneumothorax"), 16):
        side = scene.get("pneumothorax").side
        other = "left" if side == "right" else "right"
        image = render_scene(scene, 128).astype(float)
        reference = render_scene(without(scene, "pneumothorax"), 128).astype(float)
        ratios.append(apical_texture(image, side) / apical_texture(reference, side))
        assert apical_texture(image, other) == pytest.approx(apical_texture(reference, other))
    assert np.mean(ratios) < 0.85 and np.mean(np.array(ratios) < 1.0) >= 0.8, ratios


# ---------------------------------------------------------------------- generate / CLI
def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_cli_writes_the_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "synth"
    assert motor(["synth", "--n", "20", "--out", str(out), "--image-size", "64", "--quiet"]) == 0
    assert "wrote 20 studies" in capsys.readouterr().out
    records = read_manifest(out / "manifest.jsonl")
    assert [r.study_id for r in records] == [f"syn{i:06d}" for i in range(20)]
    assert Counter(r.split for r in records) == {"train": 16, "val": 2, "test": 2}
    for record in records:
        with Image.open(out / record.image) as image:
            assert image.size == (64, 64) and image.mode == "L"
    assert json.loads((out / "splits.json").read_text()) == {
        split: [r.study_id for r in records if r.split == split] for split in ("train", "val", "test")
    }
    reader = RadGraphReader([out / "radgraph.json"])
    parsed = {r.report_id: r for r in reader}
    assert reader.errors == [] and list(parsed) == [r.study_id for r in records]
    assert all(parsed[r.study_id].data_split == r.split for r in records)
    questions = read_vqa_manifest(out / "vqa.jsonl")
    assert {q.study_id for q in questions} == {r.study_id for r in records}
    lines = (out / "labels.csv").read_text().splitlines()
    assert len(lines) == 21 and lines[0].split(",")[2:16] == list(SCHEMA.chexpert)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n"], summary["seed"], summary["image_size"]) == (20, 0, 64)

    before = tree_digest(out)
    assert motor(["synth", "--n", "20", "--out", str(out), "--image-size", "64", "--quiet"]) == 0
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]  # no temporary directories left


def test_workers_give_identical_files(tmp_path: Path) -> None:
    generate(tmp_path / "one", n=12, seed=2, image_size=48, workers=1)
    generate(tmp_path / "two", n=12, seed=2, image_size=48, workers=2)
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "two")


def test_failed_run_leaves_the_previous_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "synth"
    generate(out, n=6, seed=0, image_size=32)
    before = tree_digest(out)

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "_write_tables", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(out, n=8, seed=1, image_size=32)
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]


def test_refuses_to_replace_a_foreign_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert motor(["synth", "--n", "3", "--out", str(tmp_path / "mine"), "--quiet"]) == 1
    assert "refusing to replace" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="at least one study"):
        generate(tmp_path / "x", n=0)
