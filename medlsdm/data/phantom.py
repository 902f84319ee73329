"""Procedural phantom datasets: seeded, NIfTI on disk, good enough to learn from.

The walkthrough notebooks need data that a CPU laptop can make in seconds, that anyone may
share, and that still looks like the real thing to the code: NIfTI files with a real affine
(not RAS, so reorientation is exercised), anisotropic spacing that differs from case to case
(so resampling is exercised), intensities in the modality's units, texture, partial volume,
noise and anatomy that varies between cases. Three kinds:

``torso-ct``
    An abdominal/lower-thorax CT block in Hounsfield units: air, body with a subcutaneous fat
    rim, two lungs in the upper part (their bases domed over the diaphragm), the liver (right,
    below the right lung), two kidneys (posterior, lower part), a vertebra (body, arch and
    spinous process) through all slices, the aorta anterior-left of the spine, and 0-2
    hypodense liver lesions. Labels: :data:`~medlsdm.data.classes.TORSO_CT`. Mean HU per class:
    :data:`TORSO_HU`. The image is rendered from the label map, blurred with a Gaussian of
    :data:`CT_BLUR_SIGMA` voxels (partial volume), and white Gaussian noise of
    ``CT_NOISE_HU = 20.0`` HU is added (soft-tissue noise of clinical CT is typically 10-30 HU);
    values are rounded to whole HU and clipped to [-1024, 3071]. Files store the image as
    int16 HU (like DICOM-converted CT) and the label as uint8.
``breast-mr``
    A prone breast MR block (axial slices): two breasts protruding anteriorly from the chest
    wall, made of fat with fibroglandular clumps (a smooth random field thresholded inside the
    breast, denser near the centre, density varying per case) and thin vessels (random smooth
    curves from the chest wall toward the nipple); behind them the thorax (fat, pectoral
    muscle, lungs, heart), which is labelled background as in the Duke 3D segmentations.
    Contrast mimics the images those segmentations were drawn on, a fat-saturated T1-weighted
    gradient echo before contrast: fat dark (suppressed, with a smooth, incomplete
    suppression), fibroglandular tissue brighter than fat, vessels brightest. Multiplicative
    smooth bias field, Rician noise; arbitrary units, roughly 0 … 1000. Labels:
    :data:`~medlsdm.data.classes.BREAST_MR`. Image float32, label uint8.
``cardiac-2d``
    A short-axis cine-MR-like stack (bSSFP contrast) of 8 slices from base (``z = 0``) to apex:
    bright LV blood pool (papillary muscles inside it, labelled as blood pool as in M&Ms),
    dark myocardial ring (8-10 mm at end-diastole, thicker and with a smaller cavity at
    end-systole; the phase is drawn per case), RV cavity as a crescent on the septal side,
    lungs, chest wall and air around. The LV and RV shrink toward the apex. The affine is
    double oblique like a real short-axis plan (slice axis closest to the S-I axis), and the RV
    lies toward the patient's right/anterior in world coordinates. Bias field, per-slice gain,
    Rician noise. Labels: :data:`~medlsdm.data.classes.CARDIAC`. Image float32, label uint8.

What the phantoms are not: anatomically accurate, physically simulated (no X-ray or MR
physics, no artefacts beyond blur, bias and noise), or a benchmark. They are for learning the
pipeline and for testing it; numbers measured on them say nothing about real data.

Geometry. Anatomy is defined analytically in millimetres in a body frame (``u`` toward the
patient's left, ``v`` anterior, ``w`` superior) whose axes are taken from the affine's voxel
axes (for ``cardiac-2d``: in the short-axis plane, with the RV and lung directions projected
from world directions), so what is drawn always agrees with the orientation the file
declares. Per case:
spacing, body size and shape, position, in-plane rotation, organ sizes and positions, and a
smooth random deformation (displacing the coordinates at which the label map is evaluated,
which is the nearest-neighbour warp of the label map without its double interpolation).

Grid and ``shape``. Each kind has a default grid (:data:`DEFAULT_SHAPES`) and per-case spacing
ranges (:data:`SPACING_RANGES`). The physical field of view is always
``default_shape * drawn_spacing``; passing ``shape`` keeps that field of view and sets the
spacing to ``field_of_view / shape`` per axis, so the body still fits and the anatomy (and the
smooth random fields, which live on a physical control grid) is the same at any resolution;
only the white noise and texture samples change.

Determinism. A case depends only on ``(kind, seed, index, shape)``: its random streams come
from ``np.random.SeedSequence([seed, index, kind_id])``, never from global state, and not on
how many cases are made.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from tqdm.auto import tqdm

from ..atomic import atomic_path, read_json, write_json
from ..errors import ConfigError, DataError
from .classes import BREAST_MR, CARDIAC, TORSO_CT, ClassTable

logger = logging.getLogger(__name__)

PHANTOM_KINDS = ("torso-ct", "breast-mr", "cardiac-2d")
"""The phantom kinds :func:`make_phantom` knows."""

PHANTOM_VERSION = 1
"""Bumped whenever the generator's output changes; recorded in ``phantom.json``."""

