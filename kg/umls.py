"""UMLS subgraphs of a report corpus: read a Metathesaurus release, link mentions, keep relations.

The recipe is ARL's two stages:

1. **Link** every corpus mention to UMLS concepts (CUIs). Mentions are the annotated entity spans of
   the store's ``entities`` table, plus the two-entity phrases formed by related entities whose
   spans touch (``pleural`` + ``effusion`` → ``pleural effusion``): RadGraph annotates most
   multi-word findings as one-word entities joined by a relation, and UMLS names the finding as the
   whole phrase. Free n-grams of report text are not linked: they add mostly fuzzy noise to the
   scispaCy linker, and the annotated spans already cover the findings.
2. **Select** the MRREL relations whose two concepts were both linked somewhere in the corpus.

A release directory is read with DuckDB's CSV reader (explicit columns, streamed and filtered in
SQL, so a multi-GB MRCONSO never becomes a Python list): English strings only (``LAT = 'ENG'``),
rows with ``SUPPRESS`` in O/E/Y dropped, optionally limited to source vocabularies (``SAB``) and
semantic types (``TUI``). The vocabulary filter applies to MRCONSO and MRREL, the semantic type
filter to the concepts.

MRREL's ``REL``/``RELA`` give the relation of the *second* concept to the first, so the row
``CUI1 | RO | CUI2 | location_of`` becomes the triplet ``(CUI2, location_of, CUI1)``. ``RELA`` names
the relation when present, else ``REL``. Self-relations (``CUI1 = CUI2``, e.g. atom synonymy) carry
no concept-level knowledge and are dropped.

Tables written to the store (replacing earlier UMLS tables): ``umls_concepts(cui, name,
semantic_types)`` for linked concepts (name: the preferred English string; semantic types: TUIs
joined by ``|``), ``umls_relations(cui1, rel, rela, cui2, sab)`` (the selected MRREL rows),
``umls_mentions(report_id, mention, cui, score)`` and ``umls_triplets(head_cui, relation, tail_cui,
head, tail, count)`` where ``count`` is the number of reports that mention both concepts (0 when
they occur only in different reports).
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kg.errors import InputError, MissingResourceError
from kg.files import sha256_file
from kg.linking import LINKERS, NORMALISE_SQL, Concept, Link, make_linker, normalise
from kg.store import atomic_update, read_metadata, write_metadata

MRCONSO_FIELDS = (
    "CUI", "LAT", "TS", "LUI", "STT", "SUI", "ISPREF", "AUI", "SAUI", "SCUI", "SDUI", "SAB", "TTY",
    "CODE", "STR", "SRL", "SUPPRESS", "CVF",
)
MRREL_FIELDS = (
    "CUI1", "AUI1", "STYPE1", "REL", "CUI2", "AUI2", "STYPE2", "RELA", "RUI", "SRUI", "SAB", "SL",
    "RG", "DIR", "SUPPRESS", "CVF",
)
MRSTY_FIELDS = ("CUI", "TUI", "STN", "STY", "ATUI", "CVF")
RELEASE_FILES = {"MRCONSO.RRF": MRCONSO_FIELDS, "MRREL.RRF": MRREL_FIELDS, "MRSTY.RRF": MRSTY_FIELDS}
SUPPRESSED = ("O", "E", "Y")
"""``SUPPRESS`` values of obsolete (O), editor-suppressed (E) and source-suppressible (Y) rows."""
HASH_LIMIT_BYTES = 256 * 2**20
"""Release files up to this size are recorded with their SHA-256; larger ones (a full MRCONSO is
several GB and takes minutes to hash) with size and modification time only."""
_TRAILING = "_after_last_field"


@dataclass
class UmlsSummary:
    """What :func:`build_umls` read and wrote.

    Attributes:
        store: the store that was updated.
        linker: ``"scispacy"`` or ``"exact"``.
        strings: English, unsuppressed MRCONSO strings that passed the filters.
        concepts: distinct concepts those strings belong to.
        mentions: distinct ``(report, mention)`` pairs linked.
        linked_mentions: mentions linked to at least one concept.
        linked_concepts: distinct concepts linked in the corpus.
        relations: MRREL rows kept (both concepts linked).
        triplets: distinct ``(head, relation, tail)`` triplets written.
        seconds: wall-clock time of the build.
    """

    store: Path
    linker: str
    strings: int
    concepts: int
    mentions: int
    linked_mentions: int
    linked_concepts: int
    relations: int
    triplets: int
    seconds: float = field(default=0.0, compare=False)

    def __str__(self) -> str:
        share = self.linked_mentions / self.mentions if self.mentions else 0.0
        return "\n".join([
            f"UMLS subgraph written to {self.store} ({self.linker} linker, {self.seconds:.1f} s)",
            f"  release:  {self.strings:,} English strings of {self.concepts:,} concepts after filters",
            f"  linking:  {self.linked_mentions:,} of {self.mentions:,} mentions linked ({share:.1%}) "
            f"to {self.linked_concepts:,} concepts",
            f"  subgraph: {self.relations:,} relations, {self.triplets:,} distinct triplets",
        ])


def release_files(umls_dir: str | os.PathLike) -> dict[str, Path]:
    """Paths of MRCONSO.RRF, MRREL.RRF and MRSTY.RRF in ``umls_dir`` (or in its ``META`` folder).

    Raises:
        MissingResourceError: a file is missing; the message says what a release directory holds.
    """
    root = Path(umls_dir)
    if not (root / "MRCONSO.RRF").is_file() and (root / "META" / "MRCONSO.RRF").is_file():
        root = root / "META"
    paths = {name: root / name for name in RELEASE_FILES}
    for name, path in paths.items():
        if not path.is_file():
            raise MissingResourceError(
                f"{path}: not found. A UMLS release directory is the META folder of a Metathesaurus "
                "release (e.g. 2024AB/META) holding MRCONSO.RRF (concept strings), MRREL.RRF "
                "(relations) and MRSTY.RRF (semantic types); UMLS is licensed by the NLM, so download "
                "it with your own UMLS licence and pass that folder"
            )
    return paths


def read_release(
    con: Any,
    umls_dir: str | os.PathLike,
    *,
    vocabularies: Sequence[str] | None = None,
    semantic_types: Sequence[str] | None = None,
) -> None:
    """Read the filtered concept strings and semantic types of a release into temporary tables.

    Creates ``umls_release_types(cui, tui, sty)`` (every MRSTY row) and
    ``umls_release_strings(cui, str, norm, sab, name_rank)`` (English, unsuppressed strings of the
    chosen vocabularies and semantic types; ``norm`` is :func:`kg.linking.normalise` of ``str``;
    ``name_rank`` 1 marks the concept's preferred name: ``TS = 'P'``, ``STT = 'PF'``,
    ``ISPREF = 'Y'`` first, then alphabetical).

    Args:
        con: a DuckDB connection.
        umls_dir: the release directory (see :func:`release_files`).
        vocabularies: source abbreviations (``SAB``) to keep, e.g. ``["MSH", "SNOMEDCT_US"]``; all
            when ``None``.
        semantic_types: semantic type ids (``TUI``) to keep, e.g. ``["T047", "T023"]``; all when
            ``None``.

    Raises:
        MissingResourceError: a release file is missing.
        InputError: a malformed RRF line (file, line number, field), or filters that leave nothing.
    """
    paths = release_files(umls_dir)
    _check_filters(vocabularies, semantic_types)
    _scan_rrf(con, paths["MRSTY.RRF"], MRSTY_FIELDS, "umls_release_types", "CUI AS cui, TUI AS tui, STY AS sty", "TRUE")
    where = ["LAT = 'ENG'", _not_suppressed()]
    if vocabularies:
        where.append(f"SAB IN ({_sql_list(vocabularies)})")
    if semantic_types:
        where.append(
            f"CUI IN (SELECT cui FROM umls_release_types WHERE tui IN ({_sql_list(semantic_types)}))"
        )
    select = (
        f"CUI AS cui, STR AS str, {NORMALISE_SQL.format(column='STR')} AS norm, SAB AS sab, "
        "row_number() OVER (PARTITION BY CUI ORDER BY TS = 'P' DESC, STT = 'PF' DESC, "
        "ISPREF = 'Y' DESC, STR, AUI) AS name_rank"
    )
    _scan_rrf(con, paths["MRCONSO.RRF"], MRCONSO_FIELDS, "umls_release_strings", select, " AND ".join(where))
    if _scalar(con, "SELECT count(*) FROM umls_release_strings") == 0:
        raise InputError(
            "no English, unsuppressed strings pass the filters "
            f"(vocabularies={list(vocabularies or [])}, semantic types={list(semantic_types or [])})",
            file=paths["MRCONSO.RRF"],
        )


def read_relations(
    con: Any, umls_dir: str | os.PathLike, cuis_table: str, *, vocabularies: Sequence[str] | None = None
) -> None:
    """Read the MRREL rows between two concepts of ``cuis_table(cui)`` into ``umls_release_relations``.

    Columns ``cui1, rel, rela, cui2, sab``; unsuppressed rows of the chosen vocabularies, without
    self-relations, distinct and sorted.
    """
    paths = release_files(umls_dir)
    where = [
        _not_suppressed(),
        "CUI1 <> CUI2",
        f"CUI1 IN (SELECT cui FROM {cuis_table})",
        f"CUI2 IN (SELECT cui FROM {cuis_table})",
    ]
    if vocabularies:
        where.append(f"SAB IN ({_sql_list(vocabularies)})")
    _scan_rrf(con, paths["MRREL.RRF"], MRREL_FIELDS, "umls_release_relations",
              "DISTINCT CUI1 AS cui1, REL AS rel, RELA AS rela, CUI2 AS cui2, SAB AS sab", " AND ".join(where))


def concepts_for_linking(con: Any, linker: str, mentions: Sequence[str]) -> list[Concept]:
    """The knowledge base a linker needs, from ``umls_release_strings``.

    The exact linker only ever matches strings equal to a mention after normalisation, so only
    those are fetched (the same normalisation runs in DuckDB); scispaCy gets every concept.
    """
    if linker == "exact":
        import pyarrow as pa

        norms = pa.table({"norm": pa.array(sorted({normalise(m) for m in mentions} - {""}), pa.string())})
        con.register("umls_mention_norm_rows", norms)
        con.execute("CREATE OR REPLACE TEMP TABLE umls_mention_norms AS SELECT norm FROM umls_mention_norm_rows")
        con.unregister("umls_mention_norm_rows")
        restrict = "WHERE cui IN (SELECT cui FROM umls_release_strings WHERE norm IN (SELECT norm FROM umls_mention_norms))"
    else:
        restrict = ""
    rows = con.execute(
        f"""
        SELECT s.cui, any_value(s.str) FILTER (WHERE s.name_rank = 1), list(DISTINCT s.str ORDER BY s.str),
               (SELECT list(DISTINCT t.tui ORDER BY t.tui) FROM umls_release_types t WHERE t.cui = s.cui)
        FROM (SELECT * FROM umls_release_strings {restrict}) s
        GROUP BY s.cui ORDER BY s.cui
        """
    ).fetchall()
    return [Concept(cui, name, tuple(aliases), tuple(types or ())) for cui, name, aliases, types in rows]


def corpus_mentions(con: Any) -> list[tuple[str, str]]:
    """Distinct ``(report_id, mention)`` pairs of a store, sorted (see the module docstring)."""
    return con.execute(
        """
        WITH spans AS (
            SELECT DISTINCT report_id, labeler, entity_id, tokens, start_ix, end_ix FROM entities
        ),
        phrases AS (
            SELECT r.report_id,
                   CASE WHEN h.end_ix + 1 = t.start_ix THEN h.tokens || ' ' || t.tokens
                        ELSE t.tokens || ' ' || h.tokens END AS mention
            FROM relations r
            JOIN spans h ON h.report_id = r.report_id AND h.labeler = r.labeler AND h.entity_id = r.head_id
            JOIN spans t ON t.report_id = r.report_id AND t.labeler = r.labeler AND t.entity_id = r.tail_id
            WHERE h.end_ix + 1 = t.start_ix OR t.end_ix + 1 = h.start_ix
        )
        SELECT DISTINCT report_id, mention FROM (
            SELECT report_id, tokens AS mention FROM spans UNION ALL SELECT report_id, mention FROM phrases
        ) WHERE trim(mention) <> '' ORDER BY report_id, mention
        """
    ).fetchall()


def default_linker_cache(store_path: str | os.PathLike) -> Path:
    """Where the scispaCy index of store ``X.duckdb`` is cached: ``X.duckdb.umls-linker/``."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.name + ".umls-linker")


