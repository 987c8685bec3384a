"""``motor finetune`` and ``motor evaluate`` on every task: few-step runs of the real tiny model on a
tiny synthetic set, the files they write, and the baselines they are compared with."""
from __future__ import annotations

import json
import math

import pytest
import torch

from model.heads import IGNORE_ANSWER
from pipelines.cli import main
from pipelines.evaluate import majority_answers, most_frequent_report
from pipelines.tasks.vqa import AnswerVocabulary, VQACollator

TASKS = ("retrieval", "generation", "diagnosis", "vqa")
TINY = ["--set", "train.max_steps=2", "--set", "train.batch_size=4", "--set", "eval.batch_size=8",
        "--set", "eval.max_length=8", "--set", "eval.num_beams=2", "--set", "eval.itm_k=2", "--set", "eval.meteor=nltk"]
BUNDLE = ("config.yaml", "env.json", "git.json", "run.json", "metrics.json", "metrics.md", "metrics.jsonl")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pretrain") / "run"
    code = main(["pretrain", "--out", str(run_dir), "--no-progress", "--set", "data.synthetic_n=24",
                 "--set", "model.image_size=32", "--set", "train.max_steps=2", "--set", "train.batch_size=4",
                 "--set", "eval.batch_size=8"])
    assert code == 0
    return run_dir


