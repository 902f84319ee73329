"""The ``torso-ct`` phantom: an abdominal CT block in Hounsfield units (see :mod:`medlsdm.data.phantom`).

Two steps. :func:`torso_anatomy` draws the label map (9 classes) and a finer tissue map
(:data:`TORSO_TISSUES`: ribs, spleen, bowel, mesenteric fat, muscle, intrahepatic vessels,
renal medulla, lesion rims and necrotic cores, all labelled as their surrounding class);
:func:`render_torso` turns the tissue map into HU from the hidden per-case factors of
:data:`TORSO_FACTORS` (drawn by :func:`draw_torso_factors`) and fresh texture and noise.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..classes import TORSO_CT
from .common import (
    CT_BLUR_SIGMA,
    Anatomy,
    Factor,
    axis_mm,
    grid_spacing,
    label_lookup,
    smooth_field,
    superellipse,
    texture_field,
)

logger = logging.getLogger(__name__)


CT_CLIP_HU = (-1024.0, 3071.0)


# tissue: (class, non-contrast HU, texture std HU, enhancement HU at contrast 1 in the
# (arterial, portal-venous) phase). The class is what the label map shows.
TORSO_TISSUES = {
    "air": ("background", -1000.0, 0.0, (0.0, 0.0)),
    "fat": ("fat", -100.0, 8.0, (0.0, 0.0)),  # subcutaneous
    "visceral": ("soft_tissue", 35.0, 8.0, (10.0, 15.0)),  # mediastinum, mesentery, organs not drawn
    "muscle": ("soft_tissue", 50.0, 6.0, (10.0, 15.0)),  # abdominal wall, psoas, paraspinal
    "mesenteric_fat": ("soft_tissue", -95.0, 8.0, (0.0, 0.0)),
    "visceral_fat": ("soft_tissue", -95.0, 8.0, (0.0, 0.0)),  # retroperitoneal (perirenal), mediastinal
    "heart": ("soft_tissue", 40.0, 6.0, (250.0, 150.0)),  # blood pool and myocardium together
    "canal": ("soft_tissue", 10.0, 4.0, (0.0, 0.0)),  # spinal canal (CSF)
    "rib": ("soft_tissue", 450.0, 60.0, (0.0, 0.0)),  # set from the bone_hu factor
    "spleen": ("soft_tissue", 45.0, 6.0, (90.0, 80.0)),
    "bowel_wall": ("soft_tissue", 40.0, 8.0, (40.0, 30.0)),
    "bowel_fluid": ("soft_tissue", 15.0, 12.0, (0.0, 0.0)),  # plus the oral contrast factor
    "bowel_gas": ("soft_tissue", -900.0, 40.0, (0.0, 0.0)),
    "lung": ("lung", -850.0, 25.0, (0.0, 0.0)),
    "pulmonary_vessel": ("lung", 40.0, 6.0, (250.0, 150.0)),
    "liver": ("liver", 60.0, 6.0, (20.0, 60.0)),  # minus the steatosis factor
    "hepatic_vessel": ("liver", 40.0, 4.0, (30.0, 170.0)),
    "kidney_cortex": ("kidney", 35.0, 8.0, (160.0, 140.0)),
    "kidney_medulla": ("kidney", 30.0, 8.0, (40.0, 130.0)),
    "bone": ("bone", 600.0, 30.0, (0.0, 0.0)),  # vertebra; set from the bone_hu factor
    "aorta": ("aorta", 40.0, 4.0, (320.0, 160.0)),
    "lesion_solid": ("lesion", 5.0, 6.0, (10.0, 15.0)),  # hypovascular metastasis (data_cards/phantom.md)
    "lesion_rim": ("lesion", 25.0, 6.0, (60.0, 20.0)),  # the outer 15 % of the radius; rim enhancement, arterial
    "lesion_core": ("lesion", 0.0, 4.0, (0.0, 0.0)),  # necrosis
}
"""Tissues of the torso phantom: ``name: (class, non-contrast HU, texture std HU, (arterial, portal-venous)
enhancement HU at contrast 1)``."""


DEFAULT_TISSUE = {
    "background": "air",
    "soft_tissue": "visceral",
    "fat": "fat",
    "lung": "lung",
    "liver": "liver",
    "kidney": "kidney_cortex",
    "bone": "bone",
    "aorta": "aorta",
    "lesion": "lesion_solid",
}
"""The tissue a class is drawn as before the unlabelled anatomy refines it."""


CONTRAST_PHASES = ("non-contrast", "arterial", "portal-venous")
PHASE_PROBABILITIES = (0.25, 0.25, 0.5)
STEATOSIS_HU = 80.0
"""Liver attenuation lost at steatosis 1 (HU)."""
STEATOSIS_QUANTILES = ((0.0, 0.70, 0.938, 1.0), (0.0, 0.1, 0.25, 1.0))
"""The steatosis prior as its quantile function, piecewise linear through ``(u, steatosis)`` knots:
70 % of livers lose at most 8 HU (none), 23.8 % 8-20 HU (mild), 6.2 % 20-80 HU, i.e. an unenhanced
liver at or below 40 HU, the prevalence of moderate-to-severe steatosis among 3,357 asymptomatic
adults at unenhanced CT (Boyce et al., *AJR* 194:623, 2010; ``data_cards/phantom.md``)."""
LESION_RADIUS_MM = (10.0, 20.0)
"""Radius range of the liver lesions (1-3 a case): 20-40 mm across, measurable by RECIST 1.1 (>= 10 mm)
and at least 3 voxels across on the quick grid (5.5-6 mm), so a segmentation network can find them."""
LESION_NECROSIS = (0.0, 0.6)
"""Range of a lesion's necrotic core, as a fraction of its radius (unlabelled: it stays ``lesion``)."""
LESION_RIM = 0.85
"""A lesion's enhancing rim: the voxels beyond this fraction of its radius."""