def build_umls(
    store_path: str | os.PathLike,
    umls_dir: str | os.PathLike,
    *,
    vocabularies: Sequence[str] | None = None,
    semantic_types: Sequence[str] | None = None,
    linker: str = "scispacy",
    progress: bool = True,
) -> UmlsSummary:
    """Link a store's mentions to UMLS and add the corpus's UMLS subgraph to the store.

    The store is updated through :func:`kg.store.atomic_update`: on any error (a malformed release,
    a failing linker) the store on disk is left exactly as it was. Re-running replaces the UMLS
    tables, the ``umls`` inputs and the ``umls`` options, so the result depends only on the inputs.

    Args:
        store_path: a DuckDB store written by ``kg build``, with entities.
        umls_dir: a UMLS release directory (see :func:`release_files`).
        vocabularies: ``SAB`` values to keep (all when ``None``).
        semantic_types: ``TUI`` values to keep (all when ``None``).
        linker: ``"scispacy"`` (TF-IDF/ANN; index cached in :func:`default_linker_cache`) or
            ``"exact"`` (normalised string match).
        progress: print each stage to stderr.

    Returns:
        counts of what was read, linked and written.

    Raises:
        InputError: the store is missing or has no entities; a malformed RRF line; bad filters.
        MissingResourceError: a release file, or scispaCy for ``linker="scispacy"``, is missing.
    """
    if linker not in LINKERS:
        raise InputError(f"unknown linker {linker!r}; choose one of {', '.join(LINKERS)}", field="linker")
    started = time.perf_counter()
    say = _reporter(progress)
    paths = release_files(umls_dir)
    with atomic_update(store_path) as con:
        mentions = corpus_mentions(con)
        if not mentions:
            raise InputError("the store has no entities to link; build it from annotated reports first",
                             file=store_path, field="entities")
        say(f"reading {paths['MRCONSO.RRF'].parent} (MRSTY, MRCONSO)")
        read_release(con, umls_dir, vocabularies=vocabularies, semantic_types=semantic_types)
        [(strings, concepts)] = con.execute(
            "SELECT count(*), count(DISTINCT cui) FROM umls_release_strings"
        ).fetchall()
        texts = sorted({mention for _, mention in mentions})
        say(f"linking {len(texts):,} distinct mentions with the {linker} linker")
        knowledge = concepts_for_linking(con, linker, texts)
        linked = _link(linker, knowledge, texts, default_linker_cache(store_path))
        rows = [(report, mention, l.cui, l.score) for report, mention in mentions for l in linked[mention]]
        _write_mentions(con, rows)
        say("selecting MRREL relations between linked concepts")
        con.execute("CREATE OR REPLACE TEMP TABLE umls_corpus_cuis AS SELECT DISTINCT cui FROM umls_mentions")
        read_relations(con, umls_dir, "umls_corpus_cuis", vocabularies=vocabularies)
        _write_subgraph(con)
        _write_umls_metadata(con, paths, vocabularies, semantic_types, linker)
        counts = [_scalar(con, f"SELECT count(*) FROM {table}")
                  for table in ("umls_concepts", "umls_relations", "umls_triplets")]
    return UmlsSummary(
        store=Path(store_path),
        linker=linker,
        strings=strings,
        concepts=concepts,
        mentions=len(mentions),
        linked_mentions=sum(1 for _, mention in mentions if linked[mention]),
        linked_concepts=counts[0],
        relations=counts[1],
        triplets=counts[2],
        seconds=time.perf_counter() - started,
    )


