"""Question-answer pairs about a synthetic study, derived from its findings.

* Closed (``"yes"`` / ``"no"``): "Is there a pleural effusion?". Each study gets as many "no"
  questions (findings it does not have) as "yes" questions (findings it has, at most two; a normal
  study is asked whether it is normal), so answers are balanced over any set of studies. Hedged
  findings (an uncertain pneumonia) are never asked about.
* Open: "Where is the nodule?" → ``"right upper lung"``; "Which side is the pneumothorax on?" →
  ``"left"``; "What abnormality is seen in the right lung?" → ``"pleural effusion"`` when exactly
  one finding is on that side (a bilateral one counts for both) and none is diffuse.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.data.synthetic.phrasebook import PHRASES, RIB_ORDINALS
from pipelines.data.synthetic.scene import FindingInstance, Scene, sides_of

#: Findings answered by lung zone in "Where is ...?".
_ZONED = ("opacity", "airspace_disease", "lesion", "atelectasis", "cicatrix")
#: Findings that can be "the abnormality seen in the right/left lung".
_LATERAL = _ZONED + ("effusion", "pneumothorax", "thickening")
MAX_YES = 2
MAX_OPEN = 2


@dataclass(frozen=True)
class QAPair:
    """One question about a study. ``answer_type`` is ``"closed"`` or ``"open"``."""

    question: str
    answer: str
    answer_type: str


def _variant_entry(table: dict[str, str], variant: str | None) -> str:
    return table.get(variant or "*") or table.get("*") or next(iter(table.values()))


def finding_name(f: FindingInstance) -> str:
    """Short name of a finding instance (``"nodule"``, ``"pleural effusion"``, ``"pacemaker"``)."""
    return _variant_entry(PHRASES[f.id].name, f.variant)


def where(f: FindingInstance) -> str | None:
    """Answer to "Where is the <finding>?", or ``None`` for findings without a place."""
    if not f.side:
        return None
    both = f.side == "bilateral"
    if f.id in _ZONED and f.zone:
        return f"bilateral {f.zone} lungs" if both else f"{f.side} {f.zone} lung"
    if f.id == "effusion":
        return "both lung bases" if both else f"{f.side} lung base"
    if f.id == "pneumothorax" or (f.id == "thickening" and f.variant == "apical"):
        return "both lung apices" if both else f"{f.side} lung apex"
    if f.id == "thickening":
        return "both lateral chest walls" if both else f"{f.side} lateral chest wall"
    if f.id == "fracture" and f.rib:
        return f"{f.side} {RIB_ORDINALS[f.rib - 1]} rib"
    return None


def make_questions(scene: Scene, rng: np.random.Generator) -> list[QAPair]:
    """Closed and open questions about ``scene`` (see module docstring), in a fixed order."""
    pairs: list[QAPair] = []
    present = [f for f in scene.findings if not f.uncertain]
    present_ids = {f.id for f in scene.findings}
    absent = [fid for fid in PHRASES if fid not in present_ids and fid != "normal"]
    if scene.is_normal:
        yes = [PHRASES["normal"].question["*"]]
    else:
        shown = [f for f in present if f.id != "normal"]
        picks = rng.permutation(len(shown))[:MAX_YES]
        yes = [_variant_entry(PHRASES[shown[int(i)].id].question, shown[int(i)].variant) for i in picks]
    pairs += [QAPair(q, "yes", "closed") for q in yes]
    for i in rng.permutation(len(absent))[: len(yes)]:
        questions = list(PHRASES[absent[int(i)]].question.values())
        pairs.append(QAPair(questions[int(rng.integers(len(questions)))], "no", "closed"))

    open_pairs: list[QAPair] = []
    for f in present:
        place = where(f)
        if place is None:
            continue
        name = finding_name(f)
        if rng.random() < 0.6:
            open_pairs.append(QAPair(f"Where is the {name}?", place, "open"))
        else:
            side = "both sides" if f.side == "bilateral" else f.side
            open_pairs.append(QAPair(f"Which side is the {name} on?", side, "open"))
    # Diffuse lung findings (edema, emphysema, low volumes) would make "the abnormality" ambiguous.
    diffuse = any(PHRASES[f.id].section == "lungs" and f.side is None for f in present)
    if not scene.has("pneumonia") and not diffuse:
        for side in ("right", "left"):
            on_side = [f for f in present if f.id in _LATERAL and side in sides_of(f)]
            if len(on_side) == 1:
                open_pairs.append(QAPair(f"What abnormality is seen in the {side} lung?", finding_name(on_side[0]), "open"))
    for i in sorted(rng.permutation(len(open_pairs))[:MAX_OPEN]):
        pairs.append(open_pairs[int(i)])
    return pairs