TORSO_FACTORS = (
    Factor(
        "phase",
        0,
        0,
        "",
        "non-contrast 25 %, arterial 25 %, portal-venous 50 %",
        "which enhancement column of TORSO_TISSUES applies",
        choices=CONTRAST_PHASES,
    ),
    Factor(
        "contrast",
        0.0,
        1.0,
        "",
        "0 for non-contrast (where it has no effect), else U(0.3, 1) (dose, bolus timing)",
        "adds contrast × enhancement: arterial aorta +320, cortex +160, medulla +40, liver +20; "
        "portal-venous aorta +160, cortex +140, medulla +130, liver +60, hepatic vessels +170 HU",
    ),
    Factor(
        "steatosis",
        0.0,
        1.0,
        "",
        "U(0, 0.1) with p 0.7, U(0.1, 0.25) with p 0.238, U(0.25, 1) with p 0.062 (STEATOSIS_QUANTILES)",
        "liver parenchyma −80 × steatosis HU (vessels and lesions unchanged)",
    ),
    Factor(
        "bone_hu",
        300.0,
        700.0,
        "HU",
        "U(300, 700)",
        "mean HU of the vertebra (bone mineral density); ribs get 0.8 × bone_hu",
    ),
    Factor("oral_contrast_hu", 0.0, 350.0, "HU", "0 with p 0.7, else U(150, 350)", "added to bowel contents"),
    Factor("noise_hu", 8.0, 25.0, "HU", "U(8, 25)", "std of the correlated (band-pass) CT noise", scale="fine"),
)
"""Hidden appearance factors of ``torso-ct``; the label map fixes none of them."""


NOISE_BAND_SIGMAS = (0.7, 2.0)
"""CT-kernel-like noise: white noise filtered by G(sigma_0) - G(sigma_1) (voxels), then scaled to unit std."""


