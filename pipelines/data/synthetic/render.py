"""Draw a synthetic PA chest radiograph from a :class:`~pipelines.data.synthetic.scene.Scene`.

The picture is built as an attenuation map (bright = dense), vectorised over a pixel grid:

* soft tissue of the body, mediastinum and abdomen;
* two lung fields of aerated lung (an *aeration* map ``air`` in [0, 1.2] that findings lower when
  they fill air spaces with fluid or tissue, and raise where free air has no lung in it);
* lung markings: band-pass noise, denser towards the hila, scaled by aeration;
* bones on top: spine with vertebral bodies, posterior and anterior ribs, clavicles;
* devices and calcifications (metal / calcium: very bright).

Geometry is in normalised image units (``x`` left → right, ``y`` top → bottom) evaluated on a
rotated and scaled copy of the pixel grid, so one scene renders consistently at any size. Edges are
smoothed over about one pixel. The patient's right is on the image's left (PA view).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from pipelines.data.synthetic.scene import Anatomy, FindingInstance, Scene, sides_of

#: x direction of each patient side on a PA image: the patient's right is on the image's left.
SIDE_SIGN = {"right": -1.0, "left": 1.0}
#: Fraction of the apex→base height at the centre of each lung zone.
ZONE_T = {"upper": 0.22, "middle": 0.5, "lower": 0.76}

_MEDIASTINUM = 0.045  # half-width of the mediastinum between the lungs
_TISSUE = 0.42  # attenuation of the body's soft tissue
_RIGHT_DOME_RAISE = 0.018  # the right hemidiaphragm sits higher than the left (liver)
_UNITS_PER_MM = 0.0026  # the lungs span about 0.74 image widths, a thorax about 280 mm


@dataclass
class LungField:
    """One lung evaluated on the grid.

    Attributes:
        mask: soft inside indicator in [0, 1], shape (H, W).
        uu: 0 at the medial border, 1 at the lateral border (H, W).
        t: 0 at the apex, 1 at the costophrenic angle (H, W).
        wall_depth: distance inside from the chest wall outline (lateral and apical), x units (H, W).
    """

    mask: np.ndarray
    uu: np.ndarray
    t: np.ndarray
    wall_depth: np.ndarray


class ChestCanvas:
    """Pixel grid plus the anatomy-derived maps that findings modify (see module docstring)."""

    def __init__(self, anatomy: Anatomy, size: int, rng: np.random.Generator) -> None:
        self.anatomy = anatomy
        self.size = size
        self.rng = rng
        centres = (np.arange(size, dtype=np.float32) + 0.5) / size
        grid_x, grid_y = np.meshgrid(centres, centres)
        angle = math.radians(anatomy.rotation_deg)
        cos, sin = math.cos(angle), math.sin(angle)
        dx, dy = grid_x - 0.5, grid_y - 0.5
        self.x = ((cos * dx + sin * dy) / anatomy.scale + 0.5).astype(np.float32)
        self.y = ((-sin * dx + cos * dy) / anatomy.scale + 0.5 - anatomy.shift_y).astype(np.float32)
        self.row_min, self.row_max = self.y.min(axis=1), self.y.max(axis=1)
        # Edge softness: about one output pixel, in anatomy units.
        self.eps = 1.0 / (size * anatomy.scale)
        self.cx = anatomy.center_x
        self.apex = anatomy.apex_y
        self.base = {"right": anatomy.base_y - _RIGHT_DOME_RAISE, "left": anatomy.base_y}
        self.lungs = {side: self.lung_field(self.x, self.y, side) for side in SIDE_SIGN}
        lung = np.maximum(self.lungs["right"].mask, self.lungs["left"].mask)
        self.lung = lung
        self.air = lung.copy()
        self.marking_mask = lung.copy()
        self.att = np.zeros_like(self.x)
        # Fields shared by several findings, drawn once.
        self.fine = _band_pass(rng.standard_normal((size, size), dtype=np.float32), 0.0045 * size, 0.013 * size)
        self.coarse = _normalised(gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), 0.035 * size))
        # Thoracic width: between the lungs' widest points (the ellipse of lung_field reaches 1.05 W).
        heart_half_width = anatomy.heart_ratio * (_MEDIASTINUM + 1.05 * anatomy.lung_width)
        self.heart_half_height = 0.04 + 0.55 * heart_half_width
        # Widest at three quarters of its half-height above the dome; the apex sinks into the diaphragm.
        heart_y = self.base["left"] - 0.75 * self.heart_half_height - 0.5 * anatomy.dome_height
        self.heart = (self.cx + heart_half_width / 3.0, heart_y, heart_half_width)
        self.body = np.ones_like(self.x)
        self.hila = {
            side: (self.cx + SIDE_SIGN[side] * 0.085, self.apex + 0.33 * (self.base[side] - self.apex))
            for side in SIDE_SIGN
        }

    # ------------------------------------------------------------------ geometry
    def soft(self, distance: np.ndarray | float, width: float = 1.0) -> np.ndarray:
        """Smooth inside indicator of a signed distance (positive inside), edge ``width`` pixels wide."""
        return (0.5 + 0.5 * np.tanh(np.asarray(distance, dtype=np.float32) / (self.eps * width))).astype(np.float32)

    def lung_field(self, x: np.ndarray, y: np.ndarray, side: str) -> LungField:
        """Evaluate one lung on coordinates ``x``, ``y`` (used again on warped grids for pneumothorax).

        The lung is a tall ellipse cut straight by the mediastinum medially and by the diaphragm's
        dome below; where the ellipse meets the dome laterally it forms the costophrenic angle.
        """
        a = self.anatomy
        q = SIDE_SIGN[side] * (x - self.cx)
        base = self.base[side]
        height = base - self.apex
        centre_q, centre_y = _MEDIASTINUM + 0.45 * a.lung_width, base - 0.38 * height
        rx, ry = 0.6 * a.lung_width, 0.62 * height
        radius = np.sqrt(((q - centre_q) / rx) ** 2 + ((y - centre_y) / ry) ** 2)
        wall_depth = (1.0 - radius) * rx
        uu = (q - _MEDIASTINUM) / a.lung_width
        uu_c = np.clip(uu, 0.0, 1.0)
        dome = base - a.dome_height * 4.0 * uu_c * (1.0 - uu_c) ** 0.8
        distance = np.minimum(np.minimum(wall_depth, q - _MEDIASTINUM), dome - y)
        t = (y - self.apex) / height
        return LungField(self.soft(distance, 1.2), uu.astype(np.float32), t.astype(np.float32), wall_depth)

    def rows(self, y_min: float, y_max: float) -> slice:
        """Rows of the grid whose anatomy ``y`` reaches into ``[y_min, y_max]`` (for banded drawing)."""
        hit = np.nonzero((self.row_max >= y_min) & (self.row_min <= y_max))[0]
        if hit.size == 0:
            return slice(0, 0)
        return slice(int(hit[0]), int(hit[-1]) + 1)

    def this_side(self, lung: LungField) -> np.ndarray:
        """Soft indicator of the half of the chest holding ``lung`` (keeps a finding off the other lung)."""
        return self.soft((0.7 - np.abs(lung.uu - 0.5)) * self.anatomy.lung_width, 2.0)

    def location(self, side: str, zone: str, uu: float = 0.55) -> tuple[float, float]:
        """Centre ``(x, y)`` of a lung zone of one side."""
        t = ZONE_T[zone]
        x = self.cx + SIDE_SIGN[side] * (_MEDIASTINUM + uu * self.anatomy.lung_width)
        return x, self.apex + t * (self.base[side] - self.apex)

    def spine_x(self, y: np.ndarray | float) -> np.ndarray | float:
        """x of the spine's axis at height ``y`` (scoliosis bends it, maximal mid-chest)."""
        phase = np.clip((np.asarray(y) - 0.08) / 0.82, 0.0, 1.0)
        return self.cx + self.anatomy.spine_curve * np.sin(np.pi * phase)

    def disc(self, cx: float, cy: float, rx: float, ry: float | None = None, width: float = 1.0,
             angle_deg: float = 0.0) -> np.ndarray:
        """Soft ellipse indicator (H, W); ``angle_deg`` turns its ``rx`` axis clockwise on the image."""
        ry = rx if ry is None else ry
        dx, dy = self.x - cx, self.y - cy
        if angle_deg:
            cos, sin = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
            dx, dy = cos * dx + sin * dy, -sin * dx + cos * dy
        r = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
        return self.soft((1.0 - r) * min(rx, ry), width)

    def polyline(self, points: list[tuple[float, float]], half_width: float, rows: slice = slice(None)) -> np.ndarray:
        """Soft indicator of a thick polyline through ``points`` (H, W), or of the band ``rows`` of it."""
        x, y = self.x[rows], self.y[rows]
        distance = np.full(x.shape, np.inf, dtype=np.float32)
        for p0, p1 in zip(points[:-1], points[1:]):
            distance = np.minimum(distance, _segment_distance(x, y, p0, p1))
        return self.soft(half_width - distance, 0.8)