CLASS_TABLES: dict[str, ClassTable] = {"torso-ct": TORSO_CT, "breast-mr": BREAST_MR, "cardiac-2d": CARDIAC}
CASE_PREFIXES = {"torso-ct": "torso", "breast-mr": "breast", "cardiac-2d": "cardiac"}

DEFAULT_SHAPES = {"torso-ct": (96, 96, 40), "breast-mr": (96, 64, 40), "cardiac-2d": (96, 96, 8)}
"""Default grid ``(x, y, z)`` in NIfTI voxel order."""

SPACING_RANGES = {
    "torso-ct": ((3.6, 4.4), (4.0, 6.0)),
    "breast-mr": ((3.3, 3.7), (3.6, 4.4)),
    "cardiac-2d": ((1.8, 2.2), (8.0, 10.0)),
}
"""Per-case spacing drawn uniformly on the default grid: ``(in-plane range, slice range)`` mm."""

MIN_SHAPES = {"torso-ct": (16, 16, 4), "breast-mr": (16, 16, 4), "cardiac-2d": (16, 16, 2)}

CT_NOISE_HU = 20.0
"""Std of the white Gaussian noise added to the CT phantom, HU (clinical soft tissue: 10-30)."""
CT_BLUR_SIGMA = 0.6
"""Partial-volume blur of the noiseless images, Gaussian sigma in voxels (in-plane for cardiac)."""
CT_CLIP_HU = (-1024.0, 3071.0)

TORSO_HU = {
    "background": -1000.0, "soft_tissue": 40.0, "fat": -100.0, "lung": -850.0, "liver": 60.0,
    "kidney": 150.0, "bone": 600.0, "aorta": 200.0, "lesion": 20.0,
}
"""Mean HU of each torso class (kidney and aorta as after iodinated contrast)."""
TORSO_TEXTURE_HU = {
    "background": 0.0, "soft_tissue": 8.0, "fat": 8.0, "lung": 25.0, "liver": 6.0,
    "kidney": 10.0, "bone": 30.0, "aorta": 5.0, "lesion": 5.0,
}
"""Std (HU) of the smooth per-tissue texture added before the blur."""

# MR tissues: (mean intensity, relative texture std). Tissues that are not a class are
# rendered but labelled background. Breast: fat-saturated T1 pre-contrast (as the Duke
# segmentations); cardiac: bSSFP cine.
BREAST_TISSUES = {
    "air": (0.0, 0.0), "breast_fat": (150.0, 0.08), "fibroglandular": (480.0, 0.08),
    "vessel": (1000.0, 0.05), "thorax_fat": (140.0, 0.08), "muscle": (330.0, 0.05),
    "lung": (30.0, 0.3), "heart": (450.0, 0.06),
}
BREAST_TISSUE_CLASS = {"breast_fat": "breast", "fibroglandular": "fibroglandular", "vessel": "vessel"}
CARDIAC_TISSUES = {
    "air": (0.0, 0.0), "lv_blood": (800.0, 0.04), "myocardium": (250.0, 0.05),
    "papillary": (270.0, 0.05), "rv_blood": (780.0, 0.04), "rv_wall": (260.0, 0.05),
    "body": (330.0, 0.08), "fat": (650.0, 0.05), "lung": (60.0, 0.3),
}
CARDIAC_TISSUE_CLASS = {"lv_blood": "lv_blood_pool", "papillary": "lv_blood_pool", "myocardium": "myocardium", "rv_blood": "rv"}


