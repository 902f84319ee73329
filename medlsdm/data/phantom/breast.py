"""The ``breast-mr`` phantom: a prone fat-saturated T1 breast MR block (see :mod:`medlsdm.data.phantom`).

:func:`breast_anatomy` draws the label map and tissue map (breast density, the fraction of
fibroglandular tissue, changes the label map, so it is anatomy); :func:`render_breast` draws
the image from the factors of :data:`BREAST_FACTORS` and fresh fields and noise.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..classes import BREAST_MR
from .common import (
    CT_BLUR_SIGMA,
    Anatomy,
    Factor,
    axis_mm,
    grid_spacing,
    label_lookup,
    rician,
    smooth_field,
    texture_field,
    tissue_lookup,
)

logger = logging.getLogger(__name__)


# MR tissues: (mean intensity, relative texture std). Tissues that are not a class are
# rendered but labelled background. Breast: fat-saturated T1 pre-contrast (as the Duke
# segmentations); cardiac: bSSFP cine.
BREAST_TISSUES = {
    "air": (0.0, 0.0),
    "breast_fat": (150.0, 0.08),
    "fibroglandular": (480.0, 0.08),
    "vessel": (1000.0, 0.05),
    "thorax_fat": (140.0, 0.08),
    "muscle": (330.0, 0.05),
    "lung": (30.0, 0.3),
    "heart": (450.0, 0.06),
}


BREAST_TISSUE_CLASS = {"breast_fat": "breast", "fibroglandular": "fibroglandular", "vessel": "vessel"}


BREAST_FACTORS = (
    Factor("gain", 0.88, 1.08, "", "U(0.88, 1.08)", "multiplies the whole image (receiver gain)"),
    Factor(
        "bias_strength",
        0.08,
        0.22,
        "",
        "U(0.08, 0.22)",
        "std of the log of the smooth multiplicative bias field (correlation length 150 mm)",
    ),
    Factor(
        "coil_gradient",
        0.0005,
        0.0015,
        "1/mm",
        "U(0.0005, 0.0015)",
        "log-intensity gain per mm toward the breast coil (anterior)",
    ),
    Factor(
        "fat_signal",
        0.75,
        1.3,
        "",
        "U(0.75, 1.3)",
        "multiplies the fat signal (how incomplete the fat suppression is), before its uneven field",
    ),
    Factor("noise_rel", 0.015, 0.03, "", "U(0.015, 0.03)", "Rician noise std as a fraction of 500", scale="fine"),
)
"""Hidden appearance factors of ``breast-mr`` (density and vessel count are anatomy: they change the label map)."""


FAT_SAT_UNEVENNESS = 0.25
"""Std of the log of the smooth field that makes fat suppression uneven (correlation length 80 mm)."""


def breast_anatomy(streams, shape) -> Anatomy:
    """Draw the anatomy of one breast case: label map, tissue map, affine, antero-posterior coordinate.

    Args:
        streams: the four anatomy generators of :func:`~medlsdm.data.phantom.common.anatomy_streams`.
        shape: grid ``(x, y, z)``.
    """
    rp, rf, rx, _ = streams
    fov, spacing = grid_spacing("breast-mr", rp, shape)
    sx, sy, sz = spacing
    # LAS affine (as often after DICOM → NIfTI conversion of axial breast MR): i -> left, j -> anterior.
    centre_world = np.array([rp.uniform(-15, 15), rp.uniform(20, 60), rp.uniform(-80, 40)])
    affine = np.diag([-sx, sy, sz, 1.0])
    affine[:3, 3] = centre_world - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)

    du, dw = rp.uniform(-10, 10), rp.uniform(-8, 8)
    theta = np.deg2rad(rp.uniform(-5, 5))
    deform_mm = rp.uniform(2.0, 5.0)
    v_wall = -fov[1] / 2 + rp.uniform(0.32, 0.40) * fov[1]  # anterior surface of the chest wall
    thorax = dict(a=rp.uniform(150, 175), b=rp.uniform(100, 130), fat=rp.uniform(5, 12), muscle=rp.uniform(10, 18))
    lung_ab = (rp.uniform(0.28, 0.34), rp.uniform(0.5, 0.6))
    heart = dict(uc=rp.uniform(5, 25), a=rp.uniform(45, 60), b=rp.uniform(40, 55))
    room = fov[1] / 2 - v_wall - 8 - deform_mm  # space in front of the chest wall
    breasts = {}
    size = rp.uniform(0.75, 1.15)  # one scale per woman, small asymmetry per side
    for side in (-1, 1):
        asym = rp.uniform(0.92, 1.08)
        r_u = min(62 * size * asym, 0.45 * thorax["a"])
        breasts[side] = dict(
            uc=side * rp.uniform(68, 92),
            wc=rp.uniform(-12, 12),
            ru=r_u,
            rw=r_u * rp.uniform(0.9, 1.1),
            depth=min(rp.uniform(70, 105) * size * asym, room + 10),
            k=rp.uniform(1.6, 2.6),
        )
    density = rp.uniform(0.08, 0.45)  # fraction of breast tissue that is fibroglandular
    central = rp.uniform(0.8, 1.6)  # how strongly the FGT gathers behind the nipple
    n_vessels = [int(rp.integers(3, 8)) for _ in (-1, 1)]

    u0 = axis_mm(shape[0], sx)[:, None, None] * np.float32(-np.sign(affine[0, 0]))
    v0 = axis_mm(shape[1], sy)[None, :, None] * np.float32(np.sign(affine[1, 1]))
    w0 = axis_mm(shape[2], sz)[None, None, :]
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    length = (60.0, 60.0, 60.0)
    u = c * (u0 - du) + s * v0 + deform_mm * smooth_field(rf, shape, spacing, fov, length)
    v = -s * (u0 - du) + c * v0 + deform_mm * smooth_field(rf, shape, spacing, fov, length)
    w = (w0 - dw) + deform_mm * smooth_field(rf, shape, spacing, fov, length)
    w = np.broadcast_to(w, shape)

    tissues = list(BREAST_TISSUES)
    T = tissues.index
    tissue = np.zeros(shape, np.uint8)
    tv = v - (v_wall - thorax["b"])  # thorax centre behind the chest wall
    thorax_in = (u / thorax["a"]) ** 2 + (tv / thorax["b"]) ** 2 <= 1
    tissue[thorax_in] = T("thorax_fat")
    f = thorax["fat"]
    tissue[(u / (thorax["a"] - f)) ** 2 + (tv / (thorax["b"] - f)) ** 2 <= 1] = T("muscle")
    m = f + thorax["muscle"]
    inner = (u / (thorax["a"] - m)) ** 2 + (tv / (thorax["b"] - m)) ** 2 <= 1
    for side in (-1, 1):
        la, lb = lung_ab[0] * thorax["a"], lung_ab[1] * thorax["b"]
        tissue[inner & (((u - side * 0.5 * thorax["a"]) / la) ** 2 + ((tv + 0.1 * thorax["b"]) / lb) ** 2 <= 1)] = T(
            "lung"
        )
    tissue[inner & (((u - heart["uc"]) / heart["a"]) ** 2 + ((tv - 0.35 * thorax["b"]) / heart["b"]) ** 2 <= 1)] = T(
        "heart"
    )

    breast = np.zeros(shape, bool)
    centrality = np.zeros(shape, np.float32)  # 1 on the breast's axis, 0 at its skin
    base = v_wall - 20.0
    for side, br in breasts.items():
        h = np.clip((v - base) / (br["depth"] + 20.0), 0, 1)
        rho2 = ((u - br["uc"]) / br["ru"]) ** 2 + ((w - br["wc"]) / br["rw"]) ** 2
        limit = 1 - h ** br["k"]
        inside = (v >= base) & (rho2 <= limit) & ~thorax_in
        breast |= inside
        centrality = np.where(inside, 1 - rho2 / np.maximum(limit, 1e-3), centrality)
    tissue[breast] = T("breast_fat")
    fgt_field = smooth_field(rf, shape, spacing, fov, (9.0, 9.0, 9.0)) + central * centrality
    in_breast = fgt_field[breast]
    if in_breast.size:
        threshold = np.quantile(in_breast, 1 - density)
        tissue[breast & (fgt_field > threshold) & (centrality > 0.12)] = T("fibroglandular")

    # vessels: smooth random curves from the chest wall toward the nipple, rasterised by distance
    points, radii = [], []
    for side, n in zip((-1, 1), n_vessels):
        br = breasts[side]
        nipple = np.array([br["uc"], base + br["depth"] + 20.0, br["wc"]])
        for _ in range(n):
            phi = rx.uniform(0, 2 * np.pi)
            start = np.array(
                [
                    br["uc"] + 0.75 * br["ru"] * np.cos(phi),
                    base + rx.uniform(0, 15),
                    br["wc"] + 0.75 * br["rw"] * np.sin(phi),
                ]
            )
            steps = int(rx.uniform(0.6, 1.0) * np.linalg.norm(nipple - start))
            heading = (nipple - start) / np.linalg.norm(nipple - start)
            wander = np.cumsum(rx.standard_normal((steps, 3)) * 0.08, axis=0)
            wander = ndimage.gaussian_filter1d(wander, 6, axis=0)
            dirs = heading + wander
            dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
            points.append(start + np.cumsum(dirs, axis=0))  # 1 mm steps
            radii.append(np.full(steps, rx.uniform(1.5, 3.0)))
    if points:
        pts, rad = np.concatenate(points), np.concatenate(radii)
        idx = np.nonzero(breast)
        query = np.stack([u[idx], v[idx], w[idx]], axis=1)
        dist, nearest = cKDTree(pts).query(query, distance_upper_bound=3.5)
        hit = np.isfinite(dist)
        reach = np.maximum(rad[np.minimum(nearest, len(rad) - 1)], 0.55 * float(max(spacing)))
        hit &= dist <= reach
        tissue[tuple(i[hit] for i in idx)] = T("vessel")

    label = label_lookup(tissues, BREAST_TISSUE_CLASS, BREAST_MR)[tissue]
    return Anatomy("breast-mr", label, affine, tissue, spacing, fov, fields={"v": np.ascontiguousarray(v, np.float32)})


def render_breast(anatomy: Anatomy, factors: dict, rng: np.random.Generator) -> np.ndarray:
    """Render a breast anatomy: tissue signal + texture → uneven fat signal → blur → bias field, gain → Rician noise.

    Args:
        anatomy: from :func:`breast_anatomy`.
        factors: a complete, checked factor dict (:data:`BREAST_FACTORS`).
        rng: the appearance's noise generator (texture, fields, noise).
    """
    tissue, shape, spacing, fov = anatomy.tissue, anatomy.tissue.shape, anatomy.spacing, anatomy.fov
    tissues = list(BREAST_TISSUES)
    means, rel = tissue_lookup(tissues, BREAST_TISSUES)
    # smooth fields first: their draws do not depend on the grid, so they are the same at any shape
    fat_sat = smooth_field(rng, shape, spacing, fov, (80.0, 80.0, 80.0))
    bias = smooth_field(rng, shape, spacing, fov, (150.0, 150.0, 150.0))
    image = means[tissue] * (1 + rel[tissue] * texture_field(rng, shape, 1.0))
    fat = (tissue == tissues.index("breast_fat")) | (tissue == tissues.index("thorax_fat"))
    fat_sat = factors["fat_signal"] * np.exp(FAT_SAT_UNEVENNESS * (fat_sat - fat_sat.mean()))
    image = np.where(fat, image * fat_sat, image)
    image = ndimage.gaussian_filter(image, CT_BLUR_SIGMA)
    bias = np.exp(factors["bias_strength"] * (bias - bias.mean()) + factors["coil_gradient"] * anatomy.fields["v"])
    image = rician(rng, image * bias * factors["gain"], factors["noise_rel"] * 500.0)
    return image.astype(np.float32)