def _segment_distance(x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float]) -> np.ndarray:
    vx, vy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = max(vx * vx + vy * vy, 1e-12)
    s = np.clip(((x - p0[0]) * vx + (y - p0[1]) * vy) / length2, 0.0, 1.0)
    return np.hypot(x - (p0[0] + s * vx), y - (p0[1] + s * vy)).astype(np.float32)


def _normalised(field: np.ndarray) -> np.ndarray:
    return ((field - field.mean()) / (field.std() + 1e-8)).astype(np.float32)


def _band_pass(noise: np.ndarray, low: float, high: float) -> np.ndarray:
    return _normalised(gaussian_filter(noise, low) - gaussian_filter(noise, high))


# ---------------------------------------------------------------------- normal anatomy
def _draw_body(c: ChestCanvas) -> None:
    a = c.anatomy
    # Torso: a superellipse, square-shouldered and rounded at the flanks.
    torso = np.abs((c.x - c.cx) / 0.5) ** 3 + np.abs((c.y - 0.62) / 0.6) ** 2.2
    body = c.soft((1.0 - torso) * 0.12, 4.0)
    neck = c.soft(np.minimum(0.08 - np.abs(c.x - c.cx), 0.2 - c.y), 2.0)
    c.body = np.maximum(body, neck)
    c.att += _TISSUE * c.body
    # Mediastinum: thicker tissue between the lungs, down to the heart.
    mediastinum = c.soft(np.minimum(0.055 - np.abs(c.x - c.cx), c.heart[1] - c.y), 2.0)
    c.att += 0.05 * mediastinum * c.body
    trachea_end = c.apex + 0.13
    trachea = c.soft(np.minimum(0.012 - np.abs(c.x - c.cx), trachea_end - c.y), 1.5)
    c.att -= 0.08 * trachea * c.body
    # Aortic knob bulging into the left lung.
    knob = c.disc(c.cx + 0.05, c.apex + 0.11, 0.03)
    c.air *= 1.0 - knob
    # Heart: one third right of the midline, two thirds left, resting on the diaphragm.
    hx, hy, half_width = c.heart
    # The long axis runs from the upper right heart border down to the apex on the patient's left.
    heart = c.disc(hx, hy, half_width, c.heart_half_height, width=1.5, angle_deg=20.0)
    c.air *= 1.0 - heart
    c.att += 0.02 * heart
    # Hilar vessels.
    for hx_, hy_ in c.hila.values():
        c.att += 0.05 * c.disc(hx_, hy_, 0.03, 0.05, width=4.0) * c.lung
    # Gastric bubble under the left hemidiaphragm.
    c.att -= 0.12 * c.disc(c.cx + 0.15, c.base["left"] + 0.035, 0.05, 0.022, width=2.0)