def _link(kind: str, concepts: list[Concept], texts: list[str], cache: Path) -> dict[str, list[Link]]:
    """Mention text → its links; no concept can match when the knowledge base is empty."""
    if not concepts:
        return {text: [] for text in texts}
    return dict(zip(texts, make_linker(kind, concepts, cache).link(texts)))


def _write_mentions(con: Any, rows: list[tuple[str, str, str, float]]) -> None:
    """Replace ``umls_mentions`` with ``rows`` (already sorted by report, mention, CUI)."""
    import pyarrow as pa

    columns = list(zip(*rows)) if rows else [[], [], [], []]
    batch = pa.table({
        "report_id": pa.array(columns[0], pa.string()),
        "mention": pa.array(columns[1], pa.string()),
        "cui": pa.array(columns[2], pa.string()),
        "score": pa.array(columns[3], pa.float64()),
    })
    con.register("umls_mention_rows", batch)
    con.execute("DROP TABLE IF EXISTS umls_mentions")
    con.execute("CREATE TABLE umls_mentions AS SELECT * FROM umls_mention_rows")
    con.unregister("umls_mention_rows")


def _write_subgraph(con: Any) -> None:
    """Create ``umls_concepts``, ``umls_relations`` and ``umls_triplets`` from the temporary tables."""
    for table in ("umls_concepts", "umls_relations", "umls_triplets"):
        con.execute(f"DROP TABLE IF EXISTS {table}")
    con.execute(
        """
        CREATE TABLE umls_concepts AS
        SELECT c.cui,
               coalesce(
                   (SELECT any_value(s.str) FILTER (WHERE s.name_rank = 1) FROM umls_release_strings s WHERE s.cui = c.cui),
                   c.cui) AS name,
               coalesce(
                   (SELECT string_agg(DISTINCT t.tui, '|' ORDER BY t.tui) FROM umls_release_types t WHERE t.cui = c.cui),
                   '') AS semantic_types
        FROM umls_corpus_cuis c ORDER BY c.cui
        """
    )
    con.execute(
        """
        CREATE TABLE umls_relations AS
        SELECT cui1, rel, rela, cui2, sab FROM umls_release_relations
        ORDER BY cui1, rel, rela NULLS FIRST, cui2, sab
        """
    )
    con.execute(
        """
        CREATE TABLE umls_triplets AS
        WITH triples AS (
            SELECT DISTINCT cui2 AS head_cui, coalesce(rela, rel) AS relation, cui1 AS tail_cui
            FROM umls_release_relations
        ),
        report_cuis AS (SELECT DISTINCT report_id, cui FROM umls_mentions)
        SELECT t.head_cui, t.relation, t.tail_cui, h.name AS head, tl.name AS tail,
               (SELECT count(*) FROM report_cuis a JOIN report_cuis b ON a.report_id = b.report_id
                WHERE a.cui = t.head_cui AND b.cui = t.tail_cui) AS count
        FROM triples t
        JOIN umls_concepts h ON h.cui = t.head_cui
        JOIN umls_concepts tl ON tl.cui = t.tail_cui
        ORDER BY t.head_cui, t.relation, t.tail_cui
        """
    )


