"""The RadGraph-XL agreement benchmark reads labels through kg.radgraph_labels and names bad ones."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_radgraph_xl.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("eval_radgraph_xl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script loads
    spec.loader.exec_module(module)
    return module


def _record(text: str, entities: dict) -> dict:
    return {"text": text, "entities": entities}


def test_xl_labels_are_scored_under_their_coarse_label() -> None:
    bench = _load_benchmark()
    entities = {
        "1": {"tokens": "effusion", "label": "Observation::definitely absent", "relations": [["located_at", "2"]]},
        "2": {"tokens": "pleural", "label": "Anatomy::uncertain", "relations": []},
        "3": {"tokens": "2 cm", "label": "Observation::measurement::definitely present", "relations": []},
    }
    found, relations = bench.report_sets(entities, "r1")
    assert found == {("effusion", "OBS-DA"): 1, ("pleural", "ANAT-DP"): 1, ("2 cm", "OBS-DP"): 1}
    assert relations == {("effusion", "OBS-DA", "located_at", "pleural", "ANAT-DP"): 1}


def test_unknown_label_stops_the_run_naming_file_report_and_entity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _load_benchmark()
    data = tmp_path / "xl.json"
    data.write_text(json.dumps({
        "7": _record("No effusion .", {"1": {"tokens": "effusion", "label": "Observation::probable",
                                             "relations": []}}),
    }), encoding="utf-8")
    assert bench.main(["--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert str(data) in err and "'7'" in err and "entity '1'" in err and "Observation::probable" in err