def torso_anatomy(streams, shape, z_extent_mm: float | None = None) -> Anatomy:
    """Draw the anatomy of one torso case: label map, tissue map, affine.

    Args:
        streams: the four anatomy generators of :func:`~medlsdm.data.phantom.common.anatomy_streams`.
        shape: grid ``(x, y, z)``.
        z_extent_mm: a longer (or shorter) field of view along z, mm (see :func:`draw_anatomy`).
    """
    rp, rf, rx, ra = streams
    fov, spacing = grid_spacing("torso-ct", rp, shape, z_extent_mm)
    sx, sy, sz = spacing
    # LPS-like affine as after DICOM conversion: i -> patient left, j -> posterior, k -> superior.
    centre_world = np.array([rp.uniform(-20, 20), rp.uniform(-40, 0), rp.uniform(-400, -100)])
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = centre_world - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)

    # ---- anatomy parameters (a fixed number of draws, so they never depend on the grid)
    du, dv, dw = rp.uniform(-12, 12), rp.uniform(-12, 12), rp.uniform(-10, 10)
    theta = np.deg2rad(rp.uniform(-7, 7))
    deform_mm = rp.uniform(3.0, 6.0)
    margin = 15.0 + deform_mm  # keep the skin inside the field of view
    a = min(rp.uniform(150, 180), fov[0] / 2 - abs(du) - margin)  # half width (left-right)
    b = min(rp.uniform(110, 130), fov[1] / 2 - abs(dv) - margin)  # half depth (antero-posterior)
    p = rp.uniform(2.0, 2.8)  # superellipse exponent: 2 = ellipse, larger = boxier
    back = rp.uniform(0.85, 1.0)  # the back is flatter than the belly
    taper = rp.uniform(-0.05, 0.05)  # body width change per 100 mm along z
    fat_t, fat_phase = rp.uniform(12, 28), rp.uniform(0, np.pi)
    # vertebra
    vb_u, vb_v = rp.uniform(20, 24), rp.uniform(14, 17)
    v_sp = -b * back + rp.uniform(62, 76)
    canal_r = rp.uniform(7, 9)
    # aorta (anterior-left of the vertebral body)
    r_ao = rp.uniform(9, 11)
    u_ao, drift_ao = rp.uniform(14, 24), rp.uniform(-0.04, 0.04)
    # lungs: per side (right = -1, left = +1): centre, semi-axes, dome base and height
    lungs = {}
    w_base_r = rp.uniform(-5, 15)
    for side in (-1, 1):
        lungs[side] = dict(
            uc=side * a * rp.uniform(0.46, 0.54),
            vc=rp.uniform(-10, 5),
            ru=a * rp.uniform(0.30, 0.36),
            rv=b * rp.uniform(0.58, 0.68),
            base=w_base_r - (0.0 if side < 0 else rp.uniform(8, 20)),
            h=rp.uniform(22, 35),
        )
    heart = dict(
        uc=rp.uniform(5, 25), vc=rp.uniform(10, 30), a=rp.uniform(50, 62), b=rp.uniform(42, 52), c=rp.uniform(55, 70)
    )
    heart["wc"] = lungs[1]["base"] + lungs[1]["h"] + 0.6 * heart["c"]
    # liver (right side, under the right dome) and its left lobe
    liver = dict(
        uc=-a * rp.uniform(0.40, 0.50),
        vc=rp.uniform(-10, 15),
        a=a * rp.uniform(0.40, 0.46),
        b=b * rp.uniform(0.62, 0.74),
        c=rp.uniform(75, 95),
    )
    liver["wc"] = lungs[-1]["base"] + lungs[-1]["h"] - 0.8 * liver["c"]
    lobe = dict(
        uc=a * rp.uniform(0.0, 0.12),
        vc=b * rp.uniform(0.25, 0.38),
        a=a * rp.uniform(0.28, 0.38),
        b=b * rp.uniform(0.22, 0.32),
        c=liver["c"] * rp.uniform(0.35, 0.5),
    )
    lobe["wc"] = liver["wc"] + liver["c"] * rp.uniform(0.25, 0.4)
    # kidneys: posterior, beside the spine, the right one a little lower
    kidneys = {}
    for side in (-1, 1):
        kidneys[side] = dict(
            uc=side * rp.uniform(62, 78),
            vc=v_sp + rp.uniform(-8, 4),
            ru=rp.uniform(22, 27),
            rv=rp.uniform(17, 21),
            rw=rp.uniform(45, 55),
            wc=lungs[1]["base"] - rp.uniform(55, 70) - (rp.uniform(8, 18) if side < 0 else 0.0),
            tilt=np.deg2rad(rp.uniform(8, 18)),
        )

    # ---- coordinates in the body frame, deformed
    u0 = axis_mm(shape[0], sx)[:, None, None] * np.float32(-np.sign(affine[0, 0]))  # +u = patient left
    v0 = axis_mm(shape[1], sy)[None, :, None] * np.float32(np.sign(affine[1, 1]))  # +v = anterior
    w0 = axis_mm(shape[2], sz)[None, None, :]
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    length = (70.0, 70.0, 90.0)
    u = c * (u0 - du) + s * (v0 - dv) + deform_mm * smooth_field(rf, shape, spacing, fov, length)
    v = -s * (u0 - du) + c * (v0 - dv) + deform_mm * smooth_field(rf, shape, spacing, fov, length)
    w = (w0 - dw) + 0.5 * deform_mm * smooth_field(rf, shape, spacing, fov, length)

    # ---- label map, painted in order (later classes overwrite earlier ones)
    L = TORSO_CT.index
    label = np.zeros(shape, np.uint8)
    a_w = a * (1 + taper * w / 100.0)
    b_v = np.where(v >= 0, np.float32(b), np.float32(b * back))
    label[superellipse(u, v, a_w, b_v, p) <= 1] = L("fat")
    t = fat_t * (1 + 0.3 * np.cos(2 * (np.arctan2(v, u) - fat_phase)))
    label[superellipse(u, v, a_w - t, b_v - t, p) <= 1] = L("soft_tissue")
    wall = superellipse(u, v, a_w - t - 14, b_v - t - 14, p) <= 1  # inside the muscle wall

    def dome(lung, u, v):
        rho2 = np.minimum(((u - lung["uc"]) / lung["ru"]) ** 2 + ((v - lung["vc"]) / lung["rv"]) ** 2, 1.0)
        return rho2, lung["base"] + lung["h"] * (1 - rho2)

    def ellipsoid(o, u, v, w):
        return ((u - o["uc"]) / o["a"]) ** 2 + ((v - o["vc"]) / o["b"]) ** 2 + ((w - o["wc"]) / o["c"]) ** 2 <= 1

    _, dome_r = dome(lungs[-1], u, v)
    _, dome_l = dome(lungs[1], u, v)
    liver_mask = wall & (ellipsoid(liver, u, v, w) & (w < dome_r - 3) | ellipsoid(lobe, u, v, w) & (w < dome_l - 3))
    label[liver_mask] = L("liver")
    kidney_rho = np.full(shape, np.inf, np.float32)  # normalised radius inside each kidney
    for side, k in kidneys.items():
        ct, st = np.cos(k["tilt"]), side * np.sin(k["tilt"])  # upper pole tilted toward the spine
        du_k, dw_k = u - k["uc"], w - k["wc"]
        ku, kw = ct * du_k + st * dw_k, -st * du_k + ct * dw_k
        rho = np.sqrt((ku / k["ru"]) ** 2 + ((v - k["vc"]) / k["rv"]) ** 2 + (kw / k["rw"]) ** 2)
        label[(rho <= 1) & wall] = L("kidney")
        kidney_rho = np.minimum(kidney_rho, rho)
    heart_mask = ellipsoid(heart, u, v, w)
    for side, lung in lungs.items():
        rho2 = ((u - lung["uc"]) / lung["ru"]) ** 2 + ((v - lung["vc"]) / lung["rv"]) ** 2
        inside = (rho2 <= 1) & (w > lung["base"] + lung["h"] * (1 - np.minimum(rho2, 1.0)))
        label[inside & wall & ~heart_mask] = L("lung")
    # vertebra: body, arch around the canal, spinous process
    v_canal = v_sp - vb_v - canal_r - 1
    r_canal = np.sqrt(u**2 + (v - v_canal) ** 2)
    bone = (u / vb_u) ** 2 + ((v - v_sp) / vb_v) ** 2 <= 1
    bone |= (r_canal >= canal_r) & (r_canal <= canal_r + 5)
    bone |= (u / 5.5) ** 2 + ((v - (v_canal - canal_r - 14)) / 13) ** 2 <= 1
    label[bone] = L("bone")
    label[(u - (u_ao + drift_ao * w)) ** 2 + (v - (v_sp + vb_v + r_ao + 3)) ** 2 <= r_ao**2] = L("aorta")
    # 1-3 lesions: spheres of 10-20 mm radius (data_cards/phantom.md says why) at random points of the
    # (undeformed) liver ellipsoid, kept in the liver; each with a necrotic core of a random fraction
    # of its radius (unlabelled)
    necrosis = ra.uniform(*LESION_NECROSIS, 3)
    lesion_rho = np.full(shape, np.inf, np.float32)
    lesion_core = np.zeros(shape, np.float32)
    for n in range(int(rx.integers(1, 4))):
        while True:
            pt = rx.uniform(-0.6, 0.6, 3)
            if (pt**2).sum() <= 0.36:
                break
        centre = (liver["uc"] + pt[0] * liver["a"], liver["vc"] + pt[1] * liver["b"], liver["wc"] + pt[2] * liver["c"])
        r = rx.uniform(*LESION_RADIUS_MM)
        rho = np.sqrt((u - centre[0]) ** 2 + (v - centre[1]) ** 2 + (w - centre[2]) ** 2) / r
        label[(rho <= 1) & (label == L("liver"))] = L("lesion")
        lesion_core = np.where(rho < lesion_rho, necrosis[n], lesion_core)
        lesion_rho = np.minimum(lesion_rho, rho)

    # ---- tissue map: each class's default tissue, refined by anatomy the label map does not show
    tissue = _CLASS_TISSUE[label]
    T = TISSUE_NAMES.index
    soft = label == L("soft_tissue")
    tissue[soft & ~wall] = T("muscle")  # abdominal wall
    tissue[soft & heart_mask] = T("heart")
    tissue[soft & (r_canal < canal_r)] = T("canal")
    _muscles(ra, tissue, soft, u, v, w, vb_u, v_sp, v_canal, canal_r, kidneys)
    diaphragm = np.minimum(dome_r, dome_l)
    _spleen(ra, tissue, soft & wall & ~heart_mask & (w < dome_l - 3), u, v, w, a, v_sp, lungs[1]["base"])
    cavity = soft & wall & (tissue == T("visceral")) & (w < diaphragm - 5) & (v > v_sp + vb_v)
    _bowel(ra, tissue, cavity, shape, spacing, fov)
    between = soft & wall & (tissue == T("visceral"))  # retroperitoneum, mediastinum
    fat_level = ra.uniform(-0.8, 0.2)
    tissue[between & (smooth_field(ra, shape, spacing, fov, (25.0, 25.0, 25.0)) > fat_level)] = T("visceral_fat")
    _ribs(ra, tissue, soft, u, v, w, a_w, b_v, p, t, b * back, min(lung["base"] for lung in lungs.values()))
    vessels = _tubes(ra, shape, spacing, fov, 22.0, 0.3)
    tissue[(label == L("liver")) & vessels] = T("hepatic_vessel")
    vessels = _tubes(ra, shape, spacing, fov, 20.0, 0.3)
    tissue[(label == L("lung")) & vessels] = T("pulmonary_vessel")
    medulla = (kidney_rho < 0.7) & (smooth_field(ra, shape, spacing, fov, (10.0, 10.0, 10.0)) > -0.3)
    tissue[(label == L("kidney")) & medulla] = T("kidney_medulla")
    lesion = label == L("lesion")
    tissue[lesion & (lesion_rho > LESION_RIM)] = T("lesion_rim")
    tissue[lesion & (lesion_rho < lesion_core)] = T("lesion_core")
    return Anatomy("torso-ct", label, affine, tissue, spacing, fov)


