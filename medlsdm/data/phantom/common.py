"""What the three phantom kinds share: their tables, argument checks, random streams and fields."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from ...errors import ConfigError
from ..classes import BREAST_MR, CARDIAC, TORSO_CT, ClassTable

logger = logging.getLogger(__name__)


PHANTOM_KINDS = ("torso-ct", "breast-mr", "cardiac-2d")
"""The phantom kinds :func:`make_phantom` knows."""


PHANTOM_VERSION = 5
"""Bumped whenever the generator's output changes; recorded in ``phantom.json``.

2: two-step draw (anatomy, then appearance from hidden per-case factors stored in
``phantom.json``); torso-ct gained contrast phases, steatosis, unlabelled anatomy and
correlated noise (its label maps are those of version 1); breast-mr and cardiac-2d draw their
appearance factors from a stream of their own (breast label maps unchanged).
3: torso-ct: fat between the organs of the retroperitoneum and mediastinum (images only).
4: the cases' own factors are stratified (:func:`stratified_units`); torso-ct draws its oral
contrast with a fixed number of draws (oracle re-renders draw i.i.d., as before).
5: torso-ct: steatosis follows the population's prior (``STEATOSIS_QUANTILES``: 6.2 % of livers at or
below 40 HU unenhanced) instead of U(0, 1) (75 %), which hid most lesions in livers as dark as they.
"""


ORACLE_TAG = 0x0AC1E
"""Entropy word that keeps the streams of oracle re-renders apart from a case's own streams."""


STRATA_TAG = 0x57A7
"""Entropy word of the slice permutations of :func:`stratified_units`."""


STRATUM_CASES = 12
"""The cases' own factors are drawn in runs of this many consecutive case indices: in each run,
every factor draw takes one value from each twelfth of its range (a Latin hypercube)."""


FACTOR_DRAWS = 16
"""At most this many U(0, 1) draws make one appearance's factors (every kind draws fewer)."""


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


CT_BLUR_SIGMA = 0.6
"""Partial-volume blur of the noiseless images, Gaussian sigma in voxels (in-plane for cardiac)."""


def check_kind(kind: str) -> str:
    if kind not in PHANTOM_KINDS:
        raise ConfigError(f"unknown phantom kind {kind!r}; choose one of {', '.join(PHANTOM_KINDS)}")
    return kind


def check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_shape(kind: str, shape) -> tuple[int, int, int]:
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


def _case_sequence(kind: str, seed: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, index, PHANTOM_KINDS.index(kind)])


def anatomy_streams(kind: str, seed: int, index: int, detail_seed: int | None = None) -> list[np.random.Generator]:
    """The anatomy's independent generators: parameters, smooth fields, extras, unlabelled anatomy.

    Children 0, 1, 3 of the case's seed sequence are the streams version 1 drew its label map
    from (so label maps that only use them are unchanged); child 4 draws anatomy the label map
    does not show. Child 2 is the case's own appearance (:func:`appearance_streams`).
    With ``detail_seed`` (an oracle re-render), the unlabelled-anatomy stream is a fresh one:
    same label map, other bowel loops, muscles, ribs, vessels …
    """
    children = _case_sequence(kind, seed, index).spawn(5)
    streams = [np.random.default_rng(children[i]) for i in (0, 1, 3, 4)]
    if detail_seed is not None:
        streams[3] = np.random.default_rng([seed, index, PHANTOM_KINDS.index(kind), ORACLE_TAG, int(detail_seed), 1])
    return streams


def appearance_streams(
    kind: str, seed: int, index: int, appearance_seed: int | None = None, *, stratified: bool = True
):
    """The appearance's generators ``(factors, noise)``: one draws the hidden factors, the other textures, fields
    and noise.

    Args:
        kind, seed, index: the case.
        appearance_seed: ``None`` for the case's own appearance (what :func:`make_phantom`
            writes); an integer ``k >= 0`` for oracle re-render ``k`` of the same anatomy.
    """
    if appearance_seed is None:
        sequence = _case_sequence(kind, seed, index).spawn(5)[2]
    else:
        sequence = np.random.SeedSequence([seed, index, PHANTOM_KINDS.index(kind), ORACLE_TAG, appearance_seed])
    factor_seq, noise_seq = sequence.spawn(2)
    factor_rng = np.random.default_rng(factor_seq)
    if appearance_seed is None and stratified:  # the cohort's own factors: stratified over runs of cases
        factor_rng = UnitDraws(stratified_units(kind, seed, index, factor_rng))
    return factor_rng, np.random.default_rng(noise_seq)


