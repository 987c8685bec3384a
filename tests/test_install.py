"""The installed environment runs the NLP path, and the requirements keep it that way.

spaCy < 3.8 (what medspaCy takes on Python < 3.12) is compiled for NumPy 1; with NumPy 2 beside it
every NLP command dies on import ("numpy.dtype size changed"). The import runs in a fresh
interpreter so such a failure reads as a test failure with the message, not as a collection error.
"""
from __future__ import annotations

import configparser
import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXTRACT = """
import json
from kg.extract import extract_text
record = extract_text("r1", "No pleural effusion. Mild cardiomegaly.")
print(json.dumps(sorted((e.tokens, e.label) for e in record.entities.values())))
"""


def test_nlp_path_imports_and_extracts_in_the_installed_environment() -> None:
    result = subprocess.run([sys.executable, "-c", EXTRACT], capture_output=True, text=True, timeout=300,
                            cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    entities = json.loads(result.stdout.strip().splitlines()[-1])
    assert ["effusion", "OBS-DA"] in entities
    assert ["cardiomegaly", "OBS-DP"] in entities


def install_requires() -> list[Requirement]:
    config = configparser.ConfigParser()
    config.read(PROJECT_ROOT / "setup.cfg", encoding="utf-8")
    lines = config["options"]["install_requires"].splitlines()
    return [Requirement(line) for line in (line.strip() for line in lines) if line and not line.startswith("#")]


@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12", "3.13"])
def test_requirements_never_pair_spacy_for_numpy_1_with_numpy_2(python: str) -> None:
    environment = {"python_version": python, "python_full_version": f"{python}.0"}
    active = [r for r in install_requires() if r.marker is None or r.marker.evaluate(environment)]
    numpy = [r for r in active if r.name == "numpy"]
    spacy = [r for r in active if r.name == "spacy"]
    assert len(numpy) == 1 and len(spacy) == 1, "setup.cfg should state numpy and spaCy for every Python"
    allows_spacy_37 = spacy[0].specifier.contains(Version("3.7.5"))
    allows_spacy_38 = spacy[0].specifier.contains(Version("3.8.0"))
    allows_numpy_2 = numpy[0].specifier.contains(Version("2.0.0"))
    # spaCy 3.7 (thinc 8.2) is built for NumPy 1; spaCy 3.8 (thinc 8.3) for NumPy 2.
    assert not (allows_spacy_37 and allows_numpy_2)
    assert allows_spacy_37 or allows_spacy_38