def _write_umls_metadata(
    con: Any,
    paths: dict[str, Path],
    vocabularies: Sequence[str] | None,
    semantic_types: Sequence[str] | None,
    linker: str,
) -> None:
    """Add ``umls`` to ``sources`` and replace the UMLS entries of ``inputs`` and ``options``."""
    metadata = read_metadata(con)
    sources = list(metadata.get("sources", []))
    if "umls" not in sources:
        sources.append("umls")
    inputs = [entry for entry in metadata.get("inputs", []) if entry.get("source") != "umls"]
    inputs.extend(_describe_input(path) for path in paths.values())
    options = dict(metadata.get("options", {}))
    options["umls"] = {
        "vocabularies": sorted(vocabularies) if vocabularies else None,
        "semantic_types": sorted(semantic_types) if semantic_types else None,
        "linker": linker,
    }
    write_metadata(con, "sources", sources)
    write_metadata(con, "inputs", inputs)
    write_metadata(con, "options", options)


def _describe_input(path: Path) -> dict[str, Any]:
    """``{"path", "sha256", "bytes", "mtime", "source"}``; ``sha256`` is ``None`` above :data:`HASH_LIMIT_BYTES`."""
    stat = path.stat()
    sha256 = None
    if stat.st_size <= HASH_LIMIT_BYTES:
        sha256 = sha256_file(path)
    return {"path": str(path.resolve()), "sha256": sha256, "bytes": stat.st_size,
            "mtime": int(stat.st_mtime), "source": "umls"}