def add_liver_lesion(anatomy: Anatomy, centre: Sequence[float], radius_mm: float, necrosis: float) -> Anatomy:
    """A copy of a torso ``anatomy`` with one more liver lesion, drawn as :func:`torso_anatomy` draws its
    own: the liver voxels within ``radius_mm`` of ``centre`` (voxel coordinates) become ``lesion``, with an
    enhancing rim (beyond :data:`LESION_RIM` of the radius) and a necrotic core (within ``necrosis`` of
    it); the rest of the label and tissue maps is unchanged."""
    L, T = TORSO_CT.names.index, TISSUE_NAMES.index
    spacing = np.asarray(anatomy.spacing, float)
    axes = [(np.arange(n) - c) * s for n, c, s in zip(anatomy.label.shape, centre, spacing)]
    rho = np.sqrt(sum(a**2 for a in np.meshgrid(*axes, indexing="ij", sparse=True))) / float(radius_mm)
    new = (rho <= 1) & (anatomy.label == L("liver"))
    label, tissue = anatomy.label.copy(), anatomy.tissue.copy()
    label[new] = L("lesion")
    tissue[new] = T("lesion_solid")
    tissue[new & (rho > LESION_RIM)] = T("lesion_rim")
    tissue[new & (rho < necrosis)] = T("lesion_core")
    return dataclasses.replace(anatomy, label=label, tissue=tissue)