@dataclass
class Anatomy:
    """What the anatomy step draws: the label map and what the renderer needs besides it.

    Attributes:
        kind: the phantom kind.
        label: ``(x, y, z)`` uint8 class indices.
        affine: 4×4 voxel → RAS mm.
        tissue: ``(x, y, z)`` uint8 indices into the kind's tissue table; finer than the label
            map (unlabelled tissues such as ribs or bowel gas carry their surrounding class).
        spacing: voxel size (mm) per axis.
        fov: field of view (mm) per axis.
        fields: further geometric fields the renderer uses (e.g. ``"v"``: antero-posterior mm).
    """

    kind: str
    label: np.ndarray
    affine: np.ndarray
    tissue: np.ndarray
    spacing: np.ndarray
    fov: np.ndarray
    fields: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Factor:
    """One hidden appearance factor of a phantom kind: its range, how it is drawn, what it does.

    Attributes:
        name: key in the factor dict.
        low, high: the range every drawn value lies in (unused for categorical factors).
        unit: unit of the value ("" when dimensionless).
        distribution: how a case's value is drawn.
        effect: what it changes in the image.
        scale: ``"large"`` (whole organs or smooth fields: a latent grid 4× coarser can carry it)
            or ``"fine"`` (voxel-scale: noise).
        choices: the values of a categorical factor (then ``low``/``high`` are unused).
    """

    name: str
    low: float
    high: float
    unit: str
    distribution: str
    effect: str
    scale: str = "large"
    choices: tuple[str, ...] = ()


def check_factors(table: Sequence[Factor], factors: Mapping, kind: str) -> dict:
    """Validate a (possibly partial) factor dict against ``table``; return it with plain Python values.

    Raises:
        ConfigError: an unknown factor name, a value outside its range or not among its choices.
    """
    specs = {f.name: f for f in table}
    unknown = sorted(set(factors) - set(specs))
    if unknown:
        raise ConfigError(f"unknown {kind} factor(s) {unknown}; known: {', '.join(specs)}")
    out = {}
    for name, value in factors.items():
        spec = specs[name]
        if spec.choices:
            if value not in spec.choices:
                raise ConfigError(f"{kind} factor {name}={value!r} must be one of {spec.choices}")
            out[name] = str(value)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ConfigError(f"{kind} factor {name} must be a number, got {value!r}")
        if not spec.low <= float(value) <= spec.high:
            raise ConfigError(f"{kind} factor {name}={value} outside its range [{spec.low}, {spec.high}]")
        out[name] = float(value)
    return out


class UnitDraws:
    """Stands in for the factor generator of a draw function (``random``, ``uniform``,
    ``choice``), each call taking the next of the given U(0, 1) numbers."""

    def __init__(self, units: Sequence[float]):
        self._units = iter(units)

    def random(self) -> float:
        return float(next(self._units))

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def choice(self, n: int, p: Sequence[float]) -> int:
        """Index drawn with probabilities ``p`` (inverse of their cumulative sum)."""
        return min(int(np.searchsorted(np.cumsum(p), self.random(), side="right")), n - 1)


