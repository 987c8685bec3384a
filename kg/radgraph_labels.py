"""RadGraph entity labels as files write them, and the coarse label each one is stored under.

Two label sets are in use:

* the classic RadGraph release (and motor-kg's own annotator): ``ANAT-DP``, ``OBS-DP``, ``OBS-U``,
  ``OBS-DA`` (:data:`kg.records.ENTITY_LABELS`, the *coarse* labels);
* the ``radgraph`` package's RadGraph-XL models (``radgraph-xl``, ``modern-radgraph-xl``):
  ``<type>::<assertion>`` or ``<type>::measurement::<assertion>``, with type ``Anatomy`` or
  ``Observation`` and assertion ``definitely present``, ``definitely absent`` or ``uncertain``.

Every label of either set is accepted. The store keeps the label as written (``source_label``)
beside the coarse one (``label``), and triplet text and ``--absent`` handling follow the coarse
label, so a store built from XL output has the same nodes as one built from the classic release.

The mapping (:data:`COARSE_LABELS`):

* ``Observation::<assertion>`` → ``OBS-DP`` / ``OBS-DA`` / ``OBS-U``;
* ``Anatomy::<assertion>`` → ``ANAT-DP`` whatever the assertion: the classic schema has one anatomy
  label because anatomy locates observations and is not itself asserted; the presence, absence or
  doubt is carried by the observation at that anatomy (``located_at``). Keeping one anatomy label
  keeps "left lung" one SK node whether XL called it present or uncertain, and never turns an
  anatomy node into a negated finding ("no left lung");
* ``<type>::measurement::<assertion>`` → the label of ``<type>::<assertion>``: a measurement
  ("2 cm", "5 mm") is an ordinary entity of its type in the classic schema (OBS-DP modifiers in
  the RadGraph release).
"""
from __future__ import annotations

from kg.records import ENTITY_LABELS

#: RadGraph-XL entity type → coarse type prefix.
XL_TYPES = {"Anatomy": "ANAT", "Observation": "OBS"}
#: RadGraph-XL assertion → coarse assertion suffix of an observation.
XL_ASSERTIONS = {"definitely present": "DP", "definitely absent": "DA", "uncertain": "U"}
#: The qualifier RadGraph-XL puts between type and assertion for measurements.
XL_MEASUREMENT = "measurement"


def _coarse(entity_type: str, assertion: str) -> str:
    return "ANAT-DP" if entity_type == "Anatomy" else f"{XL_TYPES[entity_type]}-{XL_ASSERTIONS[assertion]}"


#: Every accepted entity label as written → its coarse label (:data:`kg.records.ENTITY_LABELS`).
COARSE_LABELS: dict[str, str] = {
    **{label: label for label in ENTITY_LABELS},
    **{f"{entity_type}::{assertion}": _coarse(entity_type, assertion)
       for entity_type in XL_TYPES for assertion in XL_ASSERTIONS},
    **{f"{entity_type}::{XL_MEASUREMENT}::{assertion}": _coarse(entity_type, assertion)
       for entity_type in XL_TYPES for assertion in XL_ASSERTIONS},
}


def coarse_label(label: object) -> str | None:
    """The coarse label of an entity label as written, or ``None`` for a label of neither set."""
    return COARSE_LABELS.get(label) if type(label) is str else None


def describe_labels() -> str:
    """The accepted labels, for error messages: the four coarse ones and the XL pattern."""
    return (f"one of {', '.join(ENTITY_LABELS)}, or a RadGraph-XL label "
            f"'Anatomy|Observation[::{XL_MEASUREMENT}]::{'|'.join(XL_ASSERTIONS)}'")
