"""LPIPS (Zhang et al. 2018, VGG16 variant) from local weight files.

LPIPS compares two images through the VGG16 activations at relu1_2, relu2_2, relu3_3,
relu4_3 and relu5_3: each activation is normalised to unit length over its channels, the
squared difference is weighted per channel by a learned linear head, averaged over the
positions and summed over the five layers. Identical images score 0.

Two files, nothing downloaded:

* the VGG16 trunk: a state_dict of torchvision's ``vgg16().features`` (keys ``0.weight`` …;
  a ``features.`` prefix is stripped and ``classifier.*`` ignored), the same file the
  VQ-GAN's perceptual loss reads (:class:`medlsdm.training.losses.PerceptualLoss`);
* the linear heads in the ``lpips`` package's format, ``lpips/weights/v0.1/vgg.pth``: keys
  ``lin0.model.1.weight`` … ``lin4.model.1.weight`` of shapes ``(1, C, 1, 1)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ...errors import DataError
from .vgg import VGG16_TAPS, load_vgg16_features, vgg16_features, vgg16_taps
from .weights import read_state_dict

#: The ``lpips`` package's input scaling for inputs in [-1, 1] (ImageNet statistics).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


class LinearHead(nn.Module):
    """Non-negative per-channel weights as a 1×1 convolution (``model.1`` in the lpips file)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS distance of image pairs in [-1, 1] (grey images are repeated to RGB).

    Args:
        width: channel multiplier of the VGG16 trunk (1.0 for the real weights; tests use
            smaller nets).
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.net = vgg16_features(width)
        widths = [self.net[i - 1].out_channels for i in VGG16_TAPS]  # conv before each tap's ReLU
        for i, ch in enumerate(widths):
            setattr(self, f"lin{i}", LinearHead(ch))
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise DataError(f"LPIPS expects (B, 1 or 3, H, W) images in [-1, 1], got {tuple(x.shape)}")
        if min(x.shape[2:]) < 16:
            raise DataError(f"LPIPS needs images of at least 16×16 (four 2× poolings), got {tuple(x.shape[2:])}")
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return vgg16_taps(self.net, (x - self.shift) / self.scale)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(B,)`` distances of the pairs ``x[i]``, ``y[i]``."""
        if x.shape != y.shape:
            raise DataError(f"LPIPS: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
        fx, fy = self._features(x), self._features(y)
        out = 0
        for i, (a, b) in enumerate(zip(fx, fy)):
            out = out + getattr(self, f"lin{i}")((a - b) ** 2).mean(dim=(1, 2, 3))
        return out


def load_lpips(vgg_path: str | os.PathLike, lin_path: str | os.PathLike) -> LPIPS:
    """LPIPS from a VGG16-features state_dict file and an lpips linear-heads file, frozen, eval mode.

    Raises:
        DataError: a file is missing, unreadable or does not fit (strict loading).
    """
    lin_path = Path(lin_path)
    net = load_vgg16_features(vgg_path)
    lins = read_state_dict(lin_path, "LPIPS linear heads")
    lins = {k: v for k, v in lins.items() if k.startswith("lin")}
    if "lin0.model.1.weight" not in lins:
        raise DataError(f"{lin_path}: no key 'lin0.model.1.weight'; expected the lpips package's weights/v0.1/vgg.pth")
    model = LPIPS(width=net[0].out_channels / 64)
    model.net = net
    try:
        missing, unexpected = nn.Module.load_state_dict(model, lins, strict=False)
    except RuntimeError as exc:
        raise DataError(f"{lin_path}: linear heads do not fit the VGG16 trunk ({str(exc)[:400]})") from None
    missing = [k for k in missing if k.startswith("lin")]
    if missing or unexpected:
        raise DataError(f"{lin_path}: missing keys {missing} / unexpected keys {unexpected}")
    return model.eval().requires_grad_(False)