def _draw_spine(c: ChestCanvas) -> None:
    axis = c.spine_x(c.y)
    band = c.soft(0.032 - np.abs(c.x - axis), 1.2) * c.body
    # Vertebral bodies: brighter end plates, darker disc spaces, one level every 5.3 % of the height.
    level = np.cos(2.0 * np.pi * (c.y - c.apex) / 0.053)
    c.att += band * (0.045 + 0.025 * np.clip(level, 0.0, 1.0) ** 4 - 0.02 * np.clip(-level, 0.0, 1.0) ** 8)
    pedicle_y = c.apex + 0.053 * np.round((c.y - c.apex) / 0.053)
    for sign in (-1.0, 1.0):
        pedicle = ((c.x - axis - sign * 0.02) / 0.007) ** 2 + ((c.y - pedicle_y - 0.012) / 0.011) ** 2
        c.att += 0.025 * c.soft(1.0 - np.sqrt(pedicle), 0.15) * c.body


def _rib_centre(c: ChestCanvas, side: str, number: int, q: np.ndarray) -> np.ndarray:
    """y of the posterior rib ``number`` (1-12) at lateral distance ``q`` from the spine."""
    spacing = (c.base[side] - c.apex + 0.05) / 9.6
    y0 = c.apex - 0.04 + (number - 1) * spacing
    return y0 - 0.16 * q + 1.15 * q * q


