"""The rule-based report extractor: entities, certainty, relations, spans, outputs and back-ends."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from kg.cli import main as kg_main
from kg.errors import InputError, MissingResourceError
from kg.extract import Extractor, cached_extractor, extract_reports, extract_text, write_records
from kg.lexicon import LexiconError, load_lexicon
from kg.radgraph import parse_report
from kg.records import ENTITY_LABELS, RELATION_TYPES, Entity, ReportRecord


@pytest.fixture(scope="module")
def extractor() -> Extractor:
    return cached_extractor("rules")


def annotate(extractor: Extractor, text: str) -> ReportRecord:
    return extractor.annotate_text("r", text).record


def entity(record: ReportRecord, tokens: str, nth: int = 0) -> Entity:
    found = [e for e in record.entities.values() if e.tokens.lower() == tokens.lower()]
    assert len(found) > nth, f"no entity {tokens!r} in {[e.tokens for e in record.entities.values()]}"
    return found[nth]


def related(record: ReportRecord, source: Entity, relation: str) -> list[str]:
    return [record.entities[target].tokens for rel, target in source.relations if rel == relation]


# ------------------------------------------------------------------------------ certainty
def test_negation_covers_a_coordinated_list(extractor: Extractor) -> None:
    record = annotate(extractor, "No pleural effusion or pneumothorax.")
    assert entity(record, "effusion").label == "OBS-DA"
    assert entity(record, "pneumothorax").label == "OBS-DA"
    assert entity(record, "pleural").label == "ANAT-DP"
    assert related(record, entity(record, "effusion"), "located_at") == ["pleural"]


def test_negation_stops_at_the_sentence_end(extractor: Extractor) -> None:
    record = annotate(extractor, "No effusion. Mild cardiomegaly.")
    assert entity(record, "effusion").label == "OBS-DA"
    assert entity(record, "cardiomegaly").label == "OBS-DP"
    mild = entity(record, "mild")
    assert mild.label == "OBS-DP" and related(record, mild, "modify") == ["cardiomegaly"]


def test_blank_line_and_semicolon_end_a_negation(extractor: Extractor) -> None:
    assert entity(annotate(extractor, "No effusion\n\nCardiomegaly"), "cardiomegaly").label == "OBS-DP"
    assert entity(annotate(extractor, "No effusion; cardiomegaly"), "cardiomegaly").label == "OBS-DP"


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Opacity in the right lower lobe may represent pneumonia.", "pneumonia"),
        ("Pneumothorax cannot be excluded.", "pneumothorax"),
        ("Small effusion is not excluded.", "effusion"),
        ("Possible left lower lobe atelectasis.", "atelectasis"),
        ("Findings suspicious for pneumonia.", "pneumonia"),
    ],
)
def test_uncertainty_cues(extractor: Extractor, text: str, tokens: str) -> None:
    assert entity(annotate(extractor, text), tokens).label == "OBS-U"


def test_a_hedge_ends_a_negation_but_a_linking_cue_does_not(extractor: Extractor) -> None:
    record = annotate(extractor, "No pneumothorax, possible small effusion.")
    assert entity(record, "pneumothorax").label == "OBS-DA"
    assert entity(record, "effusion").label == "OBS-U"
    assert entity(record, "small").label == "OBS-U"  # a modifier takes its observation's certainty
    record = annotate(extractor, "There is no focal airspace opacity to suggest pneumonia.")
    assert entity(record, "pneumonia").label == "OBS-DA"


def test_a_hedge_read_backwards_stops_at_a_linking_cue(extractor: Extractor) -> None:
    # The finding before "suggests" is stated; only the readings after it are possibilities.
    record = annotate(extractor, "Large opacity suggests pneumonia with atelectasis, effusion cannot be excluded.")
    assert entity(record, "opacity").label == "OBS-DP"
    assert entity(record, "large").label == "OBS-DP"
    assert entity(record, "pneumonia").label == "OBS-U"
    assert entity(record, "effusion").label == "OBS-U"
    record = annotate(extractor, "Large opacity in the right lung, effusion cannot be excluded.")
    assert entity(record, "opacity").label == "OBS-U"  # without a linking cue the hedge reaches it


def test_observations_offered_as_alternatives_are_uncertain(extractor: Extractor) -> None:
    record = annotate(extractor, "Patchy atelectasis or pneumonia at the left base. Cardiomegaly and edema.")
    for tokens in ("patchy", "atelectasis", "pneumonia"):
        assert entity(record, tokens).label == "OBS-U", tokens
    assert {entity(record, t).label for t in ("cardiomegaly", "edema")} == {"OBS-DP"}  # "and" lists findings
    record = annotate(extractor, "The heart is either normal or mildly enlarged.")
    assert {entity(record, t).label for t in ("normal", "mildly", "enlarged")} == {"OBS-U"}
    record = annotate(extractor, "No edema or pneumothorax.")  # a negated list stays negated
    assert {entity(record, t).label for t in ("edema", "pneumothorax")} == {"OBS-DA"}


# ------------------------------------------------------------------------------ relations
def test_laterality_modifies_anatomy_and_size_modifies_the_observation(extractor: Extractor) -> None:
    record = annotate(extractor, "Small right pleural effusion.")
    assert related(record, entity(record, "small"), "modify") == ["effusion"]
    right = entity(record, "right")
    assert right.label == "ANAT-DP" and related(record, right, "modify") == ["pleural"]


def test_severity_adverb_and_anatomy_compose_a_finding(extractor: Extractor) -> None:
    record = annotate(extractor, "The heart is mildly enlarged.")
    enlarged = entity(record, "enlarged")
    assert related(record, enlarged, "located_at") == ["heart"]
    assert related(record, entity(record, "mildly"), "modify") == ["enlarged"]


def test_located_at_links_anatomy_in_the_same_sentence_only(extractor: Extractor) -> None:
    record = annotate(extractor, "Right lower lobe. Consolidation is present.")
    assert related(record, entity(record, "consolidation"), "located_at") == []
    record = annotate(extractor, "Consolidation in the right lower lobe.")
    assert related(record, entity(record, "consolidation"), "located_at") == ["lobe"]


def test_suggestive_of_links_finding_to_inferred_diagnosis(extractor: Extractor) -> None:
    record = annotate(extractor, "Opacity in the right lower lobe may represent pneumonia.")
    opacity = entity(record, "opacity")
    assert related(record, opacity, "suggestive_of") == ["pneumonia"]
    # the anatomy after "in" locates the opacity, not the later pneumonia
    assert related(record, opacity, "located_at") == ["lobe"]
    assert related(record, entity(record, "pneumonia"), "located_at") == []


def test_suggestive_of_stops_at_a_clause_break_except_for_further_possibilities(extractor: Extractor) -> None:
    record = annotate(extractor, "Opacities likely reflect atelectasis, but there is also a small effusion.")
    assert related(record, entity(record, "opacities"), "suggestive_of") == ["atelectasis"]
    assert entity(record, "effusion").label == "OBS-DP"
    # a diagnosis offered after the break is one more thing the opacities may be
    record = annotate(extractor, "Opacities likely reflect atelectasis, although pneumonia cannot be excluded.")
    assert related(record, entity(record, "opacities"), "suggestive_of") == ["atelectasis", "pneumonia"]
    assert entity(record, "pneumonia").label == "OBS-U"


def test_a_second_reading_of_a_finding_keeps_the_finding_as_source(extractor: Extractor) -> None:
    record = annotate(extractor, "Linear opacities may represent scarring or could represent pneumonia.")
    assert related(record, entity(record, "opacities"), "suggestive_of") == ["scarring", "pneumonia"]
    assert related(record, entity(record, "scarring"), "suggestive_of") == []


def test_modifier_without_an_observation_is_dropped(extractor: Extractor) -> None:
    record = annotate(extractor, "Mild. Moderate.")
    assert record.entities == {}


def test_a_change_word_modifies_the_position_it_describes(extractor: Extractor) -> None:
    record = annotate(extractor, "The pigtail catheter is in unchanged position.")
    assert related(record, entity(record, "unchanged"), "modify") == ["position"]
    assert entity(record, "position").label == "OBS-DP"


def test_a_change_word_without_an_observation_is_one(extractor: Extractor) -> None:
    record = annotate(extractor, "Cardiac contours are unchanged. Worse on the right.")
    unchanged = entity(record, "unchanged")
    assert unchanged.label == "OBS-DP" and related(record, unchanged, "located_at") == ["Cardiac"]
    assert entity(record, "right").label == "ANAT-DP"  # a location with nothing to modify is anatomy


# ------------------------------------------------------------------ RadGraph's entity layout
def test_anatomy_words_are_entities_modifying_the_head(extractor: Extractor) -> None:
    record = annotate(extractor, "Atelectasis in the right lower lobe. Heart size is normal. Low lung volumes.")
    lobe = entity(record, "lobe")
    assert related(record, entity(record, "right"), "modify") == ["lobe"]
    assert related(record, entity(record, "lower"), "modify") == ["lobe"]
    assert related(record, entity(record, "atelectasis"), "located_at") == ["lobe"]
    assert lobe.relations == []
    # part words ("size", "volumes") modify the anatomy before them, which the observation locates
    assert related(record, entity(record, "size"), "modify") == ["Heart"]
    assert related(record, entity(record, "normal"), "located_at") == ["Heart"]
    assert related(record, entity(record, "volumes"), "modify") == ["lung"]
    assert related(record, entity(record, "Low"), "located_at") == ["lung"]


def test_a_lexicon_phrase_is_cut_into_its_terms(extractor: Extractor) -> None:
    record = annotate(extractor, "No acute cardiopulmonary process. Mild pulmonary vascular congestion.")
    process = entity(record, "process")
    assert process.label == "OBS-DA" and related(record, process, "located_at") == ["cardiopulmonary"]
    acute = entity(record, "acute")
    assert acute.label == "OBS-DA" and related(record, acute, "modify") == ["process"]
    assert related(record, entity(record, "congestion"), "located_at") == ["vascular"]
    assert related(record, entity(record, "pulmonary"), "modify") == ["vascular"]


def test_a_device_name_stays_one_entity(extractor: Extractor) -> None:
    # A device named by the lexicon as one phrase is not cut at its device-kind word, while a
    # device kind before a bare device word still modifies it.
    record = annotate(extractor, "Orogastric tube ends in the stomach. Central line tip in the SVC.")
    assert entity(record, "Orogastric tube").label == "OBS-DP"
    assert entity(record, "Central line").label == "OBS-DP"
    assert not [e for e in record.entities.values() if e.tokens.lower() in ("orogastric", "central", "tube", "line")]
    record = annotate(extractor, "Nasogastric tube ends in the stomach.")
    assert related(record, entity(record, "Nasogastric"), "modify") == ["tube"]


def test_anatomy_naming_the_imaging_study_is_no_entity(extractor: Extractor) -> None:
    record = annotate(extractor, "PA and lateral chest compared to prior: right chest tube. Single view of the chest.")
    assert [e.tokens for e in record.entities.values() if e.label == "ANAT-DP"] == ["right", "chest"]
    assert related(record, entity(record, "tube"), "located_at") == ["chest"]


# ---------------------------------------------------------------------- de-identification
def test_xxxx_tokens_make_no_entity_and_keep_sentences(extractor: Extractor) -> None:
    record = annotate(extractor, "Normal chest x-XXXX. XXXX XXXX XXXX. No pneumothorax. There are no XXXX of a pleural effusion.")
    assert all("xxxx" not in e.tokens.lower() for e in record.entities.values())
    assert "XXXX XXXX XXXX ." in record.text
    assert entity(record, "pneumothorax").label == "OBS-DA"
    assert entity(record, "effusion").label == "OBS-DA"


# ---------------------------------------------------------------------------- record format
SPAN_TEXTS = [
    "No pleural effusion or pneumothorax.",
    "Small right-sided pleural effusion.\n\nThe cardiomediastinal silhouette is enlarged; calcified granuloma, left upper lobe.",
    "Opacity in the right lower lobe may represent pneumonia. T-spine osteophytes.",
    "Low lung volumes with bibasilar atelectasis (left > right). Heart size is normal.",
]


@pytest.mark.parametrize("text", SPAN_TEXTS)
def test_spans_index_text_split_and_relations_are_valid(extractor: Extractor, text: str) -> None:
    record = annotate(extractor, text)
    words = record.text.split()
    assert record.text == " ".join(words)
    assert record.entities
    for ent in record.entities.values():
        assert 0 <= ent.start_ix <= ent.end_ix < len(words)
        assert ent.tokens == " ".join(words[ent.start_ix : ent.end_ix + 1])
        assert ent.label in ENTITY_LABELS
        for relation, target in ent.relations:
            assert relation in RELATION_TYPES and target in record.entities and target != ent.id
    spans = sorted((e.start_ix, e.end_ix) for e in record.entities.values())
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:])), "entities overlap"


def test_extraction_is_deterministic(extractor: Extractor) -> None:
    fresh = Extractor("rules")
    for text in SPAN_TEXTS:
        assert annotate(fresh, text).to_json() == annotate(extractor, text).to_json()


def test_extract_text_uses_the_shared_extractor() -> None:
    record = extract_text("r9", "Mild cardiomegaly.")
    assert record.report_id == "r9" and record.text == "Mild cardiomegaly ."


# ---------------------------------------------------------------------------- corpus + output
def iu_csv(tmp_path: Path) -> Path:
    path = tmp_path / "iu.csv"
    path.write_text(
        "uid,MeSH,Problems,image,indication,comparison,findings,impression\n"
        "1,normal,normal,PA,,,The lungs are clear. No effusion.,No acute disease.\n"
        "2,Cardiomegaly,Cardiomegaly,PA,,,Heart is enlarged,Cardiomegaly.\n"
        "3,normal,normal,PA,,,,\n",
        encoding="utf-8",
    )
    return path


def test_extract_reports_reads_a_corpus(tmp_path: Path) -> None:
    records = list(extract_reports(iu_csv(tmp_path)))
    assert [r.report_id for r in records] == ["1", "2"]
    assert all(r.data_source == "IU-Xray" and r.data_split == "inference" for r in records)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_written_records_read_back_as_radgraph(tmp_path: Path, suffix: str) -> None:
    records = list(extract_reports(iu_csv(tmp_path)))
    out = tmp_path / f"out{suffix}"
    assert write_records(records, out) == 2
    if suffix == ".json":
        raw = json.loads(out.read_text(encoding="utf-8"))
        items = list(raw.items())
    else:
        items = [(d["report_id"], d) for d in map(json.loads, out.read_text(encoding="utf-8").splitlines())]
    for (report_id, raw_record), original in zip(items, records):
        (parsed,) = parse_report(report_id, raw_record)
        assert parsed.text == original.text
        assert {k: (e.tokens, e.label, e.start_ix, e.end_ix, e.relations) for k, e in parsed.entities.items()} == {
            k: (e.tokens, e.label, e.start_ix, e.end_ix, e.relations) for k, e in original.entities.items()
        }


def test_failed_write_leaves_the_existing_output_untouched(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "No effusion."}\n{"id": "b", "text": \n', encoding="utf-8")
    out = tmp_path / "out.json"
    out.write_text("previous", encoding="utf-8")
    with pytest.raises(InputError, match="line 2"):
        write_records(extract_reports(bad), out)
    assert out.read_text(encoding="utf-8") == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "out.json"]


def test_output_extension_is_checked(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"\.json or \.jsonl"):
        write_records([], tmp_path / "out.csv")


def test_cli_extract_writes_json_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    assert kg_main(["extract", "--input", str(iu_csv(tmp_path)), "--out", str(out)]) == 0
    assert sorted(json.loads(out.read_text(encoding="utf-8"))) == ["1", "2"]
    assert "skipped 1 without text" in capsys.readouterr().out
    missing = tmp_path / "nope.csv"
    assert kg_main(["extract", "--input", str(missing), "--out", str(out)]) == 1
    assert str(missing) in capsys.readouterr().err


# -------------------------------------------------------------------------------- back-ends
@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_stanza_without_local_resources_is_a_clear_error(tmp_path: Path, no_network: None) -> None:
    with pytest.raises(InputError, match="--stanza-dir"):
        Extractor("stanza")
    with pytest.raises(MissingResourceError) as err:
        Extractor("stanza", stanza_dir=tmp_path)
    message = str(err.value)
    assert "stanza" in message.lower() and "\n" not in message


def test_scispacy_without_the_model_is_a_clear_error(no_network: None) -> None:
    with pytest.raises(InputError, match="--scispacy-model"):
        Extractor("scispacy")
    with pytest.raises(MissingResourceError) as err:
        Extractor("scispacy", scispacy_model="en_core_sci_not_installed")
    message = str(err.value)
    assert "scispacy" in message.lower() and "\n" not in message


def test_unknown_backend_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown extraction backend"):
        Extractor("radgraph")


# ---------------------------------------------------------------------------------- lexicon
def test_every_gk_finding_and_chexpert_class_has_terms() -> None:
    lexicon = load_lexicon()
    concepts = set().union(*(t.concepts for t in lexicon.terms.values()), *(c.concepts for c in lexicon.compositions))
    assert {f"gk:{f}" for f in lexicon.gk_findings} - {"gk:normal"} <= concepts
    assert {c.name for c in lexicon.chexpert} - {"No Finding"} <= concepts


@pytest.mark.parametrize(
    ("body", "record", "field"),
    [
        ("observations:\n  - terms: [blob]\n    concepts: [gk:blob]\n", "observations[0]", "concepts"),
        ("anatomy:\n  - terms: [lobe x]\n    organ: liver\n", "anatomy[0]", "organ"),
        ("context:\n  negated:\n    forward: [no]\n", "context.negated", "forward"),
        ("compositions:\n  - observations: [huge]\n    anatomy: [heart]\n    concepts: [Edema]\n", "compositions[0]", "observations"),
    ],
)
def test_lexicon_errors_name_file_entry_and_field(tmp_path: Path, body: str, record: str, field: str) -> None:
    path = tmp_path / "lexicon.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(LexiconError) as err:
        load_lexicon(lexicon_path=path)
    assert err.value.file == str(path) and err.value.record == record and err.value.field == field


def test_a_term_with_two_kinds_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.yaml"
    path.write_text("anatomy:\n  - terms: [effusion]\n    organ: pleural\n", encoding="utf-8")
    with pytest.raises(LexiconError, match="'effusion' is OBS"):
        load_lexicon(lexicon_path=path)


def test_coordinated_anatomy_shares_its_part_word(extractor: Extractor) -> None:
    record = annotate(extractor, "Cardiac and mediastinal contours are unchanged. Borderline size of the cardiac silhouette.")
    contours = entity(record, "contours")
    assert sorted(related(record, contours, "modify")) == ["Cardiac", "mediastinal"]
    assert sorted(related(record, entity(record, "unchanged"), "located_at")) == ["Cardiac", "mediastinal"]
    assert related(record, entity(record, "size"), "modify") == ["cardiac"]


def test_a_predicate_modifier_describes_the_subject(extractor: Extractor) -> None:
    record = annotate(extractor, "The effusion seen in the left lung base is unchanged.")
    assert related(record, entity(record, "unchanged"), "modify") == ["effusion"]


def test_a_negated_pseudo_cue_negates_its_own_last_word_only(extractor: Extractor) -> None:
    record = annotate(extractor, "No change in the small pleural effusion.")
    assert entity(record, "change").label == "OBS-DA"
    assert entity(record, "effusion").label == "OBS-DP"


def test_a_predicate_descriptor_modifies_the_observation_it_describes(extractor: Extractor) -> None:
    record = annotate(extractor, "Small bilateral pleural effusions have increased. Support devices remain in place.")
    assert related(record, entity(record, "increased"), "modify") == ["effusions"]
    assert related(record, entity(record, "in place"), "modify") == ["devices"]
    # Another entity between them is the descriptor's own subject.
    record = annotate(extractor, "The effusion is small and the heart size is increased.")
    assert related(record, entity(record, "increased"), "modify") == []


def test_a_disease_named_by_organ_is_cut_as_anatomy_and_observation(extractor: Extractor) -> None:
    record = annotate(extractor, "Mild congestive heart failure. Pulmonary hypertension. Increased interstitial markings.")
    failure = entity(record, "failure")
    assert related(record, failure, "located_at") == ["heart"]
    assert related(record, entity(record, "congestive"), "modify") == ["failure"]
    assert related(record, entity(record, "hypertension"), "located_at") == ["Pulmonary"]
    assert related(record, entity(record, "markings"), "located_at") == ["interstitial"]


def test_obscured_is_an_observation_not_a_hedge(extractor: Extractor) -> None:
    record = annotate(extractor, "The catheter tip is obscured.")
    assert entity(record, "obscured").label == "OBS-DP"
    assert entity(record, "tip").label == "OBS-DP"


def test_tissue_and_bone_words_are_anatomy_of_their_phrase(extractor: Extractor) -> None:
    record = annotate(extractor, "Subcutaneous emphysema. No acute bony abnormality.")
    emphysema = entity(record, "emphysema")
    assert related(record, emphysema, "located_at") == ["Subcutaneous"]
    abnormality = entity(record, "abnormality")
    assert abnormality.label == "OBS-DA" and related(record, abnormality, "located_at") == ["bony"]
    # The cut keeps the whole phrase's meaning: subcutaneous emphysema is no lung emphysema.
    mentions = cached_extractor("rules").annotate_text("r", "Subcutaneous emphysema.").mentions
    assert all("Emphysema" not in m.labels and "gk:emphysema" not in m.labels for m in mentions)


def test_below_locates_like_a_location_word(extractor: Extractor) -> None:
    record = annotate(extractor, "The nasogastric tube courses below the diaphragm.")
    below = entity(record, "below")
    assert below.label == "ANAT-DP" and related(record, below, "modify") == ["diaphragm"]


def test_lobar_locates_and_a_device_cut_only_by_anatomy(extractor: Extractor) -> None:
    record = annotate(extractor, "No lobar pneumonia. Sternal wires are intact.")
    assert related(record, entity(record, "pneumonia"), "located_at") == ["lobar"]
    assert entity(record, "lobar").label == "ANAT-DP"
    assert related(record, entity(record, "wires"), "located_at") == ["Sternal"]
