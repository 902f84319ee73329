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
    spinous process) through all slices, the aorta anterior-left of the spine, and 1-3 liver
    lesions. Labels: :data:`~medlsdm.data.classes.TORSO_CT`. Beneath the label map lies a
    finer tissue map (:data:`~medlsdm.data.phantom.torso.TORSO_TISSUES`) with anatomy the
    labels do not show, each part labelled as the class around it: ribs, muscle (abdominal
    wall, psoas, paraspinal), spleen, heart, spinal canal, bowel loops (wall, fluid or gas
    contents), mesenteric, retroperitoneal and mediastinal fat (all ``soft_tissue``), intrahepatic vessels
    (``liver``), pulmonary vessels (``lung``), renal cortex and medulla (``kidney``), lesion
    rims and necrotic cores (``lesion``). The image is the tissues' HU under the case's hidden
    factors (:data:`~medlsdm.data.phantom.torso.TORSO_FACTORS`: contrast phase and strength,
    which move aorta, heart, kidney cortex and medulla, spleen, liver and its vessels together;
    steatosis, which lowers the liver; bone density; oral contrast in the bowel; noise level),
    plus a smooth per-tissue texture, blurred with a Gaussian of :data:`CT_BLUR_SIGMA` voxels
    (partial volume), plus CT-kernel-like correlated noise (white noise band-passed by a
    difference of Gaussians) of the case's ``noise_hu`` std; rounded to whole HU and clipped
    to [-1024, 3071]. Files store the image as int16 HU (like DICOM-converted CT) and the
    label as uint8.
``breast-mr``
    A prone breast MR block (axial slices): two breasts protruding anteriorly from the chest
    wall, made of fat with fibroglandular clumps (a smooth random field thresholded inside the
    breast, denser near the centre, density varying per case) and thin vessels (random smooth
    curves from the chest wall toward the nipple); behind them the thorax (fat, pectoral
    muscle, lungs, heart), which is labelled background as in the Duke 3D segmentations.
    Contrast mimics the images those segmentations were drawn on, a fat-saturated T1-weighted
    gradient echo before contrast: fat dark (suppressed, with a smooth, incomplete
    suppression), fibroglandular tissue brighter than fat, vessels brightest. Multiplicative
    smooth bias field, Rician noise; arbitrary units, roughly 0 … 1000. Appearance factors
    (:data:`~medlsdm.data.phantom.breast.BREAST_FACTORS`): gain, bias-field strength, coil
    gradient, fat signal (how incomplete the suppression is), noise level. Labels:
    :data:`~medlsdm.data.classes.BREAST_MR`. Image float32, label uint8.
``cardiac-2d``
    A short-axis cine-MR-like stack (bSSFP contrast) of 8 slices from base (``z = 0``) to apex:
    bright LV blood pool (papillary muscles inside it, labelled as blood pool as in M&Ms),
    dark myocardial ring (8-10 mm at end-diastole, thicker and with a smaller cavity at
    end-systole; the phase is drawn per case), RV cavity as a crescent on the septal side,
    lungs, chest wall and air around. The LV and RV shrink toward the apex. The affine is
    double oblique like a real short-axis plan (slice axis closest to the S-I axis), and the RV
    lies toward the patient's right/anterior in world coordinates. Bias field, per-slice gain,
    Rician noise. Appearance factors (:data:`~medlsdm.data.phantom.cardiac.CARDIAC_FACTORS`):
    gain, blood signal, bias-field strength, spread of the slice gains, noise level. Labels:
    :data:`~medlsdm.data.classes.CARDIAC`. Image float32, label uint8.

Two steps: anatomy, then appearance. Every case is drawn as an anatomy (:func:`draw_anatomy`:
label map, tissue map, affine; from ``(kind, seed, index, shape)`` alone) rendered with hidden
per-case appearance factors (:data:`FACTOR_TABLES`, one table per kind with each factor's
range, distribution, effect and spatial scale) and fresh texture and noise
(:func:`render_anatomy`). A factor that would change the label map belongs to the anatomy
(breast density, the cardiac phase), so the factors are exactly what the label map leaves
open. :func:`make_phantom` stores each case's factors in ``phantom.json`` (:func:`load_factors`);
the label files never hold them. Because the anatomy can be rendered again with freshly
drawn factors and noise (:func:`render_case` with ``appearance_seed=k``, or
:func:`oracle_rerenders` for several), the true conditional distribution p(image | label map)
can be sampled: an *oracle* to compare a label-conditioned generator's samples with (their
diversity, the distribution of each factor), not only the one real volume.

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
only the noise and texture samples change.

Determinism. A case depends only on ``(kind, seed, index, shape)``: its random streams come
from ``np.random.SeedSequence([seed, index, kind_id])`` (anatomy and the case's own
appearance; an oracle re-render ``k`` from ``[seed, index, kind_id, ORACLE_TAG, k]``), never
from global state, and not on how many cases are made.
"""

from __future__ import annotations

from .common import PHANTOM_KINDS, Anatomy, Factor
from .dataset import load_factors, make_phantom, phantom_version
from .render import (
    FACTOR_TABLES,
    draw_anatomy,
    draw_factors,
    generate_case,
    oracle_rerenders,
    render_anatomy,
    render_case,
)

__all__ = [
    "PHANTOM_KINDS",
    "FACTOR_TABLES",
    "Anatomy",
    "Factor",
    "generate_case",
    "draw_anatomy",
    "draw_factors",
    "render_anatomy",
    "render_case",
    "oracle_rerenders",
    "make_phantom",
    "phantom_version",
    "load_factors",
]