TISSUE_NAMES = tuple(TORSO_TISSUES)
_CLASS_TISSUE = np.array([TISSUE_NAMES.index(DEFAULT_TISSUE[c]) for c in TORSO_CT.names], np.uint8)
TISSUE_CLASS = label_lookup(TISSUE_NAMES, {t: spec[0] for t, spec in TORSO_TISSUES.items()}, TORSO_CT)
"""Class index of each tissue (what the label map shows where the tissue map has it)."""


def _muscles(ra, tissue, soft, u, v, w, vb_u, v_sp, v_canal, canal_r, kidneys) -> None:
    """Psoas (beside the vertebral body, widening below the kidneys' upper poles) and paraspinal muscles."""
    top = max(k["wc"] for k in kidneys.values()) + 20.0
    for side in (-1, 1):
        uc, vc, r0 = side * (vb_u + ra.uniform(10, 16)), v_sp + ra.uniform(-4, 6), ra.uniform(7, 10)
        radius = r0 * (1 + np.clip(top - w, 0, None) / 120.0)
        psoas = ((u - uc) ** 2 + (v - vc) ** 2 <= radius**2) & (w < top)
        pu, pv = side * ra.uniform(22, 30), v_canal - canal_r - ra.uniform(10, 16)
        paraspinal = ((u - pu) / ra.uniform(16, 22)) ** 2 + ((v - pv) / ra.uniform(12, 18)) ** 2 <= 1
        tissue[soft & (psoas | paraspinal)] = TISSUE_NAMES.index("muscle")