def stratified_units(kind: str, seed: int, index: int, rng: np.random.Generator) -> np.ndarray:
    """The :data:`FACTOR_DRAWS` U(0, 1) numbers behind case ``index``'s own factors.

    Cases ``12g … 12g + 11`` (:data:`STRATUM_CASES`) share, per draw, a random permutation of
    the twelve slices ``[s/12, (s+1)/12)`` of [0, 1); case ``12g + j`` takes slice ``π(j)``
    and a uniform point within it from ``rng``. Each number is still U(0, 1), but a run of 12
    cases covers each factor's range evenly: the mean of a small training cohort then strays
    less from the prior's (i.i.d. draws once left the quick profile's 36 training cases 53 HU
    below the prior mean bone density, 2.7 standard errors; ``benchmarks/bench_factor_strata.py``).
    """
    group, position = divmod(index, STRATUM_CASES)
    shuffle = np.random.default_rng([seed, group, PHANTOM_KINDS.index(kind), STRATA_TAG])
    slices = np.array([shuffle.permutation(STRATUM_CASES)[position] for _ in range(FACTOR_DRAWS)])
    return (slices + rng.random(FACTOR_DRAWS)) / STRATUM_CASES


def draw_uniform_factors(table: Sequence[Factor], rng: np.random.Generator) -> dict:
    """Draw every factor of ``table`` uniformly in its range (the MR phantoms' factors).

    Args:
        table: the kind's factor table (numeric factors only).
        rng: the appearance's factor generator.
    """
    return {f.name: float(rng.uniform(f.low, f.high)) for f in table}


def grid_spacing(
    kind: str, rng: np.random.Generator, shape: Sequence[int], z_extent_mm: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the default-grid spacing; return (field of view mm, spacing mm) for ``shape``.

    Args:
        kind, rng, shape: the kind, its parameter generator, the grid ``(x, y, z)``.
        z_extent_mm: the field of view along z (mm) instead of the default grid's (a longer
            scan of the same body; the spacing is still drawn, so every later draw is unchanged).
    """
    (lo, hi), (zlo, zhi) = SPACING_RANGES[kind]
    s_in, s_z = rng.uniform(lo, hi), rng.uniform(zlo, zhi)
    fov = np.asarray(DEFAULT_SHAPES[kind], float) * np.array([s_in, s_in, s_z])
    if z_extent_mm is not None:
        fov[2] = float(z_extent_mm)
    return fov, fov / np.asarray(shape, float)


def axis_mm(n: int, spacing: float) -> np.ndarray:
    """Voxel centre positions along one axis, mm, relative to the grid centre."""
    return ((np.arange(n) - (n - 1) / 2.0) * spacing).astype(np.float32)


def smooth_field(rng: np.random.Generator, shape, spacing, fov, length: Sequence[float]) -> np.ndarray:
    """Smooth Gaussian random field with unit variance and correlation length ``length`` (mm).

    A separable sum of Gaussian bumps on a control grid that covers the physical field of
    view (so the same random draws give the same field at any grid resolution). Rows of each
    axis basis are normalised, so the variance is exactly 1 everywhere.
    """
    bases = []
    for n, s, f, ell in zip(shape, spacing, fov, length):
        m = int(np.ceil(f / ell)) + 4
        centres = np.linspace(-f / 2 - 2 * ell, f / 2 + 2 * ell, m)
        x = axis_mm(n, s)[:, None]
        basis = np.exp(-0.5 * ((x - centres[None, :]) / ell) ** 2)
        bases.append(basis / np.sqrt((basis**2).sum(1, keepdims=True)))
    coeffs = rng.standard_normal(tuple(b.shape[1] for b in bases))
    field = np.einsum("abc,ia,jb,kc->ijk", coeffs, *bases, optimize=True)
    return field.astype(np.float32)


def texture_field(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    """Fine unit-std texture: white noise low-passed with a Gaussian of ``sigma`` voxels."""
    tex = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return tex / max(float(tex.std()), 1e-6)


def rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of std ``sigma`` per channel."""
    re = signal + rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    im = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(re * re + im * im)


def tissue_lookup(names: Sequence[str], table: dict) -> tuple[np.ndarray, np.ndarray]:
    means = np.array([table[n][0] for n in names], np.float32)
    textures = np.array([table[n][1] for n in names], np.float32)
    return means, textures


def label_lookup(tissues: Sequence[str], tissue_class: dict, classes: ClassTable) -> np.ndarray:
    return np.array([classes.index(tissue_class.get(t, "background")) for t in tissues], np.uint8)


def superellipse(u, v, a, b, p):
    return (np.abs(u) / a) ** p + (np.abs(v) / b) ** p


def rotation_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