def _scan_rrf(con: Any, path: Path, fields: Sequence[str], table: str, select: str, where: str) -> None:
    """``CREATE TEMP TABLE table AS SELECT select FROM path WHERE where``, rejecting malformed lines.

    Every RRF line ends with ``|``, which DuckDB reads as one more, empty column: a line with one
    field too many shows up as a non-empty last column, any other wrong count as a rejected line.
    """
    columns = ", ".join(f"'{name}': 'VARCHAR'" for name in (*fields, _TRAILING))
    overflow = f"coalesce({_TRAILING}, '') <> ''"
    con.execute("DROP TABLE IF EXISTS umls_rrf_rejects")
    con.execute("DROP TABLE IF EXISTS umls_rrf_scans")
    # Overflowing lines are kept whatever the filter says, so one pass both filters and validates.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT {select}, {overflow} AS {_TRAILING}
        FROM read_csv($path, delim = '|', header = false, quote = '', escape = '', auto_detect = false,
                      columns = {{{columns}}}, store_rejects = true,
                      rejects_table = 'umls_rrf_rejects', rejects_scan = 'umls_rrf_scans')
        WHERE ({where}) OR {overflow}
        """,
        {"path": str(path)},
    )
    rejected = next(iter(
        con.execute("SELECT line, error_message FROM umls_rrf_rejects ORDER BY line LIMIT 1").fetchall()
    ), None)
    overflowing = _scalar(con, f"SELECT count(*) FROM {table} WHERE {_TRAILING}")
    if rejected is not None or overflowing:
        raise _malformed_line_error(path, fields, rejected)
    con.execute(f"ALTER TABLE {table} DROP COLUMN {_TRAILING}")


def _malformed_line_error(path: Path, fields: Sequence[str], rejected: tuple[int, str] | None) -> InputError:
    """The error for the first line of ``path`` whose field count is wrong (a Python scan; error path only)."""
    layout = "|".join(fields) + "|"
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.rstrip("\r\n").split("|")
            values = len(parts) - 1 if parts[-1] == "" else len(parts)
            if values < len(fields):
                return InputError(f"line has {values} fields, {len(fields)} expected ({layout})",
                                  file=path, record=f"line {number}", field=fields[values])
            if values > len(fields):
                return InputError(f"line has {values} fields, {len(fields)} expected ({layout}): "
                                  "unexpected data after the last field", file=path,
                                  record=f"line {number}", field=fields[-1])
            if parts[-1] != "":
                return InputError(f"line does not end with '|' ({layout})", file=path,
                                  record=f"line {number}", field=fields[-1])
    line, message = rejected if rejected is not None else (None, "unreadable line")
    return InputError(message, file=path, record=None if line is None else f"line {line}")


def _check_filters(vocabularies: Sequence[str] | None, semantic_types: Sequence[str] | None) -> None:
    if isinstance(vocabularies, str) or isinstance(semantic_types, str):
        raise InputError("pass vocabularies and semantic types as lists of strings", field="vocabularies")
    for tui in semantic_types or ():
        if not (len(tui) == 4 and tui[0] == "T" and tui[1:].isdigit()):
            raise InputError(f"{tui!r} is not a semantic type id (TUI), e.g. T047", field="semantic_types")
    for sab in vocabularies or ():
        if not sab or "'" in sab or "|" in sab:
            raise InputError(f"{sab!r} is not a source abbreviation (SAB), e.g. MSH", field="vocabularies")


def _sql_list(values: Sequence[str]) -> str:
    """A SQL list literal of validated codes (TUIs / SABs contain no quotes, see :func:`_check_filters`)."""
    return ", ".join(f"'{value}'" for value in sorted(set(values)))


def _not_suppressed() -> str:
    return f"coalesce(SUPPRESS, '') NOT IN ({_sql_list(SUPPRESSED)})"


def _scalar(con: Any, sql: str) -> Any:
    """The single value of a one-row, one-column query (fetched completely, as DuckDB requires)."""
    return con.execute(sql).fetchall()[0][0]


def _reporter(enabled: bool):
    def say(message: str) -> None:
        if enabled:
            print(f"kg umls: {message}", file=sys.stderr, flush=True)

    return say