def finite_numbers(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from finite_numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from finite_numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def headline(task, test):
    """The figures a user reads first, which must all be real numbers."""
    if task == "retrieval":
        return [test["itc"][f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)] + [test["itm"]["i2t_R@1"]]
    if task == "generation":
        return [test[row][name] for row in ("greedy", "beam", "most_frequent_report")
                for name in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr")] + [
            test[row]["clinical_efficacy"][policy][f"{measure}_micro"]
            for row in ("greedy", "beam", "most_frequent_report")
            for policy in ("uncertain_negative", "uncertain_positive") for measure in ("precision", "recall", "f1")] + [
            test[row]["f1_radgraph"][score] for row in ("greedy", "beam", "most_frequent_report")
            for score in ("RG_E", "RG_ER", "RG_ER_bar")]
    if task == "diagnosis":
        return [test["macro_f1"], test["micro_f1"]]
    return [test[row]["overall"] for row in ("model", "majority_answer")]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("task", TASKS)
def test_finetune_then_evaluate_reproduces_the_test_metrics(task, pretrained, tmp_path):
    run_dir = tmp_path / task
    assert main(["finetune", "--task", task, "--from", str(pretrained), "--out", str(run_dir), "--no-progress",
                 *TINY]) == 0
    for name in BUNDLE:
        assert (run_dir / name).is_file(), name
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert (run_dir / "head.safetensors").is_file() == (task in ("diagnosis", "vqa"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 2
    assert all(math.isfinite(v) for v in headline(task, metrics["test"]))
    assert all(math.isfinite(v) for v in finite_numbers(metrics["test"]))
    run_info = json.loads((run_dir / "run.json").read_text())
    assert run_info["data"]["manifest"]["path"] == str(pretrained / "data" / "manifest.jsonl")
    assert run_info["checkpoints"]["chosen"].startswith("checkpoints/step_")
    if task == "retrieval":
        assert set(metrics) >= {"zero_shot", "test"}

    # `motor evaluate` rebuilds the model (and head) from the saved files: same test metrics.
    out = tmp_path / "eval"
    extra = TINY[4:]
    assert main(["evaluate", "--task", task, "--model", str(run_dir), "--out", str(out), *extra]) == 0
    evaluated = json.loads((out / "metrics.json").read_text())["test"]
    assert headline(task, evaluated) == pytest.approx(headline(task, metrics["test"]), abs=1e-6)
    assert (out / "metrics.md").read_text().startswith(f"# {task}")
    if task == "generation":
        assert "F1-RadGraph (motor-kg rules annotator): " in (out / "metrics.md").read_text()


def letters(text):
    return "".join(c for c in text.lower() if c.isascii() and c.isalnum())


@pytest.mark.timeout(120)
def test_generation_evaluation_reads_package_annotations(pretrained, tmp_path, capsys):
    """`--radgraph-annotations` with the greedy and reference reports annotated as the package
    writes them: the rules annotator's own annotations give the rules annotator's figures."""
    from pipelines.metrics.radgraph import annotate_texts

    extra = TINY[4:]
    rules_out = tmp_path / "eval-rules"
    assert main(["evaluate", "--task", "generation", "--model", str(pretrained), "--out", str(rules_out), *extra]) == 0
    evaluated = json.loads((rules_out / "metrics.json").read_text())["test"]
    per_study = (rules_out / "per_study" / "test.jsonl").read_text().splitlines()
    reports = [json.loads(line) for line in per_study]
    assert len(reports) == evaluated["n"]
    assert [row["reference"] for row in reports[:len(evaluated["examples"])]] == \
        [example["reference"] for example in evaluated["examples"]]
    files = []
    for side in ("greedy", "reference"):
        texts = [row[side] for row in reports]
        records = annotate_texts(texts)
        # The package writes "None" for an empty report; batch layout for one side, per-report for the other.
        annotations = [{"text": "None", "entities": {}} if record is None else record.to_json() for record in records]
        document = {str(k): a for k, a in enumerate(annotations)} if side == "greedy" else [{"0": a} for a in annotations]
        path = tmp_path / f"{side}.json"
        path.write_text(json.dumps(document))
        files.append(str(path))
    out = tmp_path / "eval-package"
    assert main(["evaluate", "--task", "generation", "--model", str(pretrained), "--out", str(out),
                 "--radgraph-annotations", *files, *extra]) == 0
    package = json.loads((out / "metrics.json").read_text())["test"]
    assert package["greedy"]["f1_radgraph"]["annotator"] == "radgraph package annotations"
    for score in ("RG_E", "RG_ER", "RG_ER_bar"):
        assert package["greedy"]["f1_radgraph"][score] == pytest.approx(evaluated["greedy"]["f1_radgraph"][score])
    # Beam-search reports are scored only where they are the greedy ones the annotations are of.
    beam_is_greedy = all(letters(row["beam"]) == letters(row["greedy"]) for row in reports)
    assert (package["beam"]["f1_radgraph"] is None) == (not beam_is_greedy)
    assert "F1-RadGraph (radgraph package annotations): " in (out / "metrics.md").read_text()
    capsys.readouterr()
    # Files are checked before anything runs; the flag is for generation only.
    assert main(["evaluate", "--task", "generation", "--model", str(pretrained), "--out", str(out),
                 "--radgraph-annotations", files[0], str(tmp_path / "missing.json")]) == 1
    assert "missing.json" in capsys.readouterr().err
    assert main(["evaluate", "--task", "diagnosis", "--model", str(pretrained), "--out", str(out),
                 "--radgraph-annotations", *files]) == 1
    assert "only report generation" in capsys.readouterr().err


def test_evaluate_refuses_a_model_without_the_task_head(pretrained, tmp_path, capsys):
    code = main(["evaluate", "--task", "diagnosis", "--model", str(pretrained), "--out", str(tmp_path / "e")])
    assert code == 1
    assert "head.safetensors" in capsys.readouterr().err


def test_finetune_names_a_missing_model_directory(tmp_path, capsys):
    code = main(["finetune", "--task", "diagnosis", "--from", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert code == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "nothing") in err and "no MOTOR model" in err


def test_most_frequent_report_ignores_case_and_spacing():
    reports = ["No acute disease.", "Small effusion.", "no  acute disease.", "Small effusion.", "NO ACUTE DISEASE."]
    assert most_frequent_report(reports) == "No acute disease."


def test_majority_answer_per_type_with_alphabetical_ties():
    answers = ["Yes", "no", "yes", "left", "right", "right", "no"]
    kinds = ["closed", "closed", "closed", "open", "open", "open", "closed"]
    # closed: yes 2, no 2 -> tie broken alphabetically; open: right 2 > left 1.
    assert majority_answers(answers, kinds) == {"closed": "no", "open": "right"}


def test_answer_vocabulary_orders_by_frequency_and_round_trips(tmp_path):
    vocabulary = AnswerVocabulary.from_answers(["yes", "No", "no", "left", "no", "yes"])
    assert vocabulary.answers == ["no", "yes", "left"]
    assert vocabulary.index("NO") == 0 and vocabulary.index("pleural") == IGNORE_ANSWER
    vocabulary.save(tmp_path / "answers.json")
    assert AnswerVocabulary.load(tmp_path / "answers.json").answers == vocabulary.answers
    with pytest.raises(Exception, match="at least 2 distinct"):
        AnswerVocabulary.from_answers(["yes", "Yes"])


def test_vqa_collator_tokenises_questions_and_indexes_answers():
    from model.processing import MotorCollator
    from model.tokenizer import train_tokenizer

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_tokenizer(["is there an effusion", "where is the opacity", "yes no left right"] * 5, tmp,
                                    vocab_size=120)
    collate = VQACollator(MotorCollator(tokenizer, max_len=16), AnswerVocabulary(["yes", "no", "left"]))
    items = [{"image": torch.rand(1, 8, 8), "question": "is there an effusion", "answer": "Yes", "index": 0},
             {"image": torch.rand(1, 8, 8), "question": "where is the opacity", "answer": "apex", "index": 1}]
    batch = collate(items)
    assert batch["answer"].tolist() == [0, IGNORE_ANSWER]
    assert batch["input_ids"].shape[0] == 2 and batch["input_ids"][0, 0] == tokenizer.cls_token_id
    assert batch["image"].shape == (2, 1, 8, 8)


def test_a_missing_vqa_manifest_is_named(pretrained, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "vqa.jsonl"
    code = main(["finetune", "--task", "vqa", "--from", str(pretrained), "--out", str(tmp_path / "o"),
                 "--set", f"data.vqa_manifest={missing}"])
    assert code == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "data.vqa_manifest" in err


@pytest.mark.parametrize("task, manifest_name", [("diagnosis", "manifest.jsonl"), ("vqa", "vqa.jsonl")])
def test_a_corrupt_test_image_stops_finetuning_before_any_step(task, manifest_name, pretrained, tmp_path, capsys,
                                                               monkeypatch):
    import shutil

    import pipelines.finetune

    def no_training(*args, **kwargs):
        raise AssertionError("training started although an image does not decode")

    monkeypatch.setattr(pipelines.finetune, "fit", no_training)
    data = tmp_path / "data"
    shutil.copytree(pretrained / "data", data)
    rows = [json.loads(line) for line in (data / manifest_name).read_text().splitlines()]
    bad = next(row for row in rows if row["split"] == "test")
    image = data / bad["image"]
    image.write_bytes(image.read_bytes()[:50])
    first = next(row for row in rows if row["image"] == bad["image"])  # VQA questions share images
    record = f"question {first['qid']}" if task == "vqa" else f"study {first['study_id']}"
    assert main(["finetune", "--task", task, "--from", str(pretrained), "--data", str(data),
                 "--out", str(tmp_path / "out"), "--no-progress", *TINY]) == 1
    err = capsys.readouterr().err
    assert f"{data / manifest_name}: record {record}: field 'image': image {image.resolve()} (test split) " \
           "does not decode" in err
    assert not (tmp_path / "out" / "checkpoints").exists()
