"""UMLS subgraphs: RRF reading and filters, mention linking, two-stage selection, atomic store update.

The fixture release in ``fixtures/umls`` is invented (CUIs C9000001..C9000032); its rows are
chosen so that every filter and selection rule changes the result.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import pytest

from kg.build import build_store
from kg.errors import InputError, MissingResourceError
from kg.linking import NORMALISE_SQL, Concept, ExactLinker, normalise, scispacy_available
from kg.records import Entity, ReportRecord
from kg.store import open_store, read_metadata
from kg.umls import (
    MRCONSO_FIELDS,
    MRSTY_FIELDS,
    build_umls,
    concepts_for_linking,
    corpus_mentions,
    read_relations,
    read_release,
    release_files,
)

RELEASE = Path(__file__).parent / "fixtures" / "umls"
CHEST_VOCABULARIES = ["MSH", "SNOMEDCT_US"]

# report id -> (text, [(entity id, token, label, [(relation, target id)])]); spans are single tokens.
REPORTS = {
    "r1": ("Small left pleural effusion . No pneumothorax .",
           [("1", "pleural", "ANAT-DP", []), ("2", "effusion", "OBS-DP", [("located_at", "1")]),
            ("3", "pneumothorax", "OBS-DA", [])]),
    "r2": ("Heart size is enlarged consistent with cardiomegaly . Pacemaker in place .",
           [("1", "Heart", "ANAT-DP", []), ("2", "cardiomegaly", "OBS-DP", [("located_at", "1")]),
            ("3", "Pacemaker", "OBS-DP", [])]),
    "r3": ("Mild pulmonary edema . Lungs otherwise clear .",
           [("1", "pulmonary", "ANAT-DP", []), ("2", "edema", "OBS-DP", [("located_at", "1")]),
            ("3", "Lungs", "ANAT-DP", [])]),
    "r4": ("Right lower lobe consolidation concerning for pneumonia .",
           [("1", "lower", "ANAT-DP", [("modify", "2")]), ("2", "lobe", "ANAT-DP", []),
            ("3", "consolidation", "OBS-DP", [("located_at", "2"), ("suggestive_of", "4")]),
            ("4", "pneumonia", "OBS-U", [])]),
    "r5": ("Healed rib fracture .",
           [("1", "rib", "ANAT-DP", []), ("2", "fracture", "OBS-DP", [("located_at", "1")])]),
    "r6": ("Hyperinflation with basilar collapse .",
           [("1", "Hyperinflation", "OBS-DP", []), ("2", "collapse", "OBS-DP", [])]),
}

# Hand-derived from the fixture: MRREL rows whose two concepts the exact linker finds in REPORTS,
# read as (CUI2, RELA or REL, CUI1); count = reports mentioning both concepts.
EXPECTED_TRIPLETS = [
    ("C9000004", "PAR", "C9000020", "Lung", "Lower lobe of lung", 0),
    ("C9000004", "finding_site_of", "C9000007", "Lung", "Atelectasis", 0),
    ("C9000004", "finding_site_of", "C9000009", "Lung", "Pneumonia", 0),
    ("C9000004", "finding_site_of", "C9000010", "Lung", "Pulmonary edema", 1),
    ("C9000005", "has_location", "C9000006", "Cardiomegaly", "Heart", 1),
    ("C9000006", "location_of", "C9000005", "Heart", "Cardiomegaly", 1),
    ("C9000006", "location_of", "C9000026", "Heart", "Cardiac pacemaker", 1),
    ("C9000008", "manifestation_of", "C9000009", "Consolidation of lung", "Pneumonia", 1),
    ("C9000011", "inverse_isa", "C9000010", "Edema", "Pulmonary edema", 1),
    ("C9000017", "finding_site_of", "C9000016", "Rib", "Rib fracture", 1),
    ("C9000018", "inverse_isa", "C9000016", "Fracture", "Rib fracture", 1),
]
EXPECTED_MENTIONS = [
    ("r1", "pleural effusion", "C9000001", 1.0), ("r1", "pneumothorax", "C9000003", 1.0),
    ("r2", "Heart", "C9000006", 1.0), ("r2", "Pacemaker", "C9000026", 1.0),
    ("r2", "cardiomegaly", "C9000005", 1.0), ("r3", "Lungs", "C9000004", 1.0),
    ("r3", "edema", "C9000011", 1.0), ("r3", "pulmonary edema", "C9000010", 1.0),
    ("r4", "consolidation", "C9000008", 1.0), ("r4", "lower lobe", "C9000020", 1.0),
    ("r4", "pneumonia", "C9000009", 1.0), ("r5", "fracture", "C9000018", 1.0),
    ("r5", "rib", "C9000017", 1.0), ("r5", "rib fracture", "C9000016", 1.0),
    ("r6", "collapse", "C9000003", 1.0), ("r6", "collapse", "C9000007", 1.0),
]


def make_records() -> list[ReportRecord]:
    records = []
    for report_id, (text, spans) in REPORTS.items():
        words = text.split()
        entities = {
            eid: Entity(eid, token, label, words.index(token), words.index(token), list(relations))
            for eid, token, label, relations in spans
        }
        records.append(ReportRecord(report_id, text, entities, data_source="synthetic", data_split="train"))
    return records


@pytest.fixture
def store(tmp_path) -> Path:
    path = tmp_path / "corpus.duckdb"
    build_store(make_records(), path, source="reports", inputs=[], options={}, progress=False)
    return path


@pytest.fixture
def release(tmp_path) -> Path:
    """A writable copy of the fixture release, for tests that corrupt it."""
    return Path(shutil.copytree(RELEASE, tmp_path / "release"))


def rrf_rows(name: str) -> list[list[str]]:
    """The fixture file split independently of the code under test."""
    return [line.rstrip("\n").split("|")[:-1] for line in (RELEASE / name).read_text().splitlines(keepends=True)]


def table(store: Path, name: str) -> list[tuple]:
    con = open_store(store)
    try:
        return con.execute(f"SELECT * FROM {name}").fetchall()
    finally:
        con.close()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- reading the release ---------------------------------------------------------------------------


def release_strings(**filters) -> set[tuple[str, str]]:
    con = duckdb.connect()
    read_release(con, RELEASE, **filters)
    return set(con.execute("SELECT cui, str FROM umls_release_strings").fetchall())


def test_only_english_unsuppressed_strings_are_read():
    col = {name: i for i, name in enumerate(MRCONSO_FIELDS)}
    expected = {(r[col["CUI"]], r[col["STR"]]) for r in rrf_rows("MRCONSO.RRF")
                if r[col["LAT"]] == "ENG" and r[col["SUPPRESS"]] not in ("O", "E", "Y")}
    strings = release_strings()
    assert strings == expected
    names = {s for _, s in strings}
    assert "Derrame pleural" not in names and "Poumon" not in names
    assert "Hyperinflation" not in names and "Hyperinflated lungs" not in names
    assert "Heart failure" in names


def test_vocabulary_filter_keeps_only_those_sources():
    col = {name: i for i, name in enumerate(MRCONSO_FIELDS)}
    msh = {(r[col["CUI"]], r[col["STR"]]) for r in rrf_rows("MRCONSO.RRF")
           if r[col["LAT"]] == "ENG" and r[col["SUPPRESS"]] == "N" and r[col["SAB"]] == "MSH"}
    assert release_strings(vocabularies=["MSH"]) == msh
    assert "Heart failure" not in {s for _, s in release_strings(vocabularies=CHEST_VOCABULARIES)}


def test_semantic_type_filter_keeps_concepts_of_those_types():
    col = {name: i for i, name in enumerate(MRSTY_FIELDS)}
    anatomy = {r[col["CUI"]] for r in rrf_rows("MRSTY.RRF") if r[col["TUI"]] == "T023"}
    cuis = {cui for cui, _ in release_strings(semantic_types=["T023"])}
    assert cuis == anatomy - {"C9000031"}  # C9000031 has French strings only


def test_preferred_name_is_the_umls_preferred_english_string():
    con = duckdb.connect()
    read_release(con, RELEASE)
    names = dict(con.execute("SELECT cui, str FROM umls_release_strings WHERE name_rank = 1").fetchall())
    assert names["C9000004"] == "Lung"  # TS=P, STT=PF, ISPREF=Y beats "Lungs" (STT=VO)
    assert names["C9000008"] == "Consolidation of lung"
    assert names["C9000026"] == "Cardiac pacemaker"


@pytest.mark.parametrize(
    ("file_name", "line", "mutate", "field"),
    [
        ("MRCONSO.RRF", 5, lambda l: "|".join(l.split("|")[:5]) + "|\n", "SUI"),
        ("MRCONSO.RRF", 63, lambda l: l.rstrip("\n") + "extra|\n", "CVF"),
        ("MRREL.RRF", 2, lambda l: l.rstrip("\n")[:-1] + "\n", "CVF"),
        ("MRSTY.RRF", 7, lambda l: "C9000007|T047\n", "STN"),
    ],
    ids=["too-few", "one-too-many", "no-trailing-bar", "short-mrsty"],
)
def test_malformed_line_names_file_line_and_field(release, file_name, line, mutate, field):
    path = release / file_name
    lines = path.read_text().splitlines(keepends=True)
    lines[line - 1] = mutate(lines[line - 1])
    path.write_text("".join(lines))
    con = duckdb.connect()
    with pytest.raises(InputError) as err:
        read_release(con, release)
        con.execute("CREATE TEMP TABLE umls_corpus_cuis AS SELECT DISTINCT cui FROM umls_release_strings")
        read_relations(con, release, "umls_corpus_cuis")
    message = str(err.value)
    assert message.startswith(str(path))
    assert f"record line {line}: field '{field}'" in message


def test_missing_release_file_says_what_a_release_holds(release):
    (release / "MRSTY.RRF").unlink()
    with pytest.raises(MissingResourceError, match=r"MRSTY\.RRF: not found.*MRCONSO\.RRF.*MRREL\.RRF"):
        release_files(release)


def test_release_files_accepts_the_release_root_above_meta(tmp_path):
    shutil.copytree(RELEASE, tmp_path / "2024AB" / "META")
    assert release_files(tmp_path / "2024AB")["MRREL.RRF"] == tmp_path / "2024AB" / "META" / "MRREL.RRF"


def test_filters_that_are_not_codes_are_rejected():
    with pytest.raises(InputError, match="field 'semantic_types'"):
        read_release(duckdb.connect(), RELEASE, semantic_types=["Disease"])
    with pytest.raises(InputError, match="no English, unsuppressed strings"):
        read_release(duckdb.connect(), RELEASE, vocabularies=["MSHSPA"])


# --- linking -----------------------------------------------------------------------------------------


def test_python_and_sql_normalisation_agree():
    samples = ["Pleural-Effusion (left)", "  x-ray\tfindings ", "Sjögren's  syndrome", "T2/T3", "", "--"]
    con = duckdb.connect()
    sql = NORMALISE_SQL.format(column="s")
    for sample in samples:
        assert con.execute(f"SELECT {sql} FROM (SELECT ? AS s)", [sample]).fetchall()[0][0] == normalise(sample)
    assert normalise("Pleural-Effusion (left)") == "pleural effusion left"


def test_exact_linker_matches_normalised_strings_and_keeps_ambiguity():
    linker = ExactLinker([("C1", "Pleural effusion"), ("C2", "Collapse"), ("C3", "collapse"), ("C4", "Lung")])
    links = linker.link(["pleural-effusion", "COLLAPSE", "lungs", ""])
    assert [[(l.cui, l.score) for l in ls] for ls in links] == [[("C1", 1.0)], [("C2", 1.0), ("C3", 1.0)], [], []]


def test_corpus_mentions_are_spans_plus_touching_related_pairs(store):
    con = open_store(store)
    try:
        mentions = corpus_mentions(con)
    finally:
        con.close()
    by_report = {}
    for report, mention in mentions:
        by_report.setdefault(report, set()).add(mention)
    assert by_report["r1"] == {"pleural", "effusion", "pleural effusion", "pneumothorax"}
    assert by_report["r2"] == {"Heart", "cardiomegaly", "Pacemaker"}  # related but not adjacent
    assert by_report["r4"] == {"lower", "lobe", "consolidation", "pneumonia", "lower lobe", "lobe consolidation"}


@pytest.mark.skipif(not scispacy_available(), reason="scispaCy / nmslib (the nlp extra) not installed")
def test_scispacy_linker_finds_fuzzy_matches_and_caches_its_index(store):
    summary = build_umls(store, RELEASE, vocabularies=CHEST_VOCABULARIES, linker="scispacy", progress=False)
    rows = table(store, "umls_mentions")
    assert {(r, m, c, score) for r, m, c, score in EXPECTED_MENTIONS} <= set(rows)  # exact strings score 1
    [(cui, score)] = [(c, s) for r, m, c, s in rows if (r, m) == ("r1", "effusion")]
    assert cui == "C9000001" and 0.7 < score < 1.0  # no such string; 3-grams of "Pleural effusion"
    cache = store.with_name(store.name + ".umls-linker")
    manifest = (cache / "manifest.json").read_bytes()
    again = build_umls(store, RELEASE, vocabularies=CHEST_VOCABULARIES, linker="scispacy", progress=False)
    assert (cache / "manifest.json").read_bytes() == manifest
    assert again == summary


# --- the two-stage subgraph in the store --------------------------------------------------------------


def test_build_umls_keeps_exactly_the_hand_computed_subgraph(store):
    summary = build_umls(store, RELEASE, vocabularies=CHEST_VOCABULARIES, linker="exact", progress=False)
    assert table(store, "umls_triplets") == EXPECTED_TRIPLETS
    assert table(store, "umls_mentions") == EXPECTED_MENTIONS
    concepts = {cui: (name, types) for cui, name, types in table(store, "umls_concepts")}
    assert set(concepts) == {m[2] for m in EXPECTED_MENTIONS}
    assert concepts["C9000008"] == ("Consolidation of lung", "T033")
    relations = table(store, "umls_relations")
    assert ("C9000007", "RO", "finding_site_of", "C9000004", "MSH") in relations
    assert ("C9000007", "RO", "finding_site_of", "C9000004", "SNOMEDCT_US") in relations
    assert ("C9000020", "PAR", None, "C9000004", "SNOMEDCT_US") in relations
    assert summary.triplets == len(EXPECTED_TRIPLETS) and summary.relations == len(relations) == 12
    assert summary.mentions == 22 and summary.linked_mentions == 15
    assert "15 of 22 mentions linked" in str(summary)


def test_vocabulary_and_type_filters_change_the_subgraph(store):
    build_umls(store, RELEASE, linker="exact", progress=False)
    triplets = {(h, r, t) for h, r, t, *_ in table(store, "umls_triplets")}
    assert triplets == {(h, r, t) for h, r, t, *_ in EXPECTED_TRIPLETS} | {("C9000004", "associated_with", "C9000001")}

    no_devices = ["T023", "T029", "T033", "T037", "T046", "T047", "T190"]
    build_umls(store, RELEASE, vocabularies=CHEST_VOCABULARIES, semantic_types=no_devices, linker="exact",
               progress=False)
    triplets = {(h, r, t) for h, r, t, *_ in table(store, "umls_triplets")}
    assert triplets == {(h, r, t) for h, r, t, *_ in EXPECTED_TRIPLETS} - {("C9000006", "location_of", "C9000026")}
    assert "C9000026" not in {cui for _, _, cui, _ in table(store, "umls_mentions")}


def test_metadata_records_source_inputs_and_options_idempotently(store):
    build_umls(store, RELEASE, vocabularies=CHEST_VOCABULARIES, linker="exact", progress=False)
    first = {name: table(store, name) for name in ("umls_concepts", "umls_relations", "umls_mentions",
                                                   "umls_triplets", "metadata")}
    build_umls(store, RELEASE, vocabularies=CHEST_VOCABULARIES, linker="exact", progress=False)
    assert {name: table(store, name) for name in first} == first
    con = open_store(store)
    try:
        metadata = read_metadata(con)
    finally:
        con.close()
    assert metadata["sources"].count("umls") == 1
    recorded = {Path(i["path"]).name: i for i in metadata["inputs"] if i["source"] == "umls"}
    for name in ("MRCONSO.RRF", "MRREL.RRF", "MRSTY.RRF"):
        assert recorded[name]["sha256"] == file_digest(RELEASE / name)
        assert recorded[name]["bytes"] == (RELEASE / name).stat().st_size
    assert metadata["options"]["umls"] == {"vocabularies": CHEST_VOCABULARIES, "semantic_types": None,
                                           "linker": "exact"}


def test_a_failing_linker_leaves_the_store_untouched(store, monkeypatch):
    before = file_digest(store)
    siblings = sorted(p.name for p in store.parent.iterdir())

    def broken(self, mentions):
        raise RuntimeError("linker crashed")

    monkeypatch.setattr(ExactLinker, "link", broken)
    with pytest.raises(RuntimeError, match="linker crashed"):
        build_umls(store, RELEASE, linker="exact", progress=False)
    assert file_digest(store) == before
    assert sorted(p.name for p in store.parent.iterdir()) == siblings


def test_a_malformed_release_leaves_the_store_untouched(store, release):
    path = release / "MRREL.RRF"
    path.write_text(path.read_text() + "C9000001|broken|\n")
    before = file_digest(store)
    with pytest.raises(InputError, match=r"MRREL\.RRF: record line 26"):
        build_umls(store, release, linker="exact", progress=False)
    assert file_digest(store) == before


def test_unknown_linker_and_missing_store_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="unknown linker"):
        build_umls(tmp_path / "x.duckdb", RELEASE, linker="fuzzy", progress=False)
    with pytest.raises(InputError, match="no such store"):
        build_umls(tmp_path / "x.duckdb", RELEASE, linker="exact", progress=False)


def test_concept_records_keep_every_alias_for_scispacy():
    con = duckdb.connect()
    read_release(con, RELEASE, vocabularies=CHEST_VOCABULARIES)
    concepts = {c.cui: c for c in concepts_for_linking(con, "scispacy", [])}
    assert concepts["C9000001"] == Concept("C9000001", "Pleural effusion",
                                           ("Effusion of pleura", "Pleural effusion", "Pleural fluid collection"),
                                           ("T047",))
    assert "C9000032" not in concepts
    exact = concepts_for_linking(con, "exact", ["Pleural-effusion", "nothing"])
    assert [c.cui for c in exact] == ["C9000001"]
