"""The ``cardiac-2d`` phantom: a short-axis bSSFP cine stack (see :mod:`medlsdm.data.phantom`).

:func:`cardiac_anatomy` draws the label map and tissue map (the cardiac phase changes the
label map, so it is anatomy); :func:`render_cardiac` draws the image from the factors of
:data:`CARDIAC_FACTORS` and fresh fields and noise.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ..classes import CARDIAC
from .common import (
    CT_BLUR_SIGMA,
    DEFAULT_SHAPES,
    Anatomy,
    Factor,
    axis_mm,
    grid_spacing,
    label_lookup,
    rician,
    rotation_matrix,
    smooth_field,
    texture_field,
    tissue_lookup,
)

logger = logging.getLogger(__name__)


CARDIAC_TISSUES = {
    "air": (0.0, 0.0),
    "lv_blood": (800.0, 0.04),
    "myocardium": (250.0, 0.05),
    "papillary": (270.0, 0.05),
    "rv_blood": (780.0, 0.04),
    "rv_wall": (260.0, 0.05),
    "body": (330.0, 0.08),
    "fat": (650.0, 0.05),
    "lung": (60.0, 0.3),
}


CARDIAC_TISSUE_CLASS = {
    "lv_blood": "lv_blood_pool",
    "papillary": "lv_blood_pool",
    "myocardium": "myocardium",
    "rv_blood": "rv",
}


CARDIAC_FACTORS = (
    Factor("gain", 0.85, 1.15, "", "U(0.85, 1.15)", "multiplies the whole image (receiver gain)"),
    Factor(
        "blood_signal",
        0.85,
        1.15,
        "",
        "U(0.85, 1.15)",
        "multiplies the LV and RV blood signal (bSSFP blood brightness varies with flow and field)",
    ),
    Factor(
        "bias_strength",
        0.1,
        0.3,
        "",
        "U(0.1, 0.3)",
        "std of the log of the smooth in-plane bias field (correlation length 120 mm)",
    ),
    Factor(
        "slice_gain_spread",
        0.0,
        0.05,
        "",
        "U(0, 0.05)",
        "per-slice gains 1 + spread × U(−1, 1) (the gains themselves are drawn with the noise)",
    ),
    Factor("noise_rel", 0.02, 0.04, "", "U(0.02, 0.04)", "Rician noise std as a fraction of 800", scale="fine"),
)
"""Hidden appearance factors of ``cardiac-2d`` (the phase, end-diastole or end-systole, is anatomy)."""


def cardiac_anatomy(streams, shape) -> Anatomy:
    """Draw the anatomy of one short-axis stack: label map, tissue map, affine.

    Args:
        streams: the four anatomy generators of :func:`~medlsdm.data.phantom.common.anatomy_streams`.
        shape: grid ``(x, y, z)``.
    """
    rp, rf, _, _ = streams
    fov, spacing = grid_spacing("cardiac-2d", rp, shape)
    sx, sy, sz = spacing
    # Double-oblique short-axis plan: the slice axis (base -> apex) points left, anterior and
    # inferior (RAS world); the in-plane axes are closest to world x and -y.
    normal = np.array([-0.45, 0.40, -0.80])
    normal = rotation_matrix(rp.standard_normal(3), np.deg2rad(rp.uniform(0, 8))) @ (normal / np.linalg.norm(normal))
    e0 = np.array([1.0, 0.0, 0.0]) - normal[0] * normal
    e0 /= np.linalg.norm(e0)
    e0 = rotation_matrix(normal, np.deg2rad(rp.uniform(-10, 10))) @ e0
    e1 = np.cross(normal, e0)
    rot = np.stack([e0, e1, normal], axis=1)
    affine = np.eye(4)
    affine[:3, :3] = rot * spacing[None, :]
    centre_world = np.array([rp.uniform(-10, 30), rp.uniform(-10, 30), rp.uniform(0, 60)])
    affine[:3, 3] = centre_world - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)

    def in_plane(direction):  # unit 2-D direction in (p, q) of a world (RAS) direction
        d = np.array([direction @ e0, direction @ e1])
        return d / np.linalg.norm(d)

    d_rv = in_plane(np.array([1.0, 0.8, 0.0]))  # RV: patient's right and anterior of the LV
    d_ant = in_plane(np.array([0.0, 1.0, 0.0]))
    d_lung_l = in_plane(np.array([-1.0, -0.5, 0.0]))
    d_lung_r = in_plane(np.array([1.0, -0.6, 0.0]))

    systole = bool(rp.random() < 0.5)
    r_endo0 = rp.uniform(15, 20) if systole else rp.uniform(22, 28)
    wall = rp.uniform(11, 14) if systole else rp.uniform(8, 10)
    apex = fov[2] * rp.uniform(0.92, 1.05)  # distance base -> apex of the cavity
    ecc, ecc_angle = rp.uniform(0.88, 1.0), rp.uniform(0, np.pi)
    c_off = rp.uniform(-12, 12, 2)
    drift = rp.uniform(-1.5, 1.5, 2)  # mm per slice-thickness of LV centre drift
    rv_width = rp.uniform(14, 24) if not systole else rp.uniform(8, 15)
    rv_extent = rp.uniform(0.65, 0.85)
    papillary = [(rp.uniform(-2.6, -1.8), rp.uniform(3, 4.5)), (rp.uniform(1.8, 2.6), rp.uniform(3, 4.5))]
    body = dict(a=rp.uniform(150, 180), b=rp.uniform(105, 125), back=rp.uniform(30, 50))
    lungs = [
        (d_lung_l, rp.uniform(65, 80), rp.uniform(38, 48), rp.uniform(60, 75)),
        (d_lung_r, rp.uniform(80, 95), rp.uniform(35, 45), rp.uniform(55, 70)),
    ]
    fat_t = rp.uniform(4, 8)
    deform_mm = rp.uniform(1.0, 2.5)

    # in-plane coordinates (mm) relative to the LV centre, per slice (shape: x, y, z)
    p0 = axis_mm(shape[0], sx)[:, None, None]
    q0 = axis_mm(shape[1], sy)[None, :, None]
    zeta = ((np.arange(shape[2]) + 0.5) * sz).astype(np.float32)  # depth of the slice centre below the base
    length = (40.0, 40.0, 1e4)
    p = p0 - c_off[0] - drift[0] * zeta / 10 + deform_mm * smooth_field(rf, shape, spacing, fov, length)
    q = q0 - c_off[1] - drift[1] * zeta / 10 + deform_mm * smooth_field(rf, shape, spacing, fov, length)
    z = np.broadcast_to(zeta[None, None, :], shape)

    tissues = list(CARDIAC_TISSUES)
    T = tissues.index
    tissue = np.zeros(shape, np.uint8)
    ant = p * d_ant[0] + q * d_ant[1]
    lat = -p * d_ant[1] + q * d_ant[0]
    body_in = (lat / body["a"]) ** 2 + ((ant + body["back"]) / body["b"]) ** 2 <= 1
    tissue[body_in] = T("fat")
    tissue[(lat / (body["a"] - fat_t)) ** 2 + ((ant + body["back"]) / (body["b"] - fat_t)) ** 2 <= 1] = T("body")
    for d, dist, a_l, b_l in lungs:  # ellipses elongated along the antero-posterior direction
        pl, ql = p - dist * d[0], q - dist * d[1]
        along, across = pl * d_ant[0] + ql * d_ant[1], -pl * d_ant[1] + ql * d_ant[0]
        tissue[body_in & ((across / a_l) ** 2 + ((along + 15) / b_l) ** 2 <= 1)] = T("lung")

    # LV: elliptical rings shrinking toward the apex
    ca, sa = np.cos(ecc_angle), np.sin(ecc_angle)
    rr = np.sqrt(((p * ca + q * sa) / ecc) ** 2 + (-p * sa + q * ca) ** 2)
    shrink_endo = np.sqrt(np.clip(1 - (z / apex) ** 2, 0, 1))
    shrink_epi = np.sqrt(np.clip(1 - (z / (apex + wall)) ** 2, 0, 1))
    r_endo = r_endo0 * shrink_endo
    r_epi = (r_endo0 + wall) * shrink_epi
    epi = rr <= r_epi
    # RV: the part of an ellipse shifted toward d_rv that lies outside the LV (a crescent)
    rv_scale = np.sqrt(np.clip(1 - (z / (rv_extent * apex)) ** 2, 0, 1))
    r_epi0 = r_endo0 + wall
    centre = 0.55 * r_epi0
    pa, pt = p * d_rv[0] + q * d_rv[1] - centre, -p * d_rv[1] + q * d_rv[0]
    semi_a = (r_epi0 + rv_width) * rv_scale + 1e-3
    semi_t = 1.45 * r_epi0 * rv_scale + 1e-3
    rv_outer = (pa / semi_a) ** 2 + (pt / semi_t) ** 2 <= 1
    rv_inner = (pa / np.maximum(semi_a - 3, 1e-3)) ** 2 + (pt / np.maximum(semi_t - 3, 1e-3)) ** 2 <= 1
    lv_shield = rr <= r_epi + 1.0
    tissue[rv_outer & ~lv_shield] = T("rv_wall")
    tissue[rv_inner & ~lv_shield] = T("rv_blood")
    tissue[epi] = T("myocardium")
    tissue[rr <= r_endo] = T("lv_blood")
    # papillary muscles: two small discs inside the cavity at mid-ventricular levels
    ang0 = np.arctan2(d_rv[1], d_rv[0])
    for ang, rad in papillary:
        cp = 0.6 * r_endo * np.cos(ang0 + ang)
        cq = 0.6 * r_endo * np.sin(ang0 + ang)
        mid = (z > 0.2 * apex) & (z < 0.75 * apex)
        tissue[mid & ((p - cp) ** 2 + (q - cq) ** 2 <= rad**2) & (rr <= r_endo)] = T("papillary")

    label = label_lookup(tissues, CARDIAC_TISSUE_CLASS, CARDIAC)[tissue]
    return Anatomy("cardiac-2d", label, affine, tissue, spacing, fov)


def render_cardiac(anatomy: Anatomy, factors: dict, rng: np.random.Generator) -> np.ndarray:
    """Render a short-axis anatomy: tissue signal + texture → in-plane blur → bias, gains → Rician noise.

    Args:
        anatomy: from :func:`cardiac_anatomy`.
        factors: a complete, checked factor dict (:data:`CARDIAC_FACTORS`).
        rng: the appearance's noise generator (texture, fields, slice gains, noise).
    """
    tissue, shape, spacing, fov = anatomy.tissue, anatomy.tissue.shape, anatomy.spacing, anatomy.fov
    tissues = list(CARDIAC_TISSUES)
    means, rel = tissue_lookup(tissues, CARDIAC_TISSUES)
    for name in ("lv_blood", "rv_blood"):
        means[tissues.index(name)] *= np.float32(factors["blood_signal"])
    # grid-independent draws first (bias field, slice gains), so they are the same at any shape
    bias = smooth_field(rng, shape, spacing, fov, (120.0, 120.0, 1e4))
    n_default = DEFAULT_SHAPES["cardiac-2d"][2]
    slice_gain = 1 + factors["slice_gain_spread"] * rng.uniform(-1, 1, n_default)
    image = means[tissue] * (1 + rel[tissue] * texture_field(rng, shape, (1.0, 1.0, 0.0)))
    image = ndimage.gaussian_filter(image, (CT_BLUR_SIGMA, CT_BLUR_SIGMA, 0.0))
    bias = np.exp(factors["bias_strength"] * (bias - bias.mean()))
    gains = np.interp(np.arange(shape[2]) * (n_default - 1) / max(shape[2] - 1, 1), np.arange(n_default), slice_gain)
    gains = (factors["gain"] * gains).astype(np.float32)
    image = rician(rng, image * bias * gains[None, None, :], factors["noise_rel"] * 800.0)
    return image.astype(np.float32)
