"""Evaluation metrics against hand-computed values, brute force and malformed inputs."""
from __future__ import annotations

import itertools
import json
import math
import shutil
import sys
import types

import numpy as np
import pytest

from kg.errors import InputError
from pipelines.metrics import (
    caption_metrics,
    chance_mrr,
    chance_recall,
    classification_metrics,
    clinical_efficacy,
    clinical_efficacy_both,
    clinical_efficacy_from_texts,
    metrics_table,
    normalize_answer,
    recall_at_k,
    retrieval_metrics,
    vqa_accuracy,
    write_metrics,
)
from pipelines.metrics.ptb import ptb_tokenize, ptb_tokenize_java, ptb_tokens

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime")

# Rows are images, columns reports; image i's report is column i.
SIM_4X4 = np.array([
    [0.9, 0.1, 0.3, 0.2],  # own report first: rank 1
    [0.8, 0.5, 0.1, 0.0],  # 0.8 > 0.5: rank 2
    [0.1, 0.2, 0.3, 0.4],  # 0.4 > 0.3: rank 2
    [0.7, 0.6, 0.5, 0.1],  # three higher: rank 4
])


# --- retrieval -------------------------------------------------------------------------------

def test_recall_at_k_on_hand_made_matrix():
    result = recall_at_k(SIM_4X4, ks=(1, 2, 3, 5))
    assert result["R@1"] == 0.25
    assert result["R@2"] == 0.75
    assert result["R@3"] == 0.75
    assert result["R@5"] == 1.0  # K beyond the number of reports
    assert result["MedR"] == 2.0  # median of ranks 1, 2, 2, 4
    assert result["MeanR"] == 2.25
    assert result["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 2 + 1 / 4) / 4)
    assert result["n_queries"] == 4


def test_ties_count_against_the_positive():
    # Text 2 over images (column 2): its image scores 0.3, image 0 ties at 0.3, image 3 has 0.5.
    assert recall_at_k(SIM_4X4.T, ks=(2, 3))["R@2"] == 0.5  # t2i ranks 1, 2, 3, 3
    collapsed = recall_at_k(np.ones((5, 5)), ks=(1, 4, 5))
    assert collapsed["R@1"] == 0.0 and collapsed["R@4"] == 0.0 and collapsed["R@5"] == 1.0


def test_several_positives_as_sets_and_as_matrix():
    positives = [{0}, {0, 1}, {2}, {3}]  # image 1's report equals report 0
    expected = {"R@1": 0.5, "MedR": 1.5}
    as_sets = recall_at_k(SIM_4X4, positives, ks=(1,))
    mask = np.zeros((4, 4), dtype=bool)
    for row, items in enumerate(positives):
        mask[row, list(items)] = True
    as_mask = recall_at_k(SIM_4X4, mask, ks=(1,))
    for key, value in expected.items():
        assert as_sets[key] == value == as_mask[key]


def test_recall_matches_brute_force_sorting():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(30, 40))
    positives = [set(rng.choice(40, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(30)]
    ranks = []
    for row, items in enumerate(positives):
        order = list(np.argsort(-sim[row]))
        ranks.append(1 + min(order.index(item) for item in items))
    result = recall_at_k(sim, positives, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert result[f"R@{k}"] == pytest.approx(np.mean(np.array(ranks) <= k))
    assert result["MedR"] == np.median(ranks)


def test_retrieval_metrics_both_directions_and_chance():
    result = retrieval_metrics(SIM_4X4, ks=(1, 2))
    assert result["i2t_R@1"] == 0.25 and result["i2t_R@2"] == 0.75
    assert result["t2i_R@1"] == 0.25 and result["t2i_R@2"] == 0.5  # t2i ranks 1, 2, 3, 3
    assert result["mean_R"] == pytest.approx((0.25 + 0.75 + 0.25 + 0.5) / 4)
    assert result["t2i_MedR"] == 2.5
    assert result["chance"]["i2t_R@1"] == 0.25 and result["chance"]["t2i_R@2"] == 0.5
    assert result["i2t_MRR"] == pytest.approx((1 + 1 / 2 + 1 / 2 + 1 / 4) / 4)
    assert result["t2i_MRR"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 3) / 4)
    assert result["chance"]["i2t_MRR"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)  # H_4 / 4


def test_retrieval_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    assert recall_at_k(torch.tensor(SIM_4X4, dtype=torch.float32), ks=(1, 2)) == recall_at_k(SIM_4X4, ks=(1, 2))


@pytest.mark.parametrize("n, k, p", [(5, 1, 1), (5, 2, 2), (6, 3, 2), (4, 4, 1)])
def test_chance_recall_equals_enumeration_of_all_rankings(n, k, p):
    hits = [any(item < p for item in order[:k]) for order in itertools.permutations(range(n))]
    assert chance_recall(n, k, p) == pytest.approx(np.mean(hits))


@pytest.mark.parametrize("n, p", [(1, 1), (5, 1), (5, 2), (6, 3), (4, 4)])
def test_chance_mrr_equals_enumeration_of_all_rankings(n, p):
    reciprocal = [1 / (1 + min(order.index(item) for item in range(p))) for order in itertools.permutations(range(n))]
    assert chance_mrr(n, p) == pytest.approx(np.mean(reciprocal))


def test_retrieval_input_errors_name_the_field_and_record():
    with pytest.raises(InputError, match="explicit positives"):
        recall_at_k(np.zeros((3, 4)))
    with pytest.raises(InputError, match="record 1: field 'positives'"):
        recall_at_k(SIM_4X4, [{0}, set(), {2}, {3}])
    with pytest.raises(InputError, match="record 2: field 'positives'"):
        recall_at_k(SIM_4X4, [{0}, {1}, {9}, {3}])
    bad = SIM_4X4.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="record 3: field 'similarity'"):
        recall_at_k(bad)


# --- captioning ------------------------------------------------------------------------------

def test_bleu_and_rouge_by_hand():
    # prediction "the heart is normal" (4 tokens), reference "the heart size is normal" (5 tokens).
    # BLEU-1: 4/4 unigrams match; brevity penalty exp(1 - 5/4) = 0.778801.
    # BLEU-2: bigrams the-heart, heart-is, is-normal; 2 of 3 in the reference:
    #         0.778801 * sqrt(1 * 2/3) = 0.635886.
    # ROUGE-L: LCS 4, P = 4/4, R = 4/5, beta 1.2: (1 + 1.44) * 1 * 0.8 / (0.8 + 1.44 * 1) = 0.871429.
    result = caption_metrics(["The heart is normal."], ["the heart size is normal"], meteor="off")
    assert result["BLEU-1"] == pytest.approx(math.exp(-0.25), rel=1e-6)
    assert result["BLEU-2"] == pytest.approx(math.exp(-0.25) * math.sqrt(2 / 3), rel=1e-6)
    assert result["ROUGE-L"] == pytest.approx(1.952 / 2.24, rel=1e-9)
    assert result["n"] == 1 and result["errors"] == {"METEOR": "not requested (meteor='off')"}


REPORTS = [
    "heart size is normal . no pleural effusion",
    "the lungs are clear . heart size is enlarged",
    "small left pleural effusion with basilar atelectasis",
    "no pneumothorax . the lungs are clear",
]


def test_cider_is_maximal_for_identical_corpora_and_lower_when_shuffled():
    same = caption_metrics(REPORTS, REPORTS, meteor="off")
    shuffled = caption_metrics(REPORTS[1:] + REPORTS[:1], REPORTS, meteor="off")
    # CIDEr-D of pycocoevalcap: cosine 1 per n-gram order, no length penalty, times 10.
    assert same["CIDEr"] == pytest.approx(10.0)
    assert same["BLEU-4"] == pytest.approx(1.0) and same["ROUGE-L"] == pytest.approx(1.0)
    assert shuffled["CIDEr"] < 1.0
    assert shuffled["BLEU-1"] < same["BLEU-1"]


def test_multiple_references_take_the_best_match():
    single = caption_metrics(["no pleural effusion"], ["the heart is enlarged"], meteor="off")
    multi = caption_metrics(["no pleural effusion"], [["the heart is enlarged", "no pleural effusion"]], meteor="off")
    assert multi["ROUGE-L"] == pytest.approx(1.0) and single["ROUGE-L"] == 0.0


def test_a_failing_metric_is_null_with_its_reason(monkeypatch):
    from pycocoevalcap.cider.cider import Cider

    def broken(self, gts, res):
        raise RuntimeError("scorer exploded")

    monkeypatch.setattr(Cider, "compute_score", broken)
    monkeypatch.setattr("pipelines.metrics.captioning.shutil.which", lambda name: None)
    result = caption_metrics(REPORTS, REPORTS)
    assert result["CIDEr"] is None and "scorer exploded" in result["errors"]["CIDEr"]
    assert result["METEOR"] is None and "Java" in result["errors"]["METEOR"]
    assert result["BLEU-1"] == pytest.approx(1.0) and result["ROUGE-L"] == pytest.approx(1.0)


def test_nltk_meteor_by_hand_and_records_what_ran():
    # 4 of 4 tokens match in one chunk: Fmean 1, penalty 0.5 * (1/4)^3, METEOR 1 - 1/128.
    result = caption_metrics(["heart size is normal"], ["Heart size is normal."], meteor="nltk")
    assert result["METEOR"] == pytest.approx(1 - 1 / 128)
    assert "NLTK" in result["implementations"]["METEOR"]
    assert result["implementations"]["BLEU"].startswith("pycocoevalcap")


@pytest.mark.slow
@needs_java
def test_java_meteor_scores_identical_corpus_one():
    same = caption_metrics(REPORTS, REPORTS, meteor="java")
    partial = caption_metrics(REPORTS, REPORTS[::-1], meteor="java")
    assert same["METEOR"] == pytest.approx(1.0) and same["errors"] == {}
    assert 0.0 < partial["METEOR"] < 1.0


def test_caption_input_errors():
    with pytest.raises(InputError, match="field 'references'"):
        caption_metrics(["a", "b"], ["a"])
    with pytest.raises(InputError, match="record 1: field 'references'"):
        caption_metrics(["a", "b"], [["a"], []])
    with pytest.raises(InputError, match="unknown tokenizer"):
        caption_metrics(["a"], ["a"], tokenizer="spacy")


def test_python_tokenizer_follows_ptb_conventions():
    assert ptb_tokens("No pleural effusion. Heart (normal).") == [
        "no", "pleural", "effusion", "heart", "-lrb-", "normal", "-rrb-"]
    assert ptb_tokens("Unchanged vs. prior, e.g. T8.. The patient's No. 4 rib.") == [
        "unchanged", "vs.", "prior", "e.g.", "t8", "the", "patient", "'s", "no.", "4", "rib"]
    assert ptb_tokens("Cannot exclude effusion at 3 p.m.") == ["can", "not", "exclude", "effusion", "at", "3", "p.m."]


@needs_java
def test_python_tokenizer_agrees_with_stanford_ptb():
    texts = [
        "Normal chest x-XXXX. Heart size is 5.5 cm. No focal consolidation!",
        "Stable vs. prior CT. Compared with the patient's \"old\" film: no effusion -- unchanged.",
        "Right-sided PICC line tip at cavoatrial junction... No. 4 rib fracture (healed); e.g. T8.",
        "",
    ]
    assert [ptb_tokenize(text) for text in texts] == ptb_tokenize_java(texts)


# --- classification --------------------------------------------------------------------------

NAN = float("nan")
Y_TRUE = np.array([
    # A  B  C  D
    [1, 1, 0, 1],
    [0, 1, 0, NAN],
    [1, 0, 0, 0],
    [0, 0, 0, NAN],
    [1, 0, 0, 0],
    [0, 1, 0, 1],
])
Y_SCORE = np.array([
    [0.9, 0.6, 0.7, 0.2],
    [0.8, 0.4, 0.1, 0.9],
    [0.7, 0.4, 0.1, 0.6],
    [0.3, 0.2, 0.1, 0.9],
    [0.2, 0.5, 0.1, 0.1],
    [0.1, 0.1, 0.1, 0.8],
])


def test_auroc_by_hand():
    # A: positives {.9, .7, .2} vs negatives {.8, .3, .1}: 3 + 2 + 1 of 9 pairs ordered = 2/3.
    # B: positives {.6, .4, .1} vs negatives {.4, .2, .5}: 3 + (0.5 tie + 1) + 0 = 4.5 of 9 = 1/2.
    # C: only negatives: undefined, excluded from the mean.
    # D: NaN rows dropped; positives {.2, .8} vs negatives {.6, .1}: 1 + 2 of 4 = 3/4.
    result = classification_metrics(Y_TRUE, Y_SCORE, ["A", "B", "C", "D"])
    assert result["auroc"] == {"A": pytest.approx(2 / 3), "B": 0.5, "C": None, "D": 0.75}
    assert result["auroc_excluded"] == ["C"]
    assert result["mean_auroc"] == pytest.approx((2 / 3 + 0.5 + 0.75) / 3)


def test_f1_micro_and_macro_by_hand():
    # Threshold 0.5.  A: TP 2, FP 1, FN 1 -> F1 4/6.  B: TP 1, FP 1, FN 2 -> 2/5.
    # C: FP 1 only -> 0.  D (rows 1, 3 unknown, their 0.9 scores ignored): TP 1, FP 1, FN 1 -> 1/2.
    # micro: TP 4, FP 4, FN 4 -> 8 / 16 = 0.5;  macro: (2/3 + 2/5 + 0 + 1/2) / 4.
    result = classification_metrics(Y_TRUE, Y_SCORE, ["A", "B", "C", "D"], threshold=0.5)
    assert result["f1"] == {"A": pytest.approx(2 / 3), "B": pytest.approx(0.4), "C": 0.0, "D": 0.5}
    assert result["micro_f1"] == pytest.approx(0.5)
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0.4 + 0.0 + 0.5) / 4)


