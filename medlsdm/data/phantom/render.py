"""Drawing and rendering phantom cases of every kind: anatomy, hidden appearance factors, images
(the kinds' own modules: :mod:`.torso`, :mod:`.breast`, :mod:`.cardiac`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Mapping, Sequence

import numpy as np

from ...errors import ConfigError, DataError
from .breast import BREAST_FACTORS, breast_anatomy, render_breast
from .cardiac import CARDIAC_FACTORS, cardiac_anatomy, render_cardiac
from .common import (
    Anatomy,
    Factor,
    anatomy_streams,
    appearance_streams,
    check_factors,
    check_int,
    check_kind,
    check_shape,
    draw_uniform_factors,
)
from .torso import TORSO_FACTORS, draw_torso_factors, render_torso, torso_anatomy


@dataclass(frozen=True)
class _Kind:
    anatomy: Callable  # (anatomy streams, shape) -> Anatomy
    factors: tuple[Factor, ...]
    draw: Callable  # (factor rng) -> factor dict
    render: Callable  # (Anatomy, factors, noise rng) -> image


_KINDS = {
    "torso-ct": _Kind(torso_anatomy, TORSO_FACTORS, draw_torso_factors, render_torso),
    "breast-mr": _Kind(breast_anatomy, BREAST_FACTORS, partial(draw_uniform_factors, BREAST_FACTORS), render_breast),
    "cardiac-2d": _Kind(
        cardiac_anatomy, CARDIAC_FACTORS, partial(draw_uniform_factors, CARDIAC_FACTORS), render_cardiac
    ),
}


FACTOR_TABLES: dict[str, tuple[Factor, ...]] = {kind: spec.factors for kind, spec in _KINDS.items()}
"""Each kind's hidden appearance factors: name, range, distribution, effect, spatial scale."""


def draw_anatomy(
    kind: str,
    seed: int,
    index: int,
    shape: Sequence[int] | None = None,
    *,
    z_extent_mm: float | None = None,
    detail_seed: int | None = None,
) -> Anatomy:
    """Draw the anatomy of one case (step 1 of 2): label map, tissue map, affine.

    Args:
        kind: one of :data:`PHANTOM_KINDS`.
        seed: dataset seed (>= 0).
        index: case number (>= 0).
        shape: grid ``(x, y, z)``; see :func:`generate_case`.
        z_extent_mm: ``torso-ct`` only: the field of view along z in mm instead of the
            case's own (``40 ×`` its drawn slice spacing): a longer scan of the same body,
            whose anatomy continues beyond the default block (lungs and heart above, bowel
            below). Give ``shape`` a z size to match, e.g. ``z_extent_mm / 5``; the body and
            organ parameters are those of the case, the smooth random fields differ.
        detail_seed: ``None`` for the case's own anatomy; an integer for the same label map
            with freshly drawn unlabelled anatomy (what the label map does not show: bowel
            loops and gas, muscles, ribs, spleen, vessels, kidney medulla, lesion necrosis),
            as an oracle re-render needs.

    Returns:
        The :class:`Anatomy`; it depends only on ``(kind, seed, index, shape, z_extent_mm, detail_seed)``.

    Raises:
        ConfigError: unknown kind, negative seed or index, bad shape, ``z_extent_mm`` not
            positive or given for another kind.
    """
    kind = check_kind(kind)
    seed, index = check_int("seed", seed, 0), check_int("index", index, 0)
    shape = check_shape(kind, shape)
    streams = anatomy_streams(kind, seed, index, detail_seed)
    if z_extent_mm is None:
        return _KINDS[kind].anatomy(streams, shape)
    if kind != "torso-ct" or not float(z_extent_mm) > 0:
        raise ConfigError(
            f"z_extent_mm={z_extent_mm!r}: a positive field of view along z (mm), for torso-ct only (got kind {kind!r})"
        )
    return _KINDS[kind].anatomy(streams, shape, float(z_extent_mm))


def draw_factors(kind: str, rng: np.random.Generator | int) -> dict:
    """Draw one set of hidden appearance factors of ``kind`` (:data:`FACTOR_TABLES`).

    Args:
        kind: one of :data:`PHANTOM_KINDS`.
        rng: a numpy Generator, or an integer seed for one.

    Returns:
        ``{factor: value}``: floats, and strings for categorical factors (torso ``phase``).
    """
    kind = check_kind(kind)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(check_int("rng", rng, 0))
    return _KINDS[kind].draw(rng)


def render_anatomy(anatomy: Anatomy, factors: Mapping, rng: np.random.Generator) -> np.ndarray:
    """Render an anatomy with the given factors (step 2 of 2).

    Args:
        anatomy: from :func:`draw_anatomy`.
        factors: every factor of the kind (:data:`FACTOR_TABLES`), each in its range.
        rng: draws the texture, smooth fields and noise (use a fresh one for fresh noise).

    Returns:
        The image ``(x, y, z)`` float32 (CT: whole HU).

    Raises:
        ConfigError: a missing, unknown or out-of-range factor.
    """
    table = FACTOR_TABLES[anatomy.kind]
    checked = check_factors(table, factors, anatomy.kind)
    missing = [f.name for f in table if f.name not in checked]
    if missing:
        raise ConfigError(f"{anatomy.kind} factors missing: {missing}")
    return _KINDS[anatomy.kind].render(anatomy, checked, rng)