def _draw_ribs(c: ChestCanvas, fracture: FindingInstance | None) -> None:
    a = c.anatomy
    thickness = 0.0105
    reach = _MEDIASTINUM + a.lung_width + 0.035
    axis = c.spine_x(c.y)
    for side, sign in SIDE_SIGN.items():
        q_full = sign * (c.x - axis)
        for number in range(1, 11):
            y_top = float(_rib_centre(c, side, number, np.float32(0.07)))
            rows = c.rows(y_top - 0.03, y_top + 0.2)
            q, y = q_full[rows], c.y[rows]
            along = c.soft(np.minimum(q - 0.02, reach - q), 2.0)
            centre = _rib_centre(c, side, number, np.clip(q, 0.0, None))
            broken = fracture is not None and fracture.rib == number and side in sides_of(fracture)
            q_break = _MEDIASTINUM + 0.62 * a.lung_width
            if broken and fracture.variant == "acute":
                centre = centre + np.where(q > q_break, 0.012, 0.0)
            offset = np.abs(y - centre)
            # Cortex brighter than the medulla.
            rib = c.soft(thickness - offset, 0.8) * (0.04 + 0.05 * np.clip(offset / thickness, 0.0, 1.0) ** 2) * along
            if broken and fracture.variant == "acute":
                rib *= 1.0 - c.soft(0.005 - np.abs(q - q_break), 0.6)
            c.att[rows] += rib
            if number <= 6:
                # Anterior rib: fainter, running down and medially from the lateral wall.
                y_front = float(_rib_centre(c, side, number, np.float32(reach))) + 0.015 + 0.3 * (reach - q)
                front = c.soft(thickness - np.abs(y - y_front), 0.8) * c.soft(np.minimum(q - 0.14, reach - q), 2.0)
                c.att[rows] += 0.025 * front
        if fracture is not None and fracture.variant == "healed" and side in sides_of(fracture):
            q_break = _MEDIASTINUM + 0.62 * a.lung_width
            y_break = float(_rib_centre(c, side, fracture.rib, np.float32(q_break)))
            c.att += 0.1 * c.disc(c.cx + sign * q_break, y_break, 0.017, 0.014)