def test_classification_rejects_bad_labels():
    bad = Y_TRUE.copy()
    bad[4, 2] = 2
    with pytest.raises(InputError, match="record 4: field 'y_true'"):
        classification_metrics(bad, Y_SCORE, ["A", "B", "C", "D"])
    with pytest.raises(InputError, match="field 'names'"):
        classification_metrics(Y_TRUE, Y_SCORE, ["A", "B"])


# --- VQA -------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, normal", [
    ("Yes", "yes"),
    ("The left lung.", "left lung"),
    ("Two", "2"),
    ("1,000", "1000"),
    ("2.5 cm", "2.5 cm"),
    ("left-sided", "left sided"),
    ("  an   effusion!", "effusion"),
    ("T2_weighted MRI", "t2 weighted mri"),
])
def test_answer_normalisation(raw, normal):
    assert normalize_answer(raw) == normal


def test_vqa_accuracy_by_type():
    result = vqa_accuracy(
        ["Yes", "the left lung", "two", "no", "CT"],
        ["yes", "Left lung.", ["2", "two lesions"], "yes", "MRI"],
        ["CLOSED", "OPEN", "open", "closed", "open"],
    )
    assert result == {"open": pytest.approx(2 / 3), "closed": 0.5, "overall": 0.6, "n_open": 3, "n_closed": 2}