def _appearance(kind: str, seed: int, index: int, appearance_seed: int | None, factors: Mapping | None):
    """The factors (drawn, then overridden by ``factors``) and the noise generator of one appearance."""
    factor_rng, noise_rng = appearance_streams(kind, seed, index, appearance_seed)
    drawn = _KINDS[kind].draw(factor_rng)
    drawn.update(check_factors(FACTOR_TABLES[kind], factors or {}, kind))
    return drawn, noise_rng


def render_case(
    kind: str,
    seed: int,
    index: int,
    shape: Sequence[int] | None = None,
    *,
    appearance_seed: int | None = None,
    factors: Mapping | None = None,
    z_extent_mm: float | None = None,
    edit: Callable[[Anatomy], Anatomy] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Draw one case's anatomy and render it; with ``appearance_seed``, an oracle re-render.

    The anatomy (label map) depends only on ``(kind, seed, index, shape)``. The appearance
    (factors, texture, noise) is the case's own with ``appearance_seed=None`` (what
    :func:`generate_case` and :func:`make_phantom` give) and a fresh, independent draw for
    each ``appearance_seed`` ``k >= 0``: a sample of p(image | label map).

    Args:
        kind: one of :data:`PHANTOM_KINDS`.
        seed: dataset seed (>= 0).
        index: case number (>= 0).
        shape: grid ``(x, y, z)``; see :func:`generate_case`.
        appearance_seed: ``None`` (the case's own appearance) or an integer >= 0.
        factors: factor values to use instead of the drawn ones (any subset of the kind's
            factors); the other factors, texture and noise stay those of the appearance.
        z_extent_mm: a longer field of view along z (see :func:`draw_anatomy`).
        edit: a change to the drawn anatomy before it is rendered (e.g.
            :func:`~medlsdm.data.phantom.torso.add_liver_lesion`): the same factors, texture and
            noise, so the image changes only where the tissue map does (and the blur around it).

    Returns:
        ``(image, label, affine, factors)``; ``factors`` are the values the image was rendered with,
        ``label`` the (edited) anatomy's.

    Raises:
        ConfigError: bad argument, unknown or out-of-range factor.
    """
    if appearance_seed is not None:
        appearance_seed = check_int("appearance_seed", appearance_seed, 0)
    anatomy = draw_anatomy(kind, seed, index, shape, z_extent_mm=z_extent_mm, detail_seed=appearance_seed)
    if edit is not None:
        anatomy = edit(anatomy)
    drawn, noise_rng = _appearance(kind, seed, index, appearance_seed, factors)
    return _KINDS[kind].render(anatomy, drawn, noise_rng), anatomy.label, anatomy.affine, drawn


def oracle_rerenders(
    kind: str,
    seed: int,
    index: int,
    appearance_seeds: Sequence[int],
    shape: Sequence[int] | None = None,
    *,
    z_extent_mm: float | None = None,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[dict]]:
    """Render one label map several times with fresh factors, noise and unlabelled anatomy:
    samples of p(image | label map).

    Same as calling :func:`render_case` with each appearance seed: re-render ``k`` redraws
    everything the label map leaves open (the hidden factors, texture and noise, and the
    anatomy it does not show, :func:`draw_anatomy` ``detail_seed=k``); the label map is the same.

    Args:
        kind, seed, index, shape: the case (see :func:`render_case`).
        appearance_seeds: one integer >= 0 per re-render.
        z_extent_mm: a longer field of view along z (see :func:`draw_anatomy`).

    Returns:
        ``(label, affine, images, factors)``: the label map and affine all re-renders share,
        and per appearance seed the image and its factors.
    """
    images, factor_list, label, affine = [], [], None, None
    for k in appearance_seeds:
        k = check_int("appearance_seed", k, 0)
        anatomy = draw_anatomy(kind, seed, index, shape, z_extent_mm=z_extent_mm, detail_seed=k)
        if label is None:
            label, affine = anatomy.label, anatomy.affine
        elif not np.array_equal(anatomy.label, label):  # the unlabelled anatomy must never touch the label map
            raise DataError(f"{kind} case {index}: redrawing the unlabelled anatomy changed the label map")
        drawn, noise_rng = _appearance(kind, seed, index, k, None)
        images.append(_KINDS[kind].render(anatomy, drawn, noise_rng))
        factor_list.append(drawn)
    if label is None:  # no re-render asked for
        anatomy = draw_anatomy(kind, seed, index, shape, z_extent_mm=z_extent_mm)
        label, affine = anatomy.label, anatomy.affine
    return label, affine, images, factor_list


def generate_case(
    kind: str, seed: int, index: int, shape: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate one phantom case in memory (its own appearance; :func:`render_case` also returns the factors).

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
    return render_case(kind, seed, index, shape)[:3]
