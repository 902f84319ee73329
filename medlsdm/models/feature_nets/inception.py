"""InceptionV3 pool3 features for FID, loading pytorch-fid's weights from a local file.

FID is only comparable between papers when it uses *the* network: the TensorFlow
InceptionV3 of 2015-12-05 that the original FID code used, which ``pytorch-fid`` ported to
PyTorch (``pt_inception-2015-12-05-6726825d.pth``). That port is torchvision's
``Inception3`` (1008 classes, no auxiliary classifier) with three kinds of patched blocks:
the average pools inside the A, C and first E blocks do not count the zero padding
(TensorFlow's behaviour), and the last E block uses a max pool.

Nothing is downloaded here (and torchvision is not needed): :class:`InceptionV3Features`
rebuilds that network with the *same parameter names* as the file's state_dict, so the
file loads strictly. Get the file once where internet is available (it is the one
``pytorch-fid`` fetches on first use), e.g.::

    https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

and pass its path to :func:`load_inception`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import DataError
from .weights import fill_bn_counters, read_state_dict

#: Feature size of the pool3 layer (the FID features).
FEATURE_DIM = 2048


class ConvBN(nn.Module):
    """Convolution without bias → BatchNorm (eps 1e-3) → ReLU (parameter names ``conv``, ``bn``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x: torch.Tensor) -> torch.Tensor:
    """3×3 stride-1 average pool that ignores the zero padding (as TensorFlow's)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35×35 block: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | pool→1×1."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([a, b, c, d], 1)


class BlockB(nn.Module):
    """Grid reduction 35→17: stride-2 3×3 | 1×1→3×3→stride-2 3×3 | max pool."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    """17×17 block with factorised 7×7 convolutions (1×7 and 7×1)."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c = channels_7x7
        row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c, 1)
        self.branch7x7_2 = ConvBN(c, c, **row)
        self.branch7x7_3 = ConvBN(c, 192, **col)
        self.branch7x7dbl_1 = ConvBN(in_channels, c, 1)
        self.branch7x7dbl_2 = ConvBN(c, c, **col)
        self.branch7x7dbl_3 = ConvBN(c, c, **row)
        self.branch7x7dbl_4 = ConvBN(c, c, **col)
        self.branch7x7dbl_5 = ConvBN(c, 192, **row)
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([a, b, c, d], 1)


class BlockD(nn.Module):
    """Grid reduction 17→8."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b = layer(b)
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """8×8 block with split 1×3 / 3×1 branches.

    Args:
        in_channels: input channels.
        pool: ``"avg"`` (padding-excluding average, ``Mixed_7b``) or ``"max"`` (``Mixed_7c``
            of the FID network).
    """

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.pool == "max" else _avg_pool_tf(x)
        return torch.cat([a, b, c, self.branch_pool(pooled)], 1)


class InceptionV3Features(nn.Module):
    """The FID InceptionV3 up to its final average pool (2048 features per image).

    Parameter names equal the keys of pytorch-fid's ``pt_inception-2015-12-05-*.pth``
    (``Conv2d_1a_3x3.conv.weight`` … ``Mixed_7c.branch_pool.bn.running_var``, ``fc.weight``);
    the 1008-class ``fc`` layer is kept only so that the file loads strictly.

    Input: ``(B, 3, H, W)`` RGB in [0, 1] (as pytorch-fid). It is resized bilinearly to
    ``resize_to`` × ``resize_to`` (299 for comparable FIDs), scaled to [-1, 1] and passed
    through the network; the output is the ``(B, 2048)`` pool3 feature.

    Args:
        resize_to: input side after resizing; ``None`` keeps the size (at least 75).
    """

    def __init__(self, resize_to: int | None = 299):
        super().__init__()
        self.resize_to = resize_to
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = BlockA(192, pool_features=32)
        self.Mixed_5c = BlockA(256, pool_features=64)
        self.Mixed_5d = BlockA(288, pool_features=64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, channels_7x7=128)
        self.Mixed_6c = BlockC(768, channels_7x7=160)
        self.Mixed_6d = BlockC(768, channels_7x7=160)
        self.Mixed_6e = BlockC(768, channels_7x7=192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, pool="avg")
        self.Mixed_7c = BlockE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise DataError(f"InceptionV3Features expects (B, 3, H, W) RGB in [0, 1], got {tuple(x.shape)}")
        if self.resize_to is not None:
            x = F.interpolate(x, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
        if min(x.shape[2:]) < 75:
            raise DataError(f"InceptionV3 needs images of at least 75×75, got {tuple(x.shape[2:])}")
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in (
            "Mixed_5b",
            "Mixed_5c",
            "Mixed_5d",
            "Mixed_6a",
            "Mixed_6b",
            "Mixed_6c",
            "Mixed_6d",
            "Mixed_6e",
            "Mixed_7a",
            "Mixed_7b",
            "Mixed_7c",
        ):
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3))


def load_inception(path: str | os.PathLike, resize_to: int | None = 299) -> InceptionV3Features:
    """The FID InceptionV3 with pytorch-fid's weights from a local file, frozen, in eval mode.

    Args:
        path: ``pt_inception-2015-12-05-*.pth`` (a state_dict of pytorch-fid's FID
            Inception). Loading is strict: every key must be present with its shape.
        resize_to: see :class:`InceptionV3Features`.

    Raises:
        DataError: the file is missing, unreadable, or not that network's state_dict.
    """
    path = Path(path)
    state = read_state_dict(path, "InceptionV3 (pytorch-fid)")
    model = InceptionV3Features(resize_to=resize_to)
    try:
        model.load_state_dict(fill_bn_counters(model, state), strict=True)
    except RuntimeError as exc:
        raise DataError(
            f"{path}: not pytorch-fid's InceptionV3 state_dict (pt_inception-2015-12-05-*.pth): {str(exc)[:500]}"
        ) from None
    return model.eval().requires_grad_(False)