def test_vqa_rejects_unknown_answer_type():
    with pytest.raises(InputError, match="record 1: field 'answer_types'"):
        vqa_accuracy(["yes", "no"], ["yes", "no"], ["closed", "other"])


# --- clinical efficacy -----------------------------------------------------------------------

CE_NAMES = ["X", "Y", "Z"]
CE_PRED = np.array([[1, -1, NAN], [0, 1, -1], [1, NAN, 0]])
CE_REF = np.array([[1, 1, 0], [-1, 1, NAN], [NAN, -1, 1]])


def test_clinical_efficacy_uncertain_negative_by_hand():
    # present: pred {X}, {Y}, {X};  ref {X, Y}, {Y}, {Z}.
    # X: TP 1 FP 1 FN 0;  Y: TP 1 FP 0 FN 1;  Z: TP 0 FP 0 FN 1.  Pooled TP 2 FP 1 FN 2.
    result = clinical_efficacy(CE_PRED, CE_REF, "uncertain_negative", CE_NAMES)
    assert result["policy"] == "uncertain_negative"
    assert result["precision_micro"] == pytest.approx(2 / 3)
    assert result["recall_micro"] == pytest.approx(0.5)
    assert result["f1_micro"] == pytest.approx(4 / 7)
    assert result["precision_macro"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert result["f1_macro"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    # per report: F1 2/3, 1, 0.
    assert result["f1_example"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert result["per_class"]["Y"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}


def test_clinical_efficacy_uncertain_positive_by_hand():
    # present: pred {X, Y}, {Y, Z}, {X};  ref {X, Y}, {X, Y}, {Y, Z}.
    # X: TP 1 FP 1 FN 1;  Y: TP 2 FP 0 FN 1;  Z: TP 0 FP 1 FN 1.  Pooled TP 3 FP 2 FN 3.
    result = clinical_efficacy(CE_PRED, CE_REF, "uncertain_positive", CE_NAMES)
    assert result["precision_micro"] == pytest.approx(3 / 5)
    assert result["recall_micro"] == pytest.approx(3 / 6)
    assert result["f1_micro"] == pytest.approx(6 / 11)
    assert result["recall_macro"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert result["f1_macro"] == pytest.approx((0.5 + 0.8 + 0) / 3)
    assert result["f1_example"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_clinical_efficacy_both_and_defaults_to_the_chexpert_classes():
    both = clinical_efficacy_both(CE_PRED, CE_REF, CE_NAMES)
    assert [both[p]["policy"] for p in both] == ["uncertain_negative", "uncertain_positive"]
    labels = np.zeros((2, 14))
    labels[0, 3] = 1
    result = clinical_efficacy(labels, labels)
    assert len(result["per_class"]) == 14 and result["f1_micro"] == 1.0
    with pytest.raises(InputError, match="14 classes"):
        clinical_efficacy(CE_PRED, CE_REF)
    with pytest.raises(InputError, match="unknown policy"):
        clinical_efficacy(CE_PRED, CE_REF, "uncertain_ignore", CE_NAMES)


def test_clinical_efficacy_from_texts_uses_the_labeler(monkeypatch):
    def label_texts(texts):
        labels = np.full((len(texts), 14), np.nan)
        for row, text in enumerate(texts):
            labels[row, 9] = -1 if "possible" in text else (1 if "effusion" in text else 0)
        return labels

    fake = types.ModuleType("kg.label")
    fake.label_texts = label_texts
    monkeypatch.setitem(sys.modules, "kg.label", fake)
    predictions = ["possible effusion", "clear lungs"]
    references = ["left effusion", "clear lungs"]
    negative = clinical_efficacy_from_texts(predictions, references)
    both = clinical_efficacy_from_texts(predictions, references, policy="both")
    assert negative["recall_micro"] == 0.0 and negative["labeler"].endswith("label_texts")
    assert both["uncertain_positive"]["f1_micro"] == 1.0


# --- tables and files ------------------------------------------------------------------------

def test_metrics_table_renders_rows_columns_and_missing_values():
    table = metrics_table(
        {"MOTOR": {"BLEU-1": 0.41234, "CIDEr": None, "n": 10, "tokenizer": "x"},
         "w/o GK": {"BLEU-1": 0.4, "CIDEr": float("nan"), "n": 10}},
        digits=2, row_header="model",
    )
    assert table == (
        "| model | BLEU-1 | CIDEr | n |\n"
        "|:---|---:|---:|---:|\n"
        "| MOTOR | 0.41 | – | 10 |\n"
        "| w/o GK | 0.40 | – | 10 |\n"
    )


def test_metrics_table_reaches_into_nested_results():
    both = clinical_efficacy_both(CE_PRED, CE_REF, CE_NAMES)
    table = metrics_table({"run": both}, columns={"uncertain_negative.f1_micro": "F1 (U→0)",
                                                  "uncertain_positive.f1_micro": "F1 (U→1)"})
    assert table.splitlines()[2] == f"| run | {4 / 7:.3f} | {6 / 11:.3f} |"


def test_write_metrics_is_strict_json_and_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics(path, {"a": float("nan"), "b": np.float32(0.5), "c": np.array([1, 2])})
    assert json.loads(path.read_text()) == {"a": None, "b": 0.5, "c": [1, 2]}
    before = path.read_text()
    with pytest.raises(TypeError):
        write_metrics(path, {"a": object()})
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