def _draw_clavicles(c: ChestCanvas) -> None:
    for sign in SIDE_SIGN.values():
        inner = (c.cx + sign * 0.03, c.apex + 0.035)
        middle = (c.cx + sign * 0.17, c.apex - 0.015)
        outer = (c.cx + sign * 0.33, c.apex - 0.05)
        rows = c.rows(c.apex - 0.09, c.apex + 0.07)
        c.att[rows] += 0.08 * c.polyline([inner, middle, outer], 0.012, rows)


def _vessel_field(c: ChestCanvas) -> np.ndarray:
    """Lung markings: streaks radiating from each hilum, thinning towards the periphery (H, W)."""
    n_angle, n_radius = 720, 48
    table = _normalised(gaussian_filter(c.rng.standard_normal((n_angle, n_radius)), (6.0, 3.0), mode=("wrap", "nearest")))
    field = np.zeros_like(c.x)
    for side, (hx, hy) in c.hila.items():
        dx, dy = c.x - hx, c.y - hy
        rho = np.hypot(dx, dy)
        # The coarse field bends the streaks; the rising threshold thins them towards the periphery.
        angle = np.arctan2(dy, dx) + 0.12 * c.coarse
        angle_ix = ((angle + np.pi) * (n_angle / (2 * np.pi))).astype(np.int32) % n_angle
        radius_ix = np.minimum(rho * (n_radius / 0.5), n_radius - 1).astype(np.int32)
        streaks = np.clip(table[angle_ix, radius_ix] - 0.45 - 1.2 * rho, 0.0, None) * np.exp(-rho / 0.3)
        streaks *= 1.0 - np.exp(-((rho / 0.03) ** 2))  # no star where every streak meets
        field += np.where(SIDE_SIGN[side] * (c.x - c.cx) >= 0, streaks, 0.0)
    return field.astype(np.float32)


def _draw_markings(c: ChestCanvas, amplitude: float) -> None:
    aerated = np.clip(c.marking_mask, 0.0, 1.0) * np.clip(c.air, 0.0, 1.0)
    c.att += amplitude * (0.12 * _vessel_field(c) + 0.02 * c.fine) * aerated


# ---------------------------------------------------------------------- findings
def _effusion(c: ChestCanvas, f: FindingInstance) -> None:
    for side in sides_of(f):
        lung = c.lungs[side]
        height = (0.12, 0.2, 0.3)[(f.severity or 1) - 1] * (c.base[side] - c.apex)
        # Meniscus: the fluid climbs higher along the lateral chest wall.
        top = c.base[side] - height - 0.45 * height * np.clip(lung.uu, 0.0, 1.0) ** 2
        # The aeration map is already zero outside the lung: multiplying by the lung mask again would
        # leave a dark ring along the lung edge.
        fluid = c.soft(c.y - top, 2.5) * c.this_side(lung)
        c.air *= 1.0 - fluid
        c.att += 0.04 * fluid * lung.mask


def _pneumothorax(c: ChestCanvas, f: FindingInstance) -> None:
    shrink = (0.66, 0.52, 0.4)[(f.severity or 1) - 1]
    for side in sides_of(f):
        hx, hy = c.hila[side]
        lung = c.lungs[side]
        # Upright film: air rises, so the lung falls away from the apex most, from the lateral wall
        # less, and not at all at the base (collapse fades out from the hilum down to the dome).
        collapse = np.clip((c.base[side] - c.y) / (c.base[side] - hy), 0.0, 1.0)
        factor_y = np.where(c.y < hy, shrink, 1.0)
        factor_x = 1.0 - (1.0 - math.sqrt(shrink)) * collapse
        collapsed = c.lung_field(hx + (c.x - hx) / factor_x, hy + (c.y - hy) / factor_y, side).mask
        # Medially the lung stays attached at the hilum and mediastinum.
        rim = np.maximum(c.soft(hy - c.y, 6.0), c.soft(SIDE_SIGN[side] * (c.x - hx) - 0.03, 6.0)) * collapse
        gas = lung.mask * (1.0 - collapsed) * rim
        c.air = c.air * (1.0 - gas) + 1.05 * gas
        c.marking_mask *= 1.0 - gas
        pleural_edge = np.exp(-(((collapsed - 0.5) / 0.3) ** 2)) * lung.mask * rim
        c.att += 0.035 * pleural_edge