def _spleen(ra, tissue, allowed, u, v, w, a, v_sp, lung_base) -> None:
    """An ellipsoid under the left lung dome, posterior-lateral."""
    uc, vc, wc = a * ra.uniform(0.5, 0.6), v_sp + ra.uniform(5, 25), lung_base - ra.uniform(10, 30)
    ru, rv, rw = ra.uniform(22, 30), ra.uniform(40, 55), ra.uniform(45, 60)
    inside = ((u - uc) / ru) ** 2 + ((v - vc) / rv) ** 2 + ((w - wc) / rw) ** 2 <= 1
    tissue[allowed & inside] = TISSUE_NAMES.index("spleen")


def _tube_radius(rng, shape, spacing, fov, length: float) -> np.ndarray:
    """``sqrt(g1² + g2²)`` of two smooth fields: small along a random network of curves (tubes)."""
    g1 = smooth_field(rng, shape, spacing, fov, (length,) * 3)
    g2 = smooth_field(rng, shape, spacing, fov, (length,) * 3)
    return np.sqrt(g1 * g1 + g2 * g2)


def _tubes(rng, shape, spacing, fov, length: float, width: float) -> np.ndarray:
    return _tube_radius(rng, shape, spacing, fov, length) < width


def _bowel(ra, tissue, cavity, shape, spacing, fov) -> None:
    """Bowel loops (wall, then gas or fluid contents) and mesenteric fat between them."""
    T = TISSUE_NAMES.index
    width, gas_level, fat_level = ra.uniform(0.8, 1.1), ra.uniform(-0.3, 0.9), ra.uniform(-0.8, 0.4)
    radius = _tube_radius(ra, shape, spacing, fov, 28.0)
    gas = smooth_field(ra, shape, spacing, fov, (50.0, 50.0, 50.0)) > gas_level
    fat = smooth_field(ra, shape, spacing, fov, (30.0, 30.0, 30.0)) > fat_level
    loop = cavity & (radius < width)
    lumen = loop & (radius < 0.7 * width)
    tissue[cavity & ~loop & fat] = T("mesenteric_fat")
    tissue[loop] = T("bowel_wall")
    tissue[lumen & gas] = T("bowel_gas")
    tissue[lumen & ~gas] = T("bowel_fluid")


