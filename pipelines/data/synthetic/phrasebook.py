"""Report wording of the synthetic generator: sentence templates with their RadGraph annotation inline.

Template markup (parsed by :mod:`pipelines.data.synthetic.report_writer`):

* ``[words](LABEL#name rel>target ... +concept -concept ?concept)`` is an annotated span: ``LABEL``
  is a RadGraph entity label, ``name`` a handle local to the sentence, ``rel>target`` a relation
  to another span of the sentence (``located_at``, ``modify``, ``suggestive_of``), and ``+c`` /
  ``-c`` / ``?c`` mark the span as a positive / negated / uncertain mention of concept ``c`` (a GK
  finding id, or ``consolidation`` / ``enlarged_cardiomediastinum`` for the two CheXpert classes
  without a GK node). Mentions drive the CheXpert labels; the spans become the gold RadGraph record.
* ``{placeholder}`` is filled first from the finding instance (see ``report_writer``); a
  placeholder may expand to annotated spans itself (``{loc}``, ``{sev}``, ``{side}``).
* ``<+c ...>`` at the end of a template tags the whole sentence (used where no single span carries
  the concept, e.g. "No acute cardiopulmonary abnormality" for ``normal``).

By convention a template's main observation span is named ``o`` and its main anatomy span ``a``;
``{sev}`` modifies ``o``, ``{side}`` modifies ``a`` and ``{loc}`` / ``{loc_adj}`` end in ``a``.

Every GK finding of ``graphs/chest_gk.yaml`` has an entry (checked by :func:`check_phrasebook`); the
wording avoids surface forms of other findings (``density``, ``line``, ``mass``, ...) so that a
text labeler reading a sentence finds only the finding it describes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: Order of the FINDINGS section, as a radiologist reads a chest film.
SECTIONS = ("devices", "heart", "mediastinum", "lungs", "pleura", "bones")


@dataclass(frozen=True)
class FindingPhrases:
    """How one GK finding is written.

    Attributes:
        section: FINDINGS section it is reported in (one of :data:`SECTIONS`).
        name: short name used in VQA questions and answers, per variant (``"*"`` = any).
        question: closed VQA question asking whether the finding is present, per variant.
        severity: adjectives for severity 1, 2, 3, or ``None``.
        findings: FINDINGS sentences per variant (``"*"`` = any variant).
        impression: IMPRESSION sentences per variant; empty for findings left out of the impression.
        rank: position in the IMPRESSION (lower first).
    """

    section: str
    name: dict[str, str]
    question: dict[str, str]
    severity: tuple[str, str, str] | None
    findings: dict[str, tuple[str, ...]]
    impression: dict[str, tuple[str, ...]] = field(default_factory=dict)
    rank: int = 99


PHRASES: dict[str, FindingPhrases] = {
    "cardiomegaly": FindingPhrases(
        section="heart",
        name={"*": "cardiomegaly"},
        question={"*": "Is the heart enlarged?"},
        severity=("mild", "moderate", "marked"),
        findings={"*": (
            "{sev} [cardiomegaly](OBS-DP#o +cardiomegaly) .",
            "The [heart](ANAT-DP#a) is [enlarged](OBS-DP#o located_at>a +cardiomegaly) .",
            "There is {sev} [cardiac](ANAT-DP#a) [enlargement](OBS-DP#o located_at>a +cardiomegaly) .",
            "{sev} [enlarged](OBS-DP#o located_at>a +cardiomegaly) [cardiac](ANAT-DP#c modify>a) [silhouette](ANAT-DP#a) .",
            "The [cardiomediastinal](ANAT-DP#c modify>m) [silhouette](ANAT-DP#m) is [enlarged](OBS-DP#e located_at>m"
            " +enlarged_cardiomediastinum) , with {sev} [cardiomegaly](OBS-DP#o +cardiomegaly) .",
        )},
        impression={"*": (
            "{sev} [cardiomegaly](OBS-DP#o +cardiomegaly) .",
            "[Cardiomegaly](OBS-DP#o +cardiomegaly) .",
        )},
        rank=5,
    ),
    "scoliosis": FindingPhrases(
        section="bones",
        name={"*": "scoliosis"},
        question={"*": "Is there scoliosis?"},
        severity=("mild", "moderate", "severe"),
        findings={"*": (
            "There is {sev} [scoliosis](OBS-DP#o located_at>a +scoliosis) of the [thoracic](ANAT-DP#t modify>a)"
            " [spine](ANAT-DP#a) , [convex](OBS-DP#c modify>o) to the [{convex}](ANAT-DP#d modify>c) .",
            "{sev} [scoliotic](OBS-DP#o located_at>a +scoliosis) [curvature](OBS-DP#c modify>o) of the"
            " [thoracic](ANAT-DP#t modify>a) [spine](ANAT-DP#a) .",
            "{sev} [curvature](OBS-DP#o located_at>a +scoliosis) of the [spine](ANAT-DP#a) .",
            "{sev} [thoracic](ANAT-DP#a) [scoliosis](OBS-DP#o located_at>a +scoliosis) .",
        )},
    ),
    "effusion": FindingPhrases(
        section="pleura",
        name={"*": "pleural effusion"},
        question={"*": "Is there a pleural effusion?"},
        severity=("small", "moderate", "large"),
        findings={"*": (
            "{sev} {side} [pleural](ANAT-DP#a) [effusion{pl}](OBS-DP#o located_at>a +effusion) .",
            "There {is} {a} {sev} {side} [pleural](ANAT-DP#a) [effusion{pl}](OBS-DP#o located_at>a +effusion) .",
            "[Blunting](OBS-DP#b located_at>a suggestive_of>o) of the {side} [costophrenic](ANAT-DP#c modify>a)"
            " [angle{pl}](ANAT-DP#a) , consistent with {a} {sev} [pleural](ANAT-DP#p) [effusion{pl}](OBS-DP#o"
            " located_at>p +effusion) .",
            "{sev} {side} [pleural](ANAT-DP#a) [fluid](OBS-DP#o located_at>a +effusion) [collection{pl}](OBS-DP#c"
            " modify>o) .",
        )},
        impression={"*": (
            "{sev} {side} [pleural](ANAT-DP#a) [effusion{pl}](OBS-DP#o located_at>a +effusion) .",
            "{sev} {side_anat} [effusion{pl}](OBS-DP#o located_at>a +effusion) .",
        )},
        rank=4,
    ),
    "thickening": FindingPhrases(
        section="pleura",
        name={"*": "pleural thickening"},
        question={"*": "Is there pleural thickening?"},
        severity=None,
        findings={
            "apical": (
                "{side} [apical](ANAT-DP#a) [pleural](ANAT-DP#p modify>o) [thickening](OBS-DP#o located_at>a"
                " +thickening) .",
                "[Pleural](ANAT-DP#p) [thickening](OBS-DP#o located_at>p located_at>a +thickening) is noted at"
                " the {side} [apex{es}](ANAT-DP#a) .",
            ),
            "lateral": (
                "There is {side} [pleural](ANAT-DP#a) [thickening](OBS-DP#o located_at>a +thickening) along the"
                " [lateral](ANAT-DP#l modify>w) [chest](ANAT-DP#c modify>w) [wall{pl}](ANAT-DP#w) .",
                "{side} [lateral](ANAT-DP#l modify>a) [pleural](ANAT-DP#a) [thickening](OBS-DP#o located_at>a"
                " +thickening) .",
            ),
        },
    ),
    "pneumothorax": FindingPhrases(
        section="pleura",
        name={"*": "pneumothorax"},
        question={"*": "Is there a pneumothorax?"},
        severity=("small", "moderate", "large"),
        findings={"*": (
            "There is a {sev} {side} [apical](ANAT-DP#a) [pneumothorax](OBS-DP#o located_at>a +pneumothorax) .",
            "{sev} {side_anat} [pneumothorax](OBS-DP#o located_at>a +pneumothorax) with a [visible](OBS-DP#v"
            " modify>e) [visceral](ANAT-DP#w modify>p) [pleural](ANAT-DP#p) [edge](OBS-DP#e located_at>p) .",
            "A {sev} {side_anat} [pneumothorax](OBS-DP#o located_at>a +pneumothorax) is present , without"
            " [lung](ANAT-DP#l) [markings](OBS-DA#m located_at>l) beyond the [pleural](ANAT-DP#q) [edge](OBS-DP#e"
            " located_at>q) .",
        )},
        impression={"*": (
            "{sev} {side_anat} [pneumothorax](OBS-DP#o located_at>a +pneumothorax) .",
            "{side_anat} [pneumothorax](OBS-DP#o located_at>a +pneumothorax) .",
        )},
        rank=0,
    ),
    "fracture": FindingPhrases(
        section="bones",
        name={"*": "rib fracture"},
        question={"*": "Is there a rib fracture?"},
        severity=None,
        findings={
            "acute": (
                "[Displaced](OBS-DP#d modify>o) {side} [{rib}](ANAT-DP#r modify>a) [rib](ANAT-DP#a)"
                " [fracture](OBS-DP#o located_at>a +fracture) .",
                "There is an [acute](OBS-DP#c modify>o) [fracture](OBS-DP#o located_at>a +fracture) of the {side}"
                " [{rib}](ANAT-DP#r modify>a) [rib](ANAT-DP#a) with [step-off](OBS-DP#s modify>o) .",
            ),
            "healed": (
                "[Healed](OBS-DP#h modify>o) {side} [{rib}](ANAT-DP#r modify>a) [rib](ANAT-DP#a)"
                " [fracture](OBS-DP#o located_at>a +fracture) .",
                "[Old](OBS-DP#d modify>o) [healed](OBS-DP#h modify>o) [fracture](OBS-DP#o located_at>a +fracture)"
                " of the {side} [{rib}](ANAT-DP#r modify>a) [rib](ANAT-DP#a) .",
            ),
        },
        impression={
            "acute": ("[Acute](OBS-DP#c modify>o) {side} [{rib}](ANAT-DP#r modify>a) [rib](ANAT-DP#a)"
                      " [fracture](OBS-DP#o located_at>a +fracture) .",),
        },
        rank=1,
    ),
    "emphysema": FindingPhrases(
        section="lungs",
        name={"*": "emphysema"},
        question={"*": "Is there emphysema?"},
        severity=("mild", "moderate", "severe"),
        findings={"*": (
            "The [lungs](ANAT-DP#a) are [hyperinflated](OBS-DP#o located_at>a +emphysema) with [flattening](OBS-DP#f"
            " located_at>d) of the [hemidiaphragms](ANAT-DP#d) , consistent with {sev} [emphysema](OBS-DP#e"
            " +emphysema) .",
            "[Emphysematous](OBS-DP#e modify>o) [changes](OBS-DP#o located_at>a +emphysema) in both"
            " [lungs](ANAT-DP#a) .",
            "[Hyperinflated](OBS-DP#o located_at>a +emphysema) [lungs](ANAT-DP#a) with [flattened](OBS-DP#f"
            " modify>d) [hemidiaphragms](ANAT-DP#d) .",
        )},
        impression={"*": (
            "{sev} [emphysema](OBS-DP#o +emphysema) .",
            "[COPD](OBS-DP#o +emphysema) .",
        )},
        rank=7,
    ),
    "pneumonia": FindingPhrases(
        section="lungs",
        name={"*": "pneumonia"},
        question={"*": "Is there pneumonia?"},
        severity=None,
        # Pneumonia is written inside the sentence of the finding that shows it; see PNEUMONIA_CLAUSES.
        findings={},
        # Keyed by certainty rather than variant; {sign} and {clause}: PNEUMONIA_SIGNS, PNEUMONIA_IMPRESSION_CLAUSES.
        impression={
            "certain": ("{loc_adj} [pneumonia](OBS-DP#o located_at>a +pneumonia) .",
                        "{loc_adj} {sign}{clause} .",
                        "{sign} in the {loc}{clause} ."),
            "uncertain": ("{loc_adj} {sign}{clause} .",
                          "{sign} in the {loc}{clause} ."),
        },
        rank=2,
    ),
    "edema": FindingPhrases(
        section="lungs",
        name={"*": "pulmonary edema"},
        question={"*": "Is there pulmonary edema?"},
        severity=("mild", "moderate", "severe"),
        findings={"*": (
            "There is {sev} [pulmonary](ANAT-DP#a) [edema](OBS-DP#o located_at>a +edema) .",
            "{sev} [perihilar](ANAT-DP#a) [haziness](OBS-DP#h located_at>a suggestive_of>o) , consistent with"
            " [interstitial](OBS-DP#i modify>o) [edema](OBS-DP#o +edema) .",
            "{sev} [pulmonary](ANAT-DP#p modify>a) [vascular](ANAT-DP#a) [congestion](OBS-DP#o located_at>a"
            " +edema) .",
        )},
        impression={"*": (
            "{sev} [pulmonary](ANAT-DP#a) [edema](OBS-DP#o located_at>a +edema) .",
            "{sev} [interstitial](OBS-DP#i modify>o) [edema](OBS-DP#o +edema) .",
        )},
        rank=3,
    ),
    "atelectasis": FindingPhrases(
        section="lungs",
        name={"*": "atelectasis"},
        question={"*": "Is there atelectasis?"},
        severity=("minimal", "mild", "moderate"),
        findings={"*": (
            "{sev} [linear](OBS-DP#l modify>o) [atelectasis](OBS-DP#o located_at>a +atelectasis) in the {loc} .",
            "{sev} {loc_adj} [atelectasis](OBS-DP#o located_at>a +atelectasis) .",
            "[Plate-like](OBS-DP#l modify>o) [atelectasis](OBS-DP#o located_at>a +atelectasis) is seen in the"
            " {loc} .",
        )},
        impression={"*": (
            "{loc_adj} [atelectasis](OBS-DP#o located_at>a +atelectasis) .",
        )},
        rank=8,
    ),
    "cicatrix": FindingPhrases(
        section="lungs",
        name={"*": "scarring"},
        question={"*": "Is there scarring in the lungs?"},
        severity=None,
        findings={"*": (
            "{side} [apical](ANAT-DP#a) [scarring](OBS-DP#o located_at>a +cicatrix) .",
            "[Linear](OBS-DP#l modify>o) [scars](OBS-DP#o located_at>a +cicatrix) in the {loc} .",
            "{loc_adj} [fibrotic](OBS-DP#f modify>o) [changes](OBS-DP#o located_at>a +cicatrix) .",
        )},
    ),
    "opacity": FindingPhrases(
        section="lungs",
        name={"*": "opacity"},
        question={"*": "Is there a lung opacity?"},
        severity=("faint", "patchy", "dense"),
        findings={"*": (
            "There {is} {sev} [opacit{y}](OBS-DP#o located_at>a suggestive_of>p +opacity) in the {loc}{clause} .",
            "{sev} {loc_adj} [opacit{y}](OBS-DP#o located_at>a suggestive_of>p +opacity){clause} .",
            "{sev} [infiltrate{pl}](OBS-DP#o located_at>a suggestive_of>p +opacity) in the {loc}{clause} .",
        )},
        impression={"*": (
            "{loc_adj} [opacit{y}](OBS-DP#o located_at>a +opacity) .",
        )},
        rank=6,
    ),
    "lesion": FindingPhrases(
        section="lungs",
        name={"nodule": "nodule", "mass": "mass"},
        question={"nodule": "Is there a lung nodule?", "mass": "Is there a lung mass?"},
        severity=None,
        findings={
            "nodule": (
                "There is a [{mm} mm](OBS-DP#z modify>o) [nodule](OBS-DP#o located_at>a +lesion) in the {loc} .",
                "A [rounded](OBS-DP#r modify>o) [{mm} mm](OBS-DP#z modify>o) {loc_adj} [pulmonary](ANAT-DP#p"
                " modify>o) [nodule](OBS-DP#o located_at>a +lesion) .",
                "[Solitary](OBS-DP#s modify>o) [nodule](OBS-DP#o located_at>a +lesion) in the {loc} , measuring"
                " [{mm} mm](OBS-DP#z modify>o) .",
            ),
            "mass": (
                "There is a [{mm} mm](OBS-DP#z modify>o) [lobulated](OBS-DP#l modify>o) [mass](OBS-DP#o"
                " located_at>a +lesion) in the {loc} .",
                "[Large](OBS-DP#g modify>o) {loc_adj} [mass](OBS-DP#o located_at>a +lesion) .",
            ),
        },
        impression={
            "nodule": ("{loc_adj} [pulmonary](ANAT-DP#p modify>o) [nodule](OBS-DP#o located_at>a +lesion) ."
                       " Recommend CT for further evaluation .",
                       "[{mm} mm](OBS-DP#z modify>o) {loc_adj} [nodule](OBS-DP#o located_at>a +lesion) .",),
            "mass": ("{loc_adj} [mass](OBS-DP#o located_at>a +lesion) . Recommend CT for further evaluation .",),
        },
        rank=1,
    ),
    "hernia": FindingPhrases(
        section="mediastinum",
        name={"*": "hiatal hernia"},
        question={"*": "Is there a hiatal hernia?"},
        severity=("small", "moderate", "large"),
        findings={"*": (
            "{sev} [hiatal](ANAT-DP#a) [hernia](OBS-DP#o located_at>a +hernia) .",
            "There is a {sev} [hiatal](ANAT-DP#a) [hernia](OBS-DP#o located_at>a +hernia) with a"
            " [retrocardiac](ANAT-DP#r) [air-fluid](OBS-DP#f modify>l) [level](OBS-DP#l located_at>r) .",
            "[Retrocardiac](ANAT-DP#r) [air-fluid](OBS-DP#f modify>l) [level](OBS-DP#l located_at>r"
            " suggestive_of>o) , consistent with a {sev} [hiatus](ANAT-DP#a) [hernia](OBS-DP#o located_at>a"
            " +hernia) .",
        )},
    ),
    "calcinosis": FindingPhrases(
        section="mediastinum",
        name={"aortic": "aortic calcification", "hilar": "calcified lymph nodes"},
        question={"aortic": "Is there aortic calcification?", "hilar": "Are there calcified lymph nodes?"},
        severity=None,
        findings={
            "aortic": (
                "[Calcification](OBS-DP#o located_at>a +calcinosis) of the [aortic](ANAT-DP#k modify>a)"
                " [knob](ANAT-DP#a) .",
                "[Atherosclerotic](OBS-DP#m modify>o) [calcifications](OBS-DP#o located_at>a +calcinosis) in the"
                " [aortic](ANAT-DP#k modify>a) [arch](ANAT-DP#a) .",
                "The [aortic](ANAT-DP#k modify>a) [knob](ANAT-DP#a) is [calcified](OBS-DP#o located_at>a"
                " +calcinosis) .",
            ),
            "hilar": (
                "[Calcified](OBS-DP#o located_at>a +calcinosis) {side} [hilar](ANAT-DP#h modify>a) [lymph"
                " nodes](ANAT-DP#a) .",
                "[Calcifications](OBS-DP#o located_at>a +calcinosis) in the {side} [hilar](ANAT-DP#h modify>a)"
                " [region{pl}](ANAT-DP#a) .",
            ),
        },
    ),
    "airspace_disease": FindingPhrases(
        section="lungs",
        name={"consolidation": "consolidation", "patchy": "airspace disease"},
        question={"consolidation": "Is there consolidation?", "patchy": "Is there airspace disease?"},
        severity=None,
        findings={
            "consolidation": (
                "[Consolidation](OBS-DP#o located_at>a suggestive_of>p +airspace_disease +consolidation) in the"
                " {loc} with [air](ANAT-DP#b modify>g) [bronchograms](OBS-DP#g modify>o){clause} .",
                "There is {loc_adj} [airspace](ANAT-DP#s) [consolidation](OBS-DP#o located_at>s located_at>a"
                " suggestive_of>p +airspace_disease +consolidation){clause} .",
                "[Focal](OBS-DP#f modify>o) [consolidation](OBS-DP#o located_at>a suggestive_of>p +airspace_disease"
                " +consolidation) in the {loc}{clause} .",
            ),
            "patchy": (
                "[Patchy](OBS-DP#f modify>o) [airspace](ANAT-DP#s) [disease](OBS-DP#o located_at>s located_at>a"
                " suggestive_of>p +airspace_disease) in the {loc}{clause} .",
                "There is {loc_adj} [air space](ANAT-DP#s) [disease](OBS-DP#o located_at>s located_at>a"
                " suggestive_of>p +airspace_disease){clause} .",
            ),
        },
        impression={
            "consolidation": ("{loc_adj} [consolidation](OBS-DP#o located_at>a +airspace_disease +consolidation) .",),
            "patchy": ("{loc_adj} [airspace](ANAT-DP#s) [disease](OBS-DP#o located_at>s located_at>a"
                       " +airspace_disease) .",),
        },
        rank=2,
    ),
    "hypoinflation": FindingPhrases(
        section="lungs",
        name={"*": "low lung volumes"},
        question={"*": "Are the lung volumes low?"},
        severity=None,
        findings={"*": (
            "[Low](OBS-DP#o located_at>a +hypoinflation) [lung](ANAT-DP#l modify>a) [volumes](ANAT-DP#a) .",
            "The [lungs](ANAT-DP#a) are [hypoinflated](OBS-DP#o located_at>a +hypoinflation) .",
            "[Shallow](OBS-DP#s modify>o) [inspiration](OBS-DP#o +hypoinflation) with [crowding](OBS-DP#c"
            " located_at>v) of the [bronchovascular](ANAT-DP#b modify>v) [markings](ANAT-DP#v) .",
        )},
    ),
    "normal": FindingPhrases(
        section="lungs",
        name={"*": "normal"},
        question={"*": "Is this chest radiograph normal?"},
        severity=None,
        findings={},
    ),
    "other_finding": FindingPhrases(
        section="bones",
        name={"*": "degenerative changes"},
        question={"*": "Are there degenerative changes of the spine?"},
        severity=None,
        findings={"*": (
            "[Degenerative](OBS-DP#d modify>o) [changes](OBS-DP#o located_at>a +other_finding) of the"
            " [thoracic](ANAT-DP#t modify>a) [spine](ANAT-DP#a) .",
            "[Osteophytes](OBS-DP#o located_at>a +other_finding) along the [thoracic](ANAT-DP#t modify>a)"
            " [spine](ANAT-DP#a) .",
            "[Mild](OBS-DP#m modify>o) [degenerative](OBS-DP#d modify>o) [changes](OBS-DP#o located_at>a"
            " +other_finding) are present in the [thoracic](ANAT-DP#t modify>a) [spine](ANAT-DP#a) .",
        )},
    ),
    "foreign_object": FindingPhrases(
        section="devices",
        name={"ett": "endotracheal tube", "central_line": "central venous catheter", "pacemaker": "pacemaker"},
        question={"ett": "Is there an endotracheal tube?", "central_line": "Is there a central venous catheter?",
                  "pacemaker": "Is there a pacemaker?"},
        severity=None,
        findings={
            "ett": (
                "[Endotracheal](OBS-DP#e modify>o) [tube](OBS-DP#o located_at>a +foreign_object) terminates"
                " [{cm} cm](OBS-DP#d modify>o) above the [carina](ANAT-DP#a) .",
                "An [endotracheal](OBS-DP#e modify>o) [tube](OBS-DP#o located_at>a +foreign_object) is in"
                " [satisfactory](OBS-DP#s modify>o) [position](OBS-DP#p modify>o) , with its tip"
                " [{cm} cm](OBS-DP#d modify>o) above the [carina](ANAT-DP#a) .",
            ),
            "central_line": (
                "{side_anat} [internal jugular](ANAT-DP#j) [central venous](OBS-DP#v modify>o) [catheter](OBS-DP#o"
                " located_at>j located_at>a +foreign_object) with tip in the [superior vena cava](ANAT-DP#a) .",
                "A {side_anat} [subclavian](ANAT-DP#s) [central](OBS-DP#v modify>o) [line](OBS-DP#o located_at>s"
                " located_at>a +foreign_object) terminates in the [superior vena cava](ANAT-DP#a) .",
            ),
            "pacemaker": (
                "{side_anat} [chest](ANAT-DP#c modify>w) [wall](ANAT-DP#w) [pacemaker](OBS-DP#o located_at>w"
                " +foreign_object) with its [lead](OBS-DP#l modify>o) in the [right](ANAT-DP#r modify>a)"
                " [ventricle](ANAT-DP#a) .",
                "A [pacemaker](OBS-DP#o located_at>w +foreign_object) is present in the {side_anat}"
                " [chest](ANAT-DP#c modify>w) [wall](ANAT-DP#w) , with a [lead](OBS-DP#l modify>o) terminating in"
                " the [right](ANAT-DP#r modify>a) [ventricle](ANAT-DP#a) .",
            ),
        },
    ),
}

#: Clauses appended to the sentence of the opacity or consolidation that shows a pneumonia.
PNEUMONIA_CLAUSES = {
    "certain": (
        " , consistent with [pneumonia](OBS-DP#p +pneumonia)",
        " , compatible with [pneumonia](OBS-DP#p +pneumonia)",
        " , in keeping with [pneumonia](OBS-DP#p +pneumonia)",
    ),
    "uncertain": (
        " , concerning for [pneumonia](OBS-U#p ?pneumonia)",
        " , which may represent [pneumonia](OBS-U#p ?pneumonia)",
        " , possibly [pneumonia](OBS-U#p ?pneumonia)",
        " ; [infection](OBS-U#p ?pneumonia) is not excluded",
    ),
}

#: The pneumonia sign as it is named in the IMPRESSION, per sign finding.
PNEUMONIA_SIGNS = {
    "opacity": "[opacity](OBS-DP#s located_at>a suggestive_of>o +opacity)",
    "airspace_disease": "[consolidation](OBS-DP#s located_at>a suggestive_of>o +airspace_disease +consolidation)",
}
#: IMPRESSION clauses naming the pneumonia after its sign (span ``o``).
PNEUMONIA_IMPRESSION_CLAUSES = {
    "certain": (" , consistent with [pneumonia](OBS-DP#o +pneumonia)",),
    "uncertain": (" , concerning for [pneumonia](OBS-U#o ?pneumonia)",
                  " , possibly [pneumonia](OBS-U#o ?pneumonia)"),
}


@dataclass(frozen=True)
class Negative:
    """A pertinent-negative sentence.

    Attributes:
        text: template (no placeholders).
        requires: GK findings that must all be absent for the sentence to be true.
    """

    text: str
    requires: frozenset[str]


def _neg(text: str, *requires: str) -> Negative:
    return Negative(text, frozenset(requires))


_LUNG_FINDINGS = ("opacity", "airspace_disease", "pneumonia", "edema", "atelectasis", "lesion", "cicatrix",
                  "emphysema", "hypoinflation")

#: Pertinent negatives per FINDINGS section.
NEGATIVES: dict[str, tuple[Negative, ...]] = {
    "heart": (
        _neg("The [heart](ANAT-DP#a) [size](ANAT-DP#s modify>a) is [normal](OBS-DP#o located_at>a -cardiomegaly) .",
             "cardiomegaly"),
        _neg("[Normal](OBS-DP#o located_at>a -cardiomegaly) [heart](ANAT-DP#h modify>a) [size](ANAT-DP#a) .",
             "cardiomegaly"),
        _neg("The [cardiomediastinal](ANAT-DP#c modify>a) [silhouette](ANAT-DP#a) is [within normal limits](OBS-DP#o"
             " located_at>a -cardiomegaly -enlarged_cardiomediastinum) .", "cardiomegaly"),
        _neg("The [heart](ANAT-DP#a) is not [enlarged](OBS-DA#o located_at>a -cardiomegaly) .", "cardiomegaly"),
    ),
    "mediastinum": (
        _neg("The [mediastinal](ANAT-DP#m modify>a) [contours](ANAT-DP#a) are [normal](OBS-DP#o located_at>a) .",
             "hernia"),
        _neg("[Normal](OBS-DP#o located_at>a) [mediastinal](ANAT-DP#m modify>a) [contours](ANAT-DP#a) .", "hernia"),
    ),
    "lungs": (
        _neg("The [lungs](ANAT-DP#a) are [clear](OBS-DP#o located_at>a) .", *_LUNG_FINDINGS),
        _neg("No [focal](OBS-DA#f modify>o) [consolidation](OBS-DA#o -airspace_disease -consolidation) .",
             "airspace_disease", "pneumonia"),
        _neg("There is no [focal](OBS-DA#f modify>o) [airspace](ANAT-DP#a) [disease](OBS-DA#o located_at>a"
             " -airspace_disease) .", "airspace_disease", "pneumonia"),
        _neg("No [pulmonary](ANAT-DP#a) [edema](OBS-DA#o located_at>a -edema) .", "edema"),
        _neg("There is no [pulmonary](ANAT-DP#a) [edema](OBS-DA#o located_at>a -edema) .", "edema"),
        _neg("No [suspicious](OBS-DA#s modify>o) [pulmonary](ANAT-DP#a) [nodules](OBS-DA#o located_at>a -lesion) or"
             " [masses](OBS-DA#m located_at>a -lesion) .", "lesion"),
        _neg("No [focal](OBS-DA#f modify>o) [consolidation](OBS-DA#o -airspace_disease -consolidation) or"
             " [pulmonary](ANAT-DP#a) [edema](OBS-DA#e located_at>a -edema) .", "airspace_disease", "pneumonia", "edema"),
    ),
    "pleura": (
        _neg("No [pleural](ANAT-DP#a) [effusion](OBS-DA#o located_at>a -effusion) or [pneumothorax](OBS-DA#p"
             " -pneumothorax) .", "effusion", "pneumothorax"),
        _neg("There is no [pleural](ANAT-DP#a) [effusion](OBS-DA#o located_at>a -effusion) or"
             " [pneumothorax](OBS-DA#p -pneumothorax) .", "effusion", "pneumothorax"),
        _neg("No [pneumothorax](OBS-DA#p -pneumothorax) or [pleural](ANAT-DP#a) [effusion](OBS-DA#o located_at>a"
             " -effusion) .", "effusion", "pneumothorax"),
        _neg("No [pneumothorax](OBS-DA#o -pneumothorax) .", "pneumothorax"),
        _neg("There is no [pneumothorax](OBS-DA#o -pneumothorax) .", "pneumothorax"),
        _neg("No [pleural](ANAT-DP#a) [effusion](OBS-DA#o located_at>a -effusion) .", "effusion"),
        _neg("The [costophrenic](ANAT-DP#c modify>a) [angles](ANAT-DP#a) are [sharp](OBS-DP#o located_at>a"
             " -effusion) .", "effusion"),
    ),
    "bones": (
        _neg("No [acute](OBS-DA#m modify>o) [osseous](ANAT-DP#a) [abnormality](OBS-DA#o located_at>a) .", "fracture"),
        _neg("No [displaced](OBS-DA#d modify>o) [rib](ANAT-DP#a) [fractures](OBS-DA#o located_at>a -fracture) .",
             "fracture"),
        _neg("The [osseous](ANAT-DP#b modify>a) [structures](ANAT-DP#a) are [intact](OBS-DP#o located_at>a"
             " -fracture) .", "fracture", "scoliosis", "other_finding"),
    ),
}

#: How often a section's pertinent negatives are written at all.
NEGATIVE_RATE = {"devices": 0.0, "heart": 0.9, "mediastinum": 0.3, "lungs": 0.9, "pleura": 0.9, "bones": 0.6}

#: IMPRESSION of a study with no finding (tagged ``normal``).
NORMAL_IMPRESSIONS = (
    "No acute cardiopulmonary abnormality . <+normal>",
    "No acute disease . <+normal>",
    "[Normal](OBS-DP#o +normal) [chest](ANAT-DP#a) radiograph .",
    "No active disease . <+normal>",
)
#: IMPRESSION when only findings left out of the impression are present.
NO_ACUTE_IMPRESSIONS = (
    "No acute cardiopulmonary process .",
    "No acute [cardiopulmonary](ANAT-DP#a) [process](OBS-DA#o located_at>a) .",
)

#: Ordinal words of rib numbers.
RIB_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
                "eleventh", "twelfth")


def check_phrasebook(finding_ids: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless every GK finding has phrases and every section is known."""
    missing = [fid for fid in finding_ids if fid not in PHRASES]
    unknown = [fid for fid in PHRASES if fid not in finding_ids]
    if missing or unknown:
        raise ValueError(f"phrasebook out of date with the GK graph: missing {missing}, unknown {unknown}")
    for fid, phrases in PHRASES.items():
        if phrases.section not in SECTIONS:
            raise ValueError(f"phrasebook entry {fid!r}: unknown section {phrases.section!r}")