def _patchy(c: ChestCanvas, x0: float, y0: float, radius: float, density: float, side: str) -> None:
    r2 = ((c.x - x0) ** 2 + (c.y - y0) ** 2) / (radius * radius)
    envelope = np.exp(-0.5 * r2)
    patch = np.clip(1.7 * envelope + 0.45 * c.coarse - 0.55, 0.0, 1.0) * c.lungs[side].mask
    c.air *= 1.0 - density * patch


def _opacity(c: ChestCanvas, f: FindingInstance) -> None:
    density = (0.45, 0.6, 0.75)[(f.severity or 1) - 1]
    for side in sides_of(f):
        x0, y0 = c.location(side, f.zone or "lower")
        _patchy(c, x0, y0, 0.065, density, side)


def _airspace_disease(c: ChestCanvas, f: FindingInstance) -> None:
    for side in sides_of(f):
        x0, y0 = c.location(side, f.zone or "lower")
        if f.variant != "consolidation":
            _patchy(c, x0, y0, 0.085, 0.8, side)
            continue
        # Lobar consolidation: dense, homogeneous, with air bronchograms pointing to the hilum.
        r = np.sqrt(((c.x - x0) / 0.11) ** 2 + ((c.y - y0) / 0.085) ** 2)
        region = c.soft((1.0 - r) * 0.085 + 0.01 * c.coarse, 3.0) * c.lungs[side].mask
        c.air *= 1.0 - 0.9 * region
        hx, hy = c.hila[side]
        bronchi = np.zeros_like(c.x)
        towards = math.atan2(y0 - hy, x0 - hx)
        root = (x0 - 0.06 * math.cos(towards), y0 - 0.06 * math.sin(towards))
        for k in range(3):
            angle = towards + (k - 1) * 0.3
            end = (root[0] + 0.09 * math.cos(angle), root[1] + 0.09 * math.sin(angle))
            bronchi = np.maximum(bronchi, c.soft(0.0028 - _segment_distance(c.x, c.y, root, end), 0.7))
        c.air += 0.5 * bronchi * region


def _lesion(c: ChestCanvas, f: FindingInstance) -> None:
    side = sides_of(f)[0]
    x0, y0 = c.location(side, f.zone or "upper", uu=float(c.rng.uniform(0.4, 0.7)))
    radius = 0.5 * (f.size_mm or 10) * _UNITS_PER_MM
    if f.variant == "mass":
        theta = np.arctan2(c.y - y0, c.x - x0)
        radius_map = radius * (1.0 + 0.12 * np.sin(3.0 * theta + float(c.rng.uniform(0, 6.28))))
        body = c.soft(radius_map - np.hypot(c.x - x0, c.y - y0), 1.2)
    else:
        body = c.disc(x0, y0, radius, width=1.0)
    c.air *= 1.0 - body
    c.att += 0.06 * body


def _atelectasis(c: ChestCanvas, f: FindingInstance) -> None:
    half_width = (0.0055, 0.0075, 0.009)[(f.severity or 1) - 1]
    for side in sides_of(f):
        x0, y0 = c.location(side, f.zone or "lower", uu=0.5)
        tilt = math.radians(float(c.rng.uniform(-14.0, 14.0))) * SIDE_SIGN[side]
        dx, dy = 0.075 * math.cos(tilt), 0.075 * math.sin(tilt)
        band = c.soft(half_width - _segment_distance(c.x, c.y, (x0 - dx, y0 - dy), (x0 + dx, y0 + dy)), 0.8)
        c.air *= 1.0 - 0.75 * band * c.lungs[side].mask