def _ribs(ra, tissue, soft, u, v, w, a_w, b_v, p, t, back_b, lowest_lung_base) -> None:
    """Ribs: bands in the muscular wall, descending anteriorly, missing in front (cartilage) and at the spine."""
    pitch, height, slope = ra.uniform(24, 30), ra.uniform(7, 10), ra.uniform(0.25, 0.4)
    first = lowest_lung_base - ra.uniform(40, 60)
    shell = (superellipse(u, v, a_w - t - 3, b_v - t - 3, p) <= 1) & (
        superellipse(u, v, a_w - t - 11, b_v - t - 11, p) > 1
    )
    along = w + slope * (v + back_b) - first  # height above the lowest rib, along the ribs' slope
    level = (along >= 0) & (np.mod(along, pitch) < height) & (w > first - 30)
    front = np.abs(np.arctan2(u, v)) < 0.55
    spine = (np.abs(u) < 28) & (v < 0)
    tissue[soft & shell & level & ~front & ~spine] = TISSUE_NAMES.index("rib")


def draw_torso_factors(rng: np.random.Generator) -> dict:
    """Draw the hidden appearance factors of one torso case (:data:`TORSO_FACTORS`).

    Args:
        rng: the appearance's factor generator (or :class:`~.common.UnitDraws`); seven draws, always.
    """
    phase = CONTRAST_PHASES[int(rng.choice(len(CONTRAST_PHASES), p=PHASE_PROBABILITIES))]
    contrast = float(rng.uniform(0.3, 1.0))
    steatosis = float(np.interp(rng.uniform(0.0, 1.0), *STEATOSIS_QUANTILES))
    bone_hu = float(rng.uniform(300.0, 700.0))
    oral_given, oral_hu = rng.random() < 0.3, float(rng.uniform(150.0, 350.0))  # both always drawn
    oral = oral_hu if oral_given else 0.0
    noise_hu = float(rng.uniform(8.0, 25.0))
    return {
        "phase": phase,
        "contrast": 0.0 if phase == "non-contrast" else contrast,
        "steatosis": steatosis,
        "bone_hu": bone_hu,
        "oral_contrast_hu": oral,
        "noise_hu": noise_hu,
    }


def tissue_hu(factors: dict) -> np.ndarray:
    """Mean HU of each tissue (:data:`TISSUE_NAMES` order) under the given factors."""
    hu = np.array([spec[1] for spec in TORSO_TISSUES.values()], np.float32)
    phase = CONTRAST_PHASES.index(factors["phase"])
    if phase > 0:
        hu += np.float32(factors["contrast"]) * np.array(
            [spec[3][phase - 1] for spec in TORSO_TISSUES.values()], np.float32
        )
    hu[TISSUE_NAMES.index("liver")] -= np.float32(STEATOSIS_HU * factors["steatosis"])
    hu[TISSUE_NAMES.index("bowel_fluid")] += np.float32(factors["oral_contrast_hu"])
    hu[TISSUE_NAMES.index("bone")] = factors["bone_hu"]
    hu[TISSUE_NAMES.index("rib")] = 0.8 * factors["bone_hu"]
    return hu


def ct_noise(rng: np.random.Generator, shape) -> np.ndarray:
    """Unit-std CT-like noise: white noise band-passed by a difference of Gaussians (:data:`NOISE_BAND_SIGMAS`)."""
    white = rng.standard_normal(shape, dtype=np.float32)
    fine, coarse = NOISE_BAND_SIGMAS
    noise = ndimage.gaussian_filter(white, fine) - ndimage.gaussian_filter(white, coarse)
    return noise / max(float(noise.std()), 1e-6)


def render_torso(anatomy: Anatomy, factors: dict, rng: np.random.Generator) -> np.ndarray:
    """Render a torso anatomy in whole HU: tissue HU under the factors + texture → blur → correlated noise.

    Args:
        anatomy: from :func:`torso_anatomy`.
        factors: a complete, checked factor dict (:data:`TORSO_FACTORS`).
        rng: the appearance's noise generator (texture and noise).
    """
    tissue, shape = anatomy.tissue, anatomy.tissue.shape
    texture = np.array([spec[2] for spec in TORSO_TISSUES.values()], np.float32)
    image = tissue_hu(factors)[tissue] + texture[tissue] * texture_field(rng, shape, 1.0)
    image = ndimage.gaussian_filter(image, CT_BLUR_SIGMA)
    image += np.float32(factors["noise_hu"]) * ct_noise(rng, shape)
    return np.clip(np.rint(image), *CT_CLIP_HU).astype(np.float32)
