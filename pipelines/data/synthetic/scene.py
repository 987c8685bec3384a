"""What one synthetic study shows: patient geometry plus the GK findings present, sampled from a seed.

A :class:`Scene` is the single source the renderer (:mod:`pipelines.data.synthetic.render`), the report writer
(:mod:`pipelines.data.synthetic.report_writer`), the labels and the VQA pairs are all derived from, so image,
text and labels agree by construction.

Findings are drawn through clinical scenarios so that they co-occur plausibly (heart failure:
cardiomegaly + edema + effusions; infection: pneumonia with its opacity and a small effusion;
trauma: rib fracture with pneumothorax on the same side; ...), then a few incidental findings are
added. About 36 % of studies are normal.

Coordinates are normalised to the image: ``x`` from the image's left edge (0) to its right edge (1),
``y`` from top (0) to bottom (1). Studies are PA views, so the patient's **right** side is on the
image's **left** (``x < 0.5``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kg.label_schema import gk_finding_ids

SIDES = ("right", "left")
ZONES = ("upper", "middle", "lower")

#: Findings whose instance carries a lung side and zone (they live inside one or both lungs).
PARENCHYMAL = ("opacity", "airspace_disease", "lesion", "atelectasis")

#: Probability of a study being normal (no GK finding at all).
NORMAL_RATE = 0.36

# Scenario weights and per-finding probabilities. A scenario that yields no finding is redrawn.
_SCENARIOS: tuple[tuple[str, float, dict[str, float]], ...] = (
    ("heart_failure", 0.15, {"cardiomegaly": 0.9, "edema": 0.75, "effusion": 0.65, "atelectasis": 0.2, "foreign_object": 0.1}),
    ("infection", 0.17, {"pneumonia": 1.0, "effusion": 0.2, "atelectasis": 0.15}),
    ("airspace", 0.08, {"opacity": 0.6, "airspace_disease": 0.5, "atelectasis": 0.2}),
    ("copd", 0.09, {"emphysema": 1.0, "cicatrix": 0.35, "lesion": 0.2, "thickening": 0.2, "calcinosis": 0.2}),
    ("intensive_care", 0.1, {"foreign_object": 1.0, "atelectasis": 0.45, "effusion": 0.35, "edema": 0.2, "opacity": 0.2}),
    ("trauma", 0.07, {"fracture": 1.0, "pneumothorax": 0.45}),
    ("pneumothorax", 0.04, {"pneumothorax": 1.0, "cicatrix": 0.15}),
    ("nodule", 0.07, {"lesion": 1.0, "calcinosis": 0.25, "cicatrix": 0.15}),
    ("low_volumes", 0.05, {"hypoinflation": 1.0, "atelectasis": 0.6}),
    ("chronic", 0.18, {"calcinosis": 0.35, "scoliosis": 0.3, "other_finding": 0.3, "hernia": 0.2,
                       "thickening": 0.2, "cicatrix": 0.2, "cardiomegaly": 0.15}),
)
_INCIDENTAL = {"calcinosis": 0.08, "scoliosis": 0.05, "other_finding": 0.06, "hernia": 0.03,
               "hypoinflation": 0.04, "cicatrix": 0.03, "thickening": 0.03}
_SEVERITY_P = (0.5, 0.33, 0.17)


@dataclass(frozen=True)
class FindingInstance:
    """One GK finding as it appears in a study.

    Attributes:
        id: GK finding id (``graphs/chest_gk.yaml``).
        side: ``"right"``, ``"left"``, ``"bilateral"`` or ``None`` (patient's side).
        zone: ``"upper"``, ``"middle"``, ``"lower"`` or ``None``.
        severity: 1 (mild/small) to 3 (severe/large), or ``None`` where it makes no sense.
        variant: kind-specific form (``"nodule"``/``"mass"``, ``"ett"``/``"central_line"``/
            ``"pacemaker"``, ``"lobar"``/``"patchy"``, ``"consolidation"``, ``"acute"``/``"healed"``,
            ``"apical"``/``"lateral"``, ``"aortic"``/``"hilar"``, ...), or ``None``.
        uncertain: the report hedges the finding (RadGraph ``OBS-U``, label -1).
        rib: for fractures, the rib number (1-12) that is broken.
        size_mm: a measurement the report quotes: a nodule's or mass's diameter, or the height of an
            endotracheal tube's tip above the carina.
    """

    id: str
    side: str | None = None
    zone: str | None = None
    severity: int | None = None
    variant: str | None = None
    uncertain: bool = False
    rib: int | None = None
    size_mm: int | None = None


@dataclass(frozen=True)
class Anatomy:
    """Per-study geometry and exposure, in normalised image units.

    Attributes:
        center_x: x of the body midline before rotation.
        shift_y: vertical shift of the whole chest.
        scale: overall size factor of the chest in the frame.
        rotation_deg: in-plane rotation (positive turns the chest clockwise).
        lung_width: lateral extent of each lung from the mediastinum edge.
        apex_y: y of the lung apices.
        base_y: y of the costophrenic angles (right side; the left sits slightly lower).
        dome_height: height of the hemidiaphragm domes above the costophrenic angles.
        heart_ratio: cardiothoracic ratio (heart width / thoracic width).
        lung_air: how much darker aerated lung is than soft tissue.
        markings: amplitude of the lung-marking texture.
        gamma: exposure curve exponent.
        noise: standard deviation of the detector noise (fraction of full scale).
        spine_curve: lateral displacement of the mid-thoracic spine (scoliosis), signed, x units.
    """

    center_x: float
    shift_y: float
    scale: float
    rotation_deg: float
    lung_width: float
    apex_y: float
    base_y: float
    dome_height: float
    heart_ratio: float
    lung_air: float
    markings: float
    gamma: float
    noise: float
    spine_curve: float = 0.0


@dataclass(frozen=True)
class Scene:
    """Everything one synthetic study shows.

    Attributes:
        findings: findings present, in GK order; empty for a normal study.
        anatomy: geometry and exposure.
        noise_seed: seed of the renderer's texture and noise fields.
        style_seed: seed of the report writer's phrasing choices.
    """

    findings: tuple[FindingInstance, ...]
    anatomy: Anatomy
    noise_seed: int
    style_seed: int

    @property
    def is_normal(self) -> bool:
        return not self.findings

    def has(self, finding_id: str) -> bool:
        return any(f.id == finding_id for f in self.findings)

    def get(self, finding_id: str) -> FindingInstance | None:
        """The instance of ``finding_id``, or ``None`` when absent."""
        return next((f for f in self.findings if f.id == finding_id), None)


def sides_of(instance: FindingInstance) -> tuple[str, ...]:
    """Patient sides an instance occupies: ``("right",)``, ``("left",)`` or both for bilateral."""
    if instance.side == "bilateral":
        return ("right", "left")
    return (instance.side,) if instance.side else ()


def pneumonia_sign(pneumonia: FindingInstance) -> str:
    """The GK finding that shows a pneumonia on the image: lobar → consolidation, patchy → opacity."""
    return "airspace_disease" if pneumonia.variant == "lobar" else "opacity"


def study_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of study ``index`` under ``seed``; independent of how many studies are made."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw one study: findings through a clinical scenario, then geometry adapted to them.

    Pneumonia always comes with the finding that shows it on the image (:func:`pneumonia_sign`) at
    the same place; the report describes the two together (``opacity ... concerning for pneumonia``).
    """
    finding_ids = gk_finding_ids()
    chosen: dict[str, FindingInstance] = {}
    if rng.random() >= NORMAL_RATE:
        while not chosen:
            chosen = _sample_findings(rng)
    order = {fid: i for i, fid in enumerate(finding_ids)}
    findings = tuple(sorted(chosen.values(), key=lambda f: order[f.id]))
    return Scene(
        findings=findings,
        anatomy=_sample_anatomy(rng, {f.id: f for f in findings}),
        noise_seed=int(rng.integers(2**31)),
        style_seed=int(rng.integers(2**31)),
    )


def _severity(rng: np.random.Generator) -> int:
    return int(rng.choice(3, p=_SEVERITY_P)) + 1


def _side(rng: np.random.Generator, bilateral: float = 0.0) -> str:
    if rng.random() < bilateral:
        return "bilateral"
    return SIDES[int(rng.integers(2))]


def _sample_findings(rng: np.random.Generator) -> dict[str, FindingInstance]:
    weights = np.array([w for _, w, _ in _SCENARIOS])
    _, _, probs = _SCENARIOS[int(rng.choice(len(_SCENARIOS), p=weights / weights.sum()))]
    wanted = [fid for fid, p in probs.items() if rng.random() < p]
    wanted += [fid for fid, p in _INCIDENTAL.items() if fid not in wanted and rng.random() < p]
    if "emphysema" in wanted and "hypoinflation" in wanted:
        wanted.remove("hypoinflation")

    chosen: dict[str, FindingInstance] = {}
    used_places: set[tuple[str, str]] = set()

    def place(zones: tuple[str, ...], zone_p: tuple[float, ...], side: str | None = None) -> tuple[str, str]:
        # Parenchymal findings get distinct (side, zone) places so each stays visible and nameable.
        for _ in range(12):
            s = side or _side(rng)
            z = zones[int(rng.choice(len(zones), p=zone_p))]
            if (s, z) not in used_places:
                break
        used_places.add((s, z))
        return s, z

    if "pneumonia" in wanted:
        side, zone = place(ZONES, (0.2, 0.25, 0.55))
        lobar = rng.random() < 0.5
        pneumonia = FindingInstance(
            "pneumonia", side, zone, _severity(rng), "lobar" if lobar else "patchy", uncertain=bool(rng.random() < 0.4)
        )
        chosen["pneumonia"] = pneumonia
        shown_by = pneumonia_sign(pneumonia)
        chosen[shown_by] = FindingInstance(
            shown_by, side, zone, max(2, _severity(rng)), "consolidation" if lobar else "patchy"
        )
    anchor_side = chosen["pneumonia"].side if "pneumonia" in chosen else None

    for fid in wanted:
        if fid in chosen:
            continue
        if fid == "opacity":
            side, zone = place(ZONES, (0.25, 0.35, 0.4))
            chosen[fid] = FindingInstance(fid, side, zone, _severity(rng), "patchy")
        elif fid == "airspace_disease":
            side, zone = place(ZONES, (0.2, 0.3, 0.5))
            consolidated = rng.random() < 0.6
            chosen[fid] = FindingInstance(fid, side, zone, max(2, _severity(rng)), "consolidation" if consolidated else "patchy")
        elif fid == "lesion":
            side, zone = place(ZONES, (0.4, 0.35, 0.25))
            mass = rng.random() < 0.25
            size = int(rng.integers(32, 46)) if mass else int(rng.integers(6, 17))
            chosen[fid] = FindingInstance(fid, side, zone, None, "mass" if mass else "nodule", size_mm=size)
        elif fid == "atelectasis":
            if rng.random() < 0.3 and ("right", "lower") not in used_places and ("left", "lower") not in used_places:
                used_places.update({("right", "lower"), ("left", "lower")})
                side, zone = "bilateral", "lower"
            else:
                side, zone = place(("middle", "lower"), (0.3, 0.7))
            chosen[fid] = FindingInstance(fid, side, zone, int(rng.choice([1, 2])), "linear")
        elif fid == "effusion":
            side = anchor_side if anchor_side and rng.random() < 0.8 else _side(rng, 0.35)
            if "cardiomegaly" in wanted and rng.random() < 0.5:
                side = "bilateral"
            chosen[fid] = FindingInstance(fid, side, "lower", _severity(rng))
        elif fid == "pneumothorax":
            fracture = chosen.get("fracture")
            side = fracture.side if fracture else _side(rng)
            chosen[fid] = FindingInstance(fid, side, "upper", _severity(rng))
        elif fid == "fracture":
            rib = int(rng.integers(3, 10))
            zone = "upper" if rib <= 4 else "middle" if rib <= 7 else "lower"
            variant = "acute" if rng.random() < 0.6 else "healed"
            chosen[fid] = FindingInstance(fid, _side(rng), zone, None, variant, rib=rib)
        elif fid == "thickening":
            variant = "apical" if rng.random() < 0.5 else "lateral"
            chosen[fid] = FindingInstance(fid, _side(rng, 0.3), "upper" if variant == "apical" else "middle", None, variant)
        elif fid == "cicatrix":
            chosen[fid] = FindingInstance(fid, _side(rng, 0.35), "upper", None, "apical")
        elif fid == "foreign_object":
            variant = str(rng.choice(["ett", "central_line", "pacemaker"], p=[0.35, 0.35, 0.3]))
            side = None if variant == "ett" else ("left" if variant == "pacemaker" and rng.random() < 0.85 else _side(rng))
            tip_height = int(rng.integers(3, 7)) * 10 if variant == "ett" else None
            chosen[fid] = FindingInstance(fid, side, None, None, variant, size_mm=tip_height)
        elif fid == "calcinosis":
            variant = "aortic" if rng.random() < 0.7 else "hilar"
            chosen[fid] = FindingInstance(fid, None if variant == "aortic" else _side(rng, 0.4), None, None, variant)
        elif fid == "scoliosis":
            chosen[fid] = FindingInstance(fid, _side(rng), None, _severity(rng))
        elif fid == "other_finding":
            chosen[fid] = FindingInstance(fid, None, None, None, "degenerative_spine")
        elif fid in ("cardiomegaly", "edema", "emphysema", "hernia"):
            chosen[fid] = FindingInstance(fid, None, None, _severity(rng))
        elif fid == "hypoinflation":
            chosen[fid] = FindingInstance(fid)
    return chosen


def _sample_anatomy(rng: np.random.Generator, findings: dict[str, FindingInstance]) -> Anatomy:
    u = rng.uniform
    base_y = u(0.76, 0.81)
    dome = u(0.06, 0.085)
    lung_width = u(0.29, 0.33)
    lung_air = u(0.26, 0.32)
    markings = u(0.8, 1.2)
    heart_ratio = u(0.41, 0.48)
    spine_curve = 0.0
    if "emphysema" in findings:
        sev = findings["emphysema"].severity or 1
        base_y += 0.03 + 0.015 * sev
        dome *= 0.45 - 0.1 * (sev - 1)
        lung_width += 0.01 * sev
        lung_air += 0.05 + 0.025 * sev
        markings *= 0.75 - 0.12 * (sev - 1)
    if "hypoinflation" in findings:
        base_y -= u(0.08, 0.11)
        dome *= 1.25
        markings *= 1.25
    if "cardiomegaly" in findings:
        heart_ratio = (0.53, 0.58, 0.64)[(findings["cardiomegaly"].severity or 1) - 1] + u(-0.01, 0.01)
    if "scoliosis" in findings:
        amount = (0.025, 0.04, 0.06)[(findings["scoliosis"].severity or 1) - 1]
        # Convex to the patient's right bends the spine towards the image's left.
        spine_curve = -amount if findings["scoliosis"].side == "right" else amount
    return Anatomy(
        center_x=u(0.48, 0.52),
        shift_y=u(-0.02, 0.02),
        scale=u(0.93, 1.03),
        rotation_deg=u(-3.5, 3.5),
        lung_width=lung_width,
        apex_y=u(0.12, 0.16),
        base_y=base_y,
        dome_height=dome,
        heart_ratio=heart_ratio,
        lung_air=lung_air,
        markings=markings,
        gamma=u(0.85, 1.2),
        noise=u(0.008, 0.02),
        spine_curve=spine_curve,
    )