def _edema(c: ChestCanvas, f: FindingInstance) -> None:
    sev = f.severity or 1
    sigma = 0.075 + 0.02 * sev
    density = (0.3, 0.45, 0.6)[sev - 1]
    for side, (hx, hy) in c.hila.items():
        haze = np.exp(-((c.x - hx) ** 2 + ((c.y - hy) * 0.8) ** 2) / (2 * sigma * sigma))
        c.air *= 1.0 - density * haze * c.lungs[side].mask


def _thickening(c: ChestCanvas, f: FindingInstance) -> None:
    for side in sides_of(f):
        lung = c.lungs[side]
        if f.variant == "apical":
            rim = c.soft(0.09 - lung.t, 1.5)
        else:
            rim = c.soft(0.012 - lung.wall_depth, 1.0) * c.soft(np.minimum(lung.t - 0.25, 0.92 - lung.t), 4.0)
            rim *= c.soft(lung.uu - 0.5, 4.0)
        c.air *= 1.0 - 0.85 * rim * c.this_side(lung)


def _cicatrix(c: ChestCanvas, f: FindingInstance) -> None:
    for side in sides_of(f):
        x0, y0 = c.location(side, "upper", uu=0.5)
        for _ in range(3):
            start = (x0 + float(c.rng.uniform(-0.06, 0.0)), y0 + float(c.rng.uniform(-0.05, 0.04)))
            mid = (start[0] + float(c.rng.uniform(0.02, 0.04)), start[1] + float(c.rng.uniform(-0.02, 0.02)))
            end = (mid[0] + float(c.rng.uniform(0.02, 0.04)), mid[1] + float(c.rng.uniform(-0.025, 0.025)))
            c.air *= 1.0 - 0.75 * c.polyline([start, mid, end], 0.0028) * c.lungs[side].mask


def _calcinosis(c: ChestCanvas, f: FindingInstance) -> None:
    if f.variant == "aortic":
        kx, ky, radius = c.cx + 0.05, c.apex + 0.11, 0.03
        ring = c.soft(0.0035 - np.abs(np.hypot(c.x - kx, c.y - ky) - radius), 0.7)
        theta = np.arctan2(c.y - ky, c.x - kx)
        arc = (theta > -2.6) & (theta < 0.3)
        dotted = 0.6 + 0.4 * np.cos(theta * 9.0)
        c.att += 0.32 * ring * arc * dotted
        return
    for side in sides_of(f):
        hx, hy = c.hila[side]
        for _ in range(int(c.rng.integers(2, 4))):
            dot_x = hx + SIDE_SIGN[side] * float(c.rng.uniform(0.0, 0.035))
            dot_y = hy + float(c.rng.uniform(-0.04, 0.04))
            c.att += 0.3 * c.disc(dot_x, dot_y, 0.0075, width=0.8)


def _hernia(c: ChestCanvas, f: FindingInstance) -> None:
    radius = (0.05, 0.065, 0.08)[(f.severity or 1) - 1]
    x0, y0 = c.cx + 0.015, c.heart[1] + 0.04
    sac = c.disc(x0, y0, radius, radius * 0.8, width=1.5)
    # Gas above a horizontal air-fluid level in the upper part of the sac.
    gas = sac * c.soft(y0 - 0.15 * radius - c.y, 0.7)
    c.att += 0.05 * sac - 0.22 * gas


