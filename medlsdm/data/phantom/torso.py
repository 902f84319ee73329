"""The ``torso-ct`` phantom: an abdominal CT block in Hounsfield units (see :mod:`medlsdm.data.phantom`)."""
from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ..classes import TORSO_CT
from .common import CT_BLUR_SIGMA, axis_mm, grid_spacing, smooth_field, superellipse, texture_field

logger = logging.getLogger(__name__)


CT_NOISE_HU = 20.0
"""Std of the white Gaussian noise added to the CT phantom, HU (clinical soft tissue: 10-30)."""


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


def torso_case(rngs, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rp, rf, rn, rx = rngs
    fov, spacing = grid_spacing("torso-ct", rp, shape)
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
    image = hu[label] + tex[label] * texture_field(rn, shape, 1.0)
    image = ndimage.gaussian_filter(image, CT_BLUR_SIGMA)
    image += rn.standard_normal(shape, dtype=np.float32) * np.float32(CT_NOISE_HU)
    image = np.clip(np.rint(image), *CT_CLIP_HU).astype(np.float32)
    return image, label, affine