# --------------------------------------------------------------------------- validation

def _check_kind(kind: str) -> str:
    if kind not in PHANTOM_KINDS:
        raise ConfigError(f"unknown phantom kind {kind!r}; choose one of {', '.join(PHANTOM_KINDS)}")
    return kind


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_shape(kind: str, shape) -> tuple[int, int, int]:
    if shape is None:
        return DEFAULT_SHAPES[kind]
    try:
        values = tuple(shape)
    except TypeError:
        raise ConfigError(f"shape must be three integers (x, y, z), got {shape!r}") from None
    if len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values):
        raise ConfigError(f"shape must be three integers (x, y, z), got {shape!r}")
    minimum = MIN_SHAPES[kind]
    if any(v < m for v, m in zip(values, minimum)):
        raise ConfigError(f"shape {values} too small for {kind!r}: each axis must be >= {minimum}")
    return tuple(int(v) for v in values)


# --------------------------------------------------------------------------- helpers

def _streams(kind: str, seed: int, index: int) -> list[np.random.Generator]:
    """Independent generators: parameters, smooth fields, texture/noise, extras."""
    seq = np.random.SeedSequence([seed, index, PHANTOM_KINDS.index(kind)])
    return [np.random.default_rng(s) for s in seq.spawn(4)]


def _grid_spacing(kind: str, rng: np.random.Generator, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Draw the default-grid spacing; return (field of view mm, spacing mm) for ``shape``."""
    (lo, hi), (zlo, zhi) = SPACING_RANGES[kind]
    s_in, s_z = rng.uniform(lo, hi), rng.uniform(zlo, zhi)
    fov = np.asarray(DEFAULT_SHAPES[kind], float) * np.array([s_in, s_in, s_z])
    return fov, fov / np.asarray(shape, float)


def _axis_mm(n: int, spacing: float) -> np.ndarray:
    """Voxel centre positions along one axis, mm, relative to the grid centre."""
    return ((np.arange(n) - (n - 1) / 2.0) * spacing).astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape, spacing, fov, length: Sequence[float]) -> np.ndarray:
    """Smooth Gaussian random field with unit variance and correlation length ``length`` (mm).

    A separable sum of Gaussian bumps on a control grid that covers the physical field of
    view (so the same random draws give the same field at any grid resolution). Rows of each
    axis basis are normalised, so the variance is exactly 1 everywhere.
    """
    bases = []
    for n, s, f, ell in zip(shape, spacing, fov, length):
        m = int(np.ceil(f / ell)) + 4
        centres = np.linspace(-f / 2 - 2 * ell, f / 2 + 2 * ell, m)
        x = _axis_mm(n, s)[:, None]
        basis = np.exp(-0.5 * ((x - centres[None, :]) / ell) ** 2)
        bases.append(basis / np.sqrt((basis**2).sum(1, keepdims=True)))
    coeffs = rng.standard_normal(tuple(b.shape[1] for b in bases))
    field = np.einsum("abc,ia,jb,kc->ijk", coeffs, *bases, optimize=True)
    return field.astype(np.float32)


def _texture(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    """Fine unit-std texture: white noise low-passed with a Gaussian of ``sigma`` voxels."""
    tex = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return tex / max(float(tex.std()), 1e-6)


def _rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of std ``sigma`` per channel."""
    re = signal + rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    im = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(re * re + im * im)


def _tissue_lookup(names: Sequence[str], table: dict) -> tuple[np.ndarray, np.ndarray]:
    means = np.array([table[n][0] for n in names], np.float32)
    textures = np.array([table[n][1] for n in names], np.float32)
    return means, textures


def _label_lookup(tissues: Sequence[str], tissue_class: dict, classes: ClassTable) -> np.ndarray:
    return np.array([classes.index(tissue_class.get(t, "background")) for t in tissues], np.uint8)


def _superellipse(u, v, a, b, p):
    return (np.abs(u) / a) ** p + (np.abs(v) / b) ** p


# --------------------------------------------------------------------------- torso CT

def _torso(rngs, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rp, rf, rn, rx = rngs
    fov, spacing = _grid_spacing("torso-ct", rp, shape)
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
            uc=side * a * rp.uniform(0.46, 0.54), vc=rp.uniform(-10, 5),
            ru=a * rp.uniform(0.30, 0.36), rv=b * rp.uniform(0.58, 0.68),
            base=w_base_r - (0.0 if side < 0 else rp.uniform(8, 20)), h=rp.uniform(22, 35),
        )
    heart = dict(uc=rp.uniform(5, 25), vc=rp.uniform(10, 30), a=rp.uniform(50, 62), b=rp.uniform(42, 52), c=rp.uniform(55, 70))
    heart["wc"] = lungs[1]["base"] + lungs[1]["h"] + 0.6 * heart["c"]
    # liver (right side, under the right dome) and its left lobe
    liver = dict(uc=-a * rp.uniform(0.40, 0.50), vc=rp.uniform(-10, 15), a=a * rp.uniform(0.40, 0.46),
                 b=b * rp.uniform(0.62, 0.74), c=rp.uniform(75, 95))
    liver["wc"] = lungs[-1]["base"] + lungs[-1]["h"] - 0.8 * liver["c"]
    lobe = dict(uc=a * rp.uniform(0.0, 0.12), vc=b * rp.uniform(0.25, 0.38), a=a * rp.uniform(0.28, 0.38),
                b=b * rp.uniform(0.22, 0.32), c=liver["c"] * rp.uniform(0.35, 0.5))
    lobe["wc"] = liver["wc"] + liver["c"] * rp.uniform(0.25, 0.4)
    # kidneys: posterior, beside the spine, the right one a little lower
    kidneys = {}
    for side in (-1, 1):
        kidneys[side] = dict(
            uc=side * rp.uniform(62, 78), vc=v_sp + rp.uniform(-8, 4), ru=rp.uniform(22, 27), rv=rp.uniform(17, 21),
            rw=rp.uniform(45, 55), wc=lungs[1]["base"] - rp.uniform(55, 70) - (rp.uniform(8, 18) if side < 0 else 0.0),
            tilt=np.deg2rad(rp.uniform(8, 18)),
        )

    # ---- coordinates in the body frame, deformed
    u0 = _axis_mm(shape[0], sx)[:, None, None] * np.float32(-np.sign(affine[0, 0]))  # +u = patient left
    v0 = _axis_mm(shape[1], sy)[None, :, None] * np.float32(np.sign(affine[1, 1]))  # +v = anterior
    w0 = _axis_mm(shape[2], sz)[None, None, :]
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    length = (70.0, 70.0, 90.0)
    u = c * (u0 - du) + s * (v0 - dv) + deform_mm * _smooth_field(rf, shape, spacing, fov, length)
    v = -s * (u0 - du) + c * (v0 - dv) + deform_mm * _smooth_field(rf, shape, spacing, fov, length)
    w = (w0 - dw) + 0.5 * deform_mm * _smooth_field(rf, shape, spacing, fov, length)

    # ---- label map, painted in order (later classes overwrite earlier ones)
    L = TORSO_CT.index
    label = np.zeros(shape, np.uint8)
    a_w = a * (1 + taper * w / 100.0)
    b_v = np.where(v >= 0, np.float32(b), np.float32(b * back))
    label[_superellipse(u, v, a_w, b_v, p) <= 1] = L("fat")
    t = fat_t * (1 + 0.3 * np.cos(2 * (np.arctan2(v, u) - fat_phase)))
    label[_superellipse(u, v, a_w - t, b_v - t, p) <= 1] = L("soft_tissue")
    wall = _superellipse(u, v, a_w - t - 14, b_v - t - 14, p) <= 1  # inside the muscle wall

    def dome(lung, u, v):
        rho2 = np.minimum(((u - lung["uc"]) / lung["ru"]) ** 2 + ((v - lung["vc"]) / lung["rv"]) ** 2, 1.0)
        return rho2, lung["base"] + lung["h"] * (1 - rho2)

    def ellipsoid(o, u, v, w):
        return ((u - o["uc"]) / o["a"]) ** 2 + ((v - o["vc"]) / o["b"]) ** 2 + ((w - o["wc"]) / o["c"]) ** 2 <= 1

    _, dome_r = dome(lungs[-1], u, v)
    _, dome_l = dome(lungs[1], u, v)
    liver_mask = wall & (ellipsoid(liver, u, v, w) & (w < dome_r - 3) | ellipsoid(lobe, u, v, w) & (w < dome_l - 3))
    label[liver_mask] = L("liver")
    for side, k in kidneys.items():
        ct, st = np.cos(k["tilt"]), side * np.sin(k["tilt"])  # upper pole tilted toward the spine
        du_k, dw_k = u - k["uc"], w - k["wc"]
        ku, kw = ct * du_k + st * dw_k, -st * du_k + ct * dw_k
        label[((ku / k["ru"]) ** 2 + ((v - k["vc"]) / k["rv"]) ** 2 + (kw / k["rw"]) ** 2 <= 1) & wall] = L("kidney")
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
    # 0-2 lesions: spheres at random points of the (undeformed) liver ellipsoid, kept in the liver
    for _ in range(int(rx.integers(0, 3))):
        while True:
            pt = rx.uniform(-0.6, 0.6, 3)
            if (pt**2).sum() <= 0.36:
                break
        centre = (liver["uc"] + pt[0] * liver["a"], liver["vc"] + pt[1] * liver["b"], liver["wc"] + pt[2] * liver["c"])
        r = rx.uniform(6, 12)
        sphere = (u - centre[0]) ** 2 + (v - centre[1]) ** 2 + (w - centre[2]) ** 2 <= r * r
        label[sphere & (label == L("liver"))] = L("lesion")

    # ---- rendering: class means + texture, partial-volume blur, noise, whole HU
    hu = np.array([TORSO_HU[n] for n in TORSO_CT.names], np.float32)
    tex = np.array([TORSO_TEXTURE_HU[n] for n in TORSO_CT.names], np.float32)
    image = hu[label] + tex[label] * _texture(rn, shape, 1.0)
    image = ndimage.gaussian_filter(image, CT_BLUR_SIGMA)
    image += rn.standard_normal(shape, dtype=np.float32) * np.float32(CT_NOISE_HU)
    image = np.clip(np.rint(image), *CT_CLIP_HU).astype(np.float32)
    return image, label, affine


# --------------------------------------------------------------------------- breast MR

def _breast(rngs, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rp, rf, rn, rx = rngs
    fov, spacing = _grid_spacing("breast-mr", rp, shape)
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
            uc=side * rp.uniform(68, 92), wc=rp.uniform(-12, 12), ru=r_u, rw=r_u * rp.uniform(0.9, 1.1),
            depth=min(rp.uniform(70, 105) * size * asym, room + 10), k=rp.uniform(1.6, 2.6),
        )
    density = rp.uniform(0.08, 0.45)  # fraction of breast tissue that is fibroglandular
    central = rp.uniform(0.8, 1.6)  # how strongly the FGT gathers behind the nipple
    n_vessels = [int(rp.integers(3, 8)) for _ in (-1, 1)]
    gain = rp.uniform(0.88, 1.08)
    noise_rel = rp.uniform(0.015, 0.03)

    u0 = _axis_mm(shape[0], sx)[:, None, None] * np.float32(-np.sign(affine[0, 0]))
    v0 = _axis_mm(shape[1], sy)[None, :, None] * np.float32(np.sign(affine[1, 1]))
    w0 = _axis_mm(shape[2], sz)[None, None, :]
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    length = (60.0, 60.0, 60.0)
    u = c * (u0 - du) + s * v0 + deform_mm * _smooth_field(rf, shape, spacing, fov, length)
    v = -s * (u0 - du) + c * v0 + deform_mm * _smooth_field(rf, shape, spacing, fov, length)
    w = (w0 - dw) + deform_mm * _smooth_field(rf, shape, spacing, fov, length)
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
        tissue[inner & (((u - side * 0.5 * thorax["a"]) / la) ** 2 + ((tv + 0.1 * thorax["b"]) / lb) ** 2 <= 1)] = T("lung")
    tissue[inner & (((u - heart["uc"]) / heart["a"]) ** 2 + ((tv - 0.35 * thorax["b"]) / heart["b"]) ** 2 <= 1)] = T("heart")

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
    fgt_field = _smooth_field(rf, shape, spacing, fov, (9.0, 9.0, 9.0)) + central * centrality
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
            start = np.array([br["uc"] + 0.75 * br["ru"] * np.cos(phi), base + rx.uniform(0, 15), br["wc"] + 0.75 * br["rw"] * np.sin(phi)])
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

    label = _label_lookup(tissues, BREAST_TISSUE_CLASS, BREAST_MR)[tissue]
    means, rel = _tissue_lookup(tissues, BREAST_TISSUES)
    image = means[tissue] * (1 + rel[tissue] * _texture(rn, shape, 1.0))
    fat = (tissue == T("breast_fat")) | (tissue == T("thorax_fat"))
    fat_sat = _smooth_field(rf, shape, spacing, fov, (80.0, 80.0, 80.0))
    fat_sat = np.exp(0.25 * (fat_sat - fat_sat.mean()))  # uneven fat suppression
    image = np.where(fat, image * fat_sat, image)
    image = ndimage.gaussian_filter(image, CT_BLUR_SIGMA)
    bias = _smooth_field(rf, shape, spacing, fov, (150.0, 150.0, 150.0))
    bias = np.exp(0.15 * (bias - bias.mean()) + 0.001 * v)  # smooth, plus brighter near the breast coil
    image = _rician(rn, image * bias * gain, noise_rel * 500.0)
    return image.astype(np.float32), label, affine


# --------------------------------------------------------------------------- cardiac 2D

def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _cardiac(rngs, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rp, rf, rn, rx = rngs
    fov, spacing = _grid_spacing("cardiac-2d", rp, shape)
    sx, sy, sz = spacing
    # Double-oblique short-axis plan: the slice axis (base -> apex) points left, anterior and
    # inferior (RAS world); the in-plane axes are closest to world x and -y.
    normal = np.array([-0.45, 0.40, -0.80])
    normal = _rotation(rp.standard_normal(3), np.deg2rad(rp.uniform(0, 8))) @ (normal / np.linalg.norm(normal))
    e0 = np.array([1.0, 0.0, 0.0]) - normal[0] * normal
    e0 /= np.linalg.norm(e0)
    e0 = _rotation(normal, np.deg2rad(rp.uniform(-10, 10))) @ e0
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
    n_slices_default = DEFAULT_SHAPES["cardiac-2d"][2]
    apex = fov[2] * rp.uniform(0.92, 1.05)  # distance base -> apex of the cavity
    ecc, ecc_angle = rp.uniform(0.88, 1.0), rp.uniform(0, np.pi)
    c_off = rp.uniform(-12, 12, 2)
    drift = rp.uniform(-1.5, 1.5, 2)  # mm per slice-thickness of LV centre drift
    rv_width = rp.uniform(14, 24) if not systole else rp.uniform(8, 15)
    rv_extent = rp.uniform(0.65, 0.85)
    papillary = [(rp.uniform(-2.6, -1.8), rp.uniform(3, 4.5)), (rp.uniform(1.8, 2.6), rp.uniform(3, 4.5))]
    body = dict(a=rp.uniform(150, 180), b=rp.uniform(105, 125), back=rp.uniform(30, 50))
    lungs = [(d_lung_l, rp.uniform(65, 80), rp.uniform(38, 48), rp.uniform(60, 75)),
             (d_lung_r, rp.uniform(80, 95), rp.uniform(35, 45), rp.uniform(55, 70))]
    fat_t = rp.uniform(4, 8)
    slice_gain = rp.uniform(0.95, 1.05, n_slices_default)
    noise_rel = rp.uniform(0.02, 0.04)
    deform_mm = rp.uniform(1.0, 2.5)

    # in-plane coordinates (mm) relative to the LV centre, per slice (shape: x, y, z)
    p0 = _axis_mm(shape[0], sx)[:, None, None]
    q0 = _axis_mm(shape[1], sy)[None, :, None]
    zeta = ((np.arange(shape[2]) + 0.5) * sz).astype(np.float32)  # depth of the slice centre below the base
    length = (40.0, 40.0, 1e4)
    p = p0 - c_off[0] - drift[0] * zeta / 10 + deform_mm * _smooth_field(rf, shape, spacing, fov, length)
    q = q0 - c_off[1] - drift[1] * zeta / 10 + deform_mm * _smooth_field(rf, shape, spacing, fov, length)
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

    label = _label_lookup(tissues, CARDIAC_TISSUE_CLASS, CARDIAC)[tissue]
    means, rel = _tissue_lookup(tissues, CARDIAC_TISSUES)
    image = means[tissue] * (1 + rel[tissue] * _texture(rn, shape, (1.0, 1.0, 0.0)))
    image = ndimage.gaussian_filter(image, (CT_BLUR_SIGMA, CT_BLUR_SIGMA, 0.0))
    bias = _smooth_field(rf, shape, spacing, fov, (120.0, 120.0, 1e4))
    bias = np.exp(0.2 * (bias - bias.mean()))
    gains = np.interp(np.arange(shape[2]) * (n_slices_default - 1) / max(shape[2] - 1, 1),
                      np.arange(n_slices_default), slice_gain).astype(np.float32)
    image = _rician(rn, image * bias * gains[None, None, :], noise_rel * 800.0)
    return image.astype(np.float32), label, affine


_GENERATORS = {"torso-ct": _torso, "breast-mr": _breast, "cardiac-2d": _cardiac}


# --------------------------------------------------------------------------- public API

def generate_case(kind: str, seed: int, index: int, shape: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate one phantom case in memory.

    Args:
        kind: one of :data:`PHANTOM_KINDS`.
        seed: dataset seed (>= 0).
        index: case number (>= 0); cases are independent of each other.
        shape: grid ``(x, y, z)``; default :data:`DEFAULT_SHAPES` ``[kind]``. The field of view
            stays the same, the spacing becomes ``field_of_view / shape``.

    Returns:
        ``(image, label, affine)``: image ``(x, y, z)`` float32 (HU for CT, whole numbers),
        label ``(x, y, z)`` uint8 with the contiguous indices of ``CLASS_TABLES[kind]``, and the
        4×4 float64 affine (voxel ``(i, j, k)`` → RAS mm), in NIfTI order as written to disk.

    Raises:
        ConfigError: unknown kind, negative seed or index, bad shape.
    """
    kind = _check_kind(kind)
    seed = _check_int("seed", seed, 0)
    index = _check_int("index", index, 0)
    shape = _check_shape(kind, shape)
    return _GENERATORS[kind](_streams(kind, seed, index), shape)


def _save(array: np.ndarray, affine: np.ndarray, path: Path, *, label: bool, descrip: str) -> None:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)  # scanner coordinates
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if label:
        img.header.set_intent("label")
    img.header["descrip"] = descrip.encode()[:79]
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def _case_ids(kind: str, n_cases: int) -> list[str]:
    return [f"{CASE_PREFIXES[kind]}_{i:03d}" for i in range(n_cases)]


def _nifti_names(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def make_phantom(
    kind: str, out_dir: str | os.PathLike, n_cases: int, seed: int = 0, shape: Sequence[int] | None = None
) -> list[tuple[Path, Path]]:
    """Write a phantom dataset in the ``images/`` + ``labels/`` layout.

    Files: ``out_dir/images/<case_id>.nii.gz`` (CT: int16 HU; MR: float32) and
    ``out_dir/labels/<case_id>.nii.gz`` (uint8 class indices), same affine; case ids
    ``<prefix>_000 …`` (``torso_``, ``breast_``, ``cardiac_``). ``out_dir/phantom.json`` records
    what was made. When it says the folder already holds exactly these cases with the same
    ``(kind, n_cases, seed, shape)``, nothing is regenerated. Files of an earlier phantom in the
    same folder that are not part of the new one are removed (only files listed in
    ``phantom.json``); any other file in ``images/`` or ``labels/`` is an error.

    Args:
        kind: one of :data:`PHANTOM_KINDS`.
        out_dir: dataset folder (created if needed).
        n_cases: number of cases (>= 1).
        seed: dataset seed (>= 0).
        shape: grid ``(x, y, z)``, see :func:`generate_case`.

    Returns:
        Sorted ``(image, label)`` path pairs.

    Raises:
        ConfigError: bad argument.
        DataError: ``out_dir`` holds files that make_phantom did not write.
    """
    kind = _check_kind(kind)
    n_cases = _check_int("n_cases", n_cases, 1)
    seed = _check_int("seed", seed, 0)
    shape = _check_shape(kind, shape)
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder")
    ids = _case_ids(kind, n_cases)
    pairs = [(out_dir / "images" / f"{c}.nii.gz", out_dir / "labels" / f"{c}.nii.gz") for c in ids]
    record_path = out_dir / "phantom.json"
    record = {
        "generator": "medlsdm.data.phantom", "version": PHANTOM_VERSION, "kind": kind,
        "n_cases": n_cases, "seed": seed, "shape": list(shape), "cases": ids,
    }
    old = read_json(record_path) if record_path.exists() else None
    if old is not None and not isinstance(old, dict):
        raise DataError(f"{record_path}: not a phantom record (expected a JSON object)")
    ours = {f"{c}.nii.gz" for c in ids}
    if old is not None and old.get("complete") and {k: old.get(k) for k in record} == record:
        if _nifti_names(out_dir / "images") == ours and _nifti_names(out_dir / "labels") == ours:
            logger.info("%s: phantom %s (%d cases, seed %d) already up to date", out_dir, kind, n_cases, seed)
            return pairs

    # Remove what an earlier phantom left that the new one does not overwrite; refuse foreign files.
    previous = {f"{c}.nii.gz" for c in (old or {}).get("cases", [])} if old else set()
    for sub in ("images", "labels"):
        for name in sorted(_nifti_names(out_dir / sub) - ours):
            if name not in previous:
                raise DataError(
                    f"{out_dir / sub / name}: not written by make_phantom; use an empty folder for "
                    "the phantom (its images/ and labels/ must hold only phantom cases)"
                )
    for sub in ("images", "labels"):
        for name in sorted(_nifti_names(out_dir / sub) - ours):
            (out_dir / sub / name).unlink()
            logger.debug("removed stale phantom file %s", out_dir / sub / name)

    # Record the case list first, so an interrupted run is cleaned up by the next one.
    write_json(record_path, {**record, "complete": False})
    logger.info("writing %d %s phantom cases (seed %d, shape %s) to %s", n_cases, kind, seed, shape, out_dir)
    for i, (image_path, label_path) in enumerate(tqdm(pairs, desc=f"phantom {kind}", disable=n_cases < 10)):
        image, label, affine = generate_case(kind, seed, i, shape)
        if kind == "torso-ct":
            image = image.astype(np.int16)  # whole HU in [-1024, 3071]
        descrip = f"medlsdm phantom {kind} seed={seed} index={i}"
        _save(image, affine, image_path, label=False, descrip=descrip)
        _save(label.astype(np.uint8), affine, label_path, label=True, descrip=descrip)
    write_json(record_path, {**record, "complete": True})
    return pairs