def _foreign_object(c: ChestCanvas, f: FindingInstance) -> None:
    carina = c.apex + 0.13
    if f.variant == "ett":
        walls = np.zeros_like(c.x)
        for offset in (-0.0075, 0.0075):
            tip = carina - (f.size_mm or 40) * _UNITS_PER_MM
            walls = np.maximum(walls, c.polyline([(c.cx + offset, -0.05), (c.cx + offset, tip)], 0.0022))
        c.att += 0.3 * walls
        return
    sign = SIDE_SIGN[f.side or "right"]
    if f.variant == "central_line":
        path = [(c.cx + sign * 0.2, c.apex - 0.07), (c.cx + sign * 0.06, c.apex + 0.01), (c.cx - 0.028, c.apex + 0.2)]
        c.att += 0.28 * c.polyline(path, 0.0025)
        return
    # Pacemaker: generator in the upper chest wall, lead to the right ventricle.
    gx, gy = c.cx + sign * 0.23, c.apex + 0.02
    generator = c.soft(np.minimum(0.036 - np.abs(c.x - gx), 0.026 - np.abs(c.y - gy)), 1.0)
    hx, hy, half_width = c.heart
    lead = c.polyline([(gx, gy), (c.cx + sign * 0.05, c.apex + 0.05), (c.cx - 0.02, hy - 0.06), (hx + 0.3 * half_width, hy + 0.06)], 0.0022)
    c.att += 0.8 * generator + 0.35 * lead


def _degenerative_spine(c: ChestCanvas, f: FindingInstance) -> None:
    for level in range(5, 10):
        y_level = c.apex + 0.053 * level + 0.0265
        axis = float(c.spine_x(y_level))
        for sign in (-1.0, 1.0):
            c.att += 0.16 * c.disc(axis + sign * 0.036, y_level, 0.011, 0.006, width=0.8)


def _emphysema_bullae(c: ChestCanvas, f: FindingInstance) -> None:
    if (f.severity or 1) < 2:
        return
    for side in SIDE_SIGN:
        x0, y0 = c.location(side, "upper", uu=float(c.rng.uniform(0.45, 0.75)))
        bulla = c.disc(x0, y0 - 0.02, float(c.rng.uniform(0.03, 0.045)), width=1.5) * c.lungs[side].mask
        c.air = np.maximum(c.air, 1.15 * bulla)
        c.marking_mask *= 1.0 - bulla


# Findings drawn by changing the anatomy (cardiomegaly, hypoinflation, scoliosis), by another
# finding (pneumonia through its opacity or consolidation), in the ribs (fracture) or nowhere
# (normal) have no drawer here.
_DRAWERS = {
    "effusion": _effusion,
    "pneumothorax": _pneumothorax,
    "opacity": _opacity,
    "airspace_disease": _airspace_disease,
    "lesion": _lesion,
    "atelectasis": _atelectasis,
    "edema": _edema,
    "thickening": _thickening,
    "cicatrix": _cicatrix,
    "calcinosis": _calcinosis,
    "hernia": _hernia,
    "foreign_object": _foreign_object,
    "other_finding": _degenerative_spine,
    "emphysema": _emphysema_bullae,
}


def render_scene(scene: Scene, size: int = 224) -> np.ndarray:
    """Render a study as an 8-bit grayscale image.

    Args:
        scene: what to draw.
        size: width and height in pixels.

    Returns:
        ``uint8`` array of shape ``(size, size)``; bright is dense (bone, fluid), dark is air.
    """
    rng = np.random.default_rng(scene.noise_seed)
    c = ChestCanvas(scene.anatomy, size, rng)
    _draw_body(c)
    for finding in scene.findings:
        drawer = _DRAWERS.get(finding.id)
        if drawer is not None:
            drawer(c, finding)
    c.att -= c.anatomy.lung_air * c.air
    _draw_markings(c, c.anatomy.markings)
    _draw_spine(c)
    _draw_ribs(c, scene.get("fracture"))
    _draw_clavicles(c)
    att = gaussian_filter(c.att, 0.35 * size / 224.0 + 0.2)
    low = float(rng.uniform(-0.02, 0.03))
    high = float(rng.uniform(0.8, 0.9))
    # Film-like response: dense regions (abdomen, heart) saturate, so bone shows best over lung.
    exposure = np.clip((att - low) / (high - low), 0.0, 1.2)
    image = ((1.0 - np.exp(-2.0 * exposure)) / (1.0 - math.exp(-2.0))) ** scene.anatomy.gamma
    image = image + rng.normal(0.0, scene.anatomy.noise, image.shape).astype(np.float32)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
