"""RadGraph-XL tokenisation: raw text split as the radgraph package does, tokenised text kept."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from kg.extract import cached_extractor
from kg.report_tokens import is_radgraph_tokenised, radgraph_tokens

RADGRAPH_XL_DEV = (
    Path(os.environ.get("MOTOR_KG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    / "data" / "radgraph_xl" / "dev.json"
)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("No pleural effusion.", ["No", "pleural", "effusion", "."]),
        ("Patient can't  inhale\n fully", ["Patient", "can", "'", "t", "inhale", "fully"]),
        ("Right-sided x-ray, 2.5 cm", ["Right", "-", "sided", "x", "-", "ray", ",", "2", ".", "5", "cm"]),
        # the pairs wordpunct_tokenize keeps together and RadGraph-XL separates
        ("(small).", ["(", "small", ")", "."]),
        ("Rose by 20%. Then 5%, (10%)", ["Rose", "by", "20", "%", ".", "Then", "5", "%", ",", "(", "10", "%", ")"]),
        ("called 'stable.'", ["called", "'", "stable", ".", "'"]),
        # other punctuation runs stay one token, as in RadGraph-XL's own texts
        ("Dr. ___ on ___.: cannot", ["Dr", ".", "___", "on", "___", ".:", "cannot"]),
    ],
)
def test_raw_text_is_tokenised_as_radgraph_xl(text: str, tokens: list[str]) -> None:
    assert radgraph_tokens(text) == tokens


def test_tokenising_is_idempotent() -> None:
    rng = random.Random(0)
    alphabet = "ab1_ .,;:()%'\"-/\n"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(2000)]
    texts += ["Effusion (5%).' Stable.'", "a %)., b ).' c %.)", "___ .: can not"]
    for text in texts:
        once = " ".join(radgraph_tokens(text))
        assert radgraph_tokens(once) == once.split(), text
        assert is_radgraph_tokenised(once)


def test_tokenised_input_keeps_its_own_text() -> None:
    text = "Patient cannot be assessed ; Dr . ___ ___ was notified .: no pneumothorax ( small ) ."
    record = cached_extractor("rules").annotate_text("r", text).record
    assert record.text == text
    pneumothorax = next(e for e in record.entities.values() if e.tokens == "pneumothorax")
    assert text.split()[pneumothorax.start_ix] == "pneumothorax"
    assert pneumothorax.label == "OBS-DA"


def test_raw_text_record_is_its_radgraph_tokens() -> None:
    record = cached_extractor("rules").annotate_text("r", "Small left-sided effusion (5%).\n\nCannot exclude pneumonia.").record
    assert record.text.split() == radgraph_tokens("Small left-sided effusion (5%).\n\nCannot exclude pneumonia.")


def test_a_decimal_point_does_not_end_a_sentence() -> None:
    record = cached_extractor("rules").annotate_text("r", "No 1.5 cm nodule.").record
    assert next(e for e in record.entities.values() if e.tokens == "nodule").label == "OBS-DA"


@pytest.mark.needs_shared
def test_radgraph_xl_texts_come_back_unchanged() -> None:
    if not RADGRAPH_XL_DEV.is_file():
        pytest.skip(f"RadGraph-XL development file not found at {RADGRAPH_XL_DEV} (set MOTOR_KG_SHARED)")
    reports = json.loads(RADGRAPH_XL_DEV.read_text(encoding="utf-8"))
    texts = [r["text"] for r in reports.values() if r["text"].strip()]
    assert all(is_radgraph_tokenised(t) for t in texts)
    extractor = cached_extractor("rules")
    for text in texts:
        assert extractor.annotate_text("r", text).record.text == text
