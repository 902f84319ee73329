"""MedicalNet 3-D ResNet features for a 3-D FID, loading the released weights from a local file.

MedicalNet (Chen et al. 2019, "Med3D") trained 3-D ResNets on 23 medical segmentation
datasets; their encoders are the usual feature network for 3-D FIDs of medical volumes.
:class:`MedicalNetResNet` rebuilds the encoder (ResNet-10 or -18, basic blocks) with the
parameter names of the released files (``resnet_10_23dataset.pth``, ``resnet_18_23dataset.pth``:
a dict whose ``state_dict`` keys start with ``module.``), so they load strictly. The
segmentation head (``conv_seg.*``) is not needed for features and is ignored.

Architecture (as MedicalNet): 7×7×7 stride-2 convolution (64) → BN → ReLU → 3×3×3 stride-2
max pool → four stages of basic blocks with 64, 128, 256, 512 channels; stage 2 has stride 2,
stages 3 and 4 keep the resolution and use dilation 2 and 4. Features: the global average of
the last stage, 512 numbers per volume.

The weights are not downloaded here; get them from the MedicalNet release (Tencent/MedicalNet
on GitHub; the files are on its linked drives) and pass the path to :func:`load_medicalnet`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, DataError
from .weights import fill_bn_counters, read_state_dict

#: Blocks per stage of the supported depths (basic blocks).
DEPTHS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2)}
FEATURE_DIM = 512


def _conv3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock3d(nn.Module):
    """Two 3×3×3 convolutions with BatchNorm and a residual connection.

    The shortcut is the identity when shapes agree; otherwise ``downsample`` (a 1×1×1
    convolution + BN, MedicalNet's shortcut type "B") or, with ``shortcut="A"``, a strided
    subsampling padded with zero channels (no parameters).
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dilation: int = 1, shortcut: str = "B"):
        super().__init__()
        self.conv1 = _conv3(in_channels, channels, stride, dilation)
        self.bn1 = nn.BatchNorm3d(channels)
        self.conv2 = _conv3(channels, channels, 1, dilation)
        self.bn2 = nn.BatchNorm3d(channels)
        self.stride = stride
        self.pad_channels = 0
        self.downsample = None
        if stride != 1 or in_channels != channels:
            if shortcut == "B":
                self.downsample = nn.Sequential(
                    nn.Conv3d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm3d(channels)
                )
            else:
                self.pad_channels = channels - in_channels

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            return self.downsample(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride, :: self.stride]
        if self.pad_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, self.pad_channels))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self._shortcut(x))


class MedicalNetResNet(nn.Module):
    """MedicalNet's 3-D ResNet encoder returning 512 features per volume.

    Input ``(B, 1, D, H, W)``; each volume is standardised to zero mean and unit standard
    deviation over all its voxels before the network (MedicalNet standardised its training
    volumes by the statistics of their non-zero voxels; images here are in [-1, 1], where
    "non-zero" has no meaning, so the whole volume is used).

    Args:
        depth: 10 or 18.
        shortcut: ``"B"`` (1×1×1 projection, the released ResNet-10/18 files) or ``"A"``.
    """

    def __init__(self, depth: int = 10, shortcut: str = "B"):
        super().__init__()
        if depth not in DEPTHS:
            raise ConfigError(f"MedicalNet depth must be one of {sorted(DEPTHS)}, got {depth}")
        if shortcut not in ("A", "B"):
            raise ConfigError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        self.depth, self.shortcut = depth, shortcut
        self.conv1 = nn.Conv3d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        prev = 64
        stages = [(64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4)]  # (channels, stride, dilation)
        for i, ((ch, stride, dil), n) in enumerate(zip(stages, DEPTHS[depth]), start=1):
            blocks = [BasicBlock3d(prev, ch, stride, dil, shortcut)]
            blocks += [BasicBlock3d(ch, ch, 1, dil, shortcut) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            prev = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 1:
            raise DataError(f"MedicalNetResNet expects (B, 1, D, H, W), got {tuple(x.shape)}")
        flat = x.flatten(1)
        x = (x - flat.mean(1).view(-1, 1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1, 1) + 1e-6)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool3d(x, 3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3, 4))


def load_medicalnet(path: str | os.PathLike) -> MedicalNetResNet:
    """A MedicalNet ResNet encoder from a released weights file, frozen, in eval mode.

    The file is ``{"state_dict": {"module.conv1.weight": …}}`` (a bare state_dict, or keys
    without ``module.``, also work). Depth (10/18) and shortcut type (A/B) are read from the
    keys; ``conv_seg.*`` (the segmentation head) is ignored; every other key must match.

    Raises:
        DataError: the file is missing, unreadable, or not such a network.
    """
    path = Path(path)
    raw = read_state_dict(path, "MedicalNet")
    state = raw.get("state_dict", raw)
    if not isinstance(state, dict):
        raise DataError(f"{path}: 'state_dict' is not a dict")
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(k, str)}
    state = {k: v for k, v in state.items() if not k.startswith("conv_seg.")}
    if "conv1.weight" not in state or "layer4.0.conv1.weight" not in state:
        raise DataError(f"{path}: not a MedicalNet ResNet state_dict (no conv1 / layer4 weights)")
    depth = 18 if "layer1.1.conv1.weight" in state else 10
    shortcut = "B" if "layer2.0.downsample.0.weight" in state else "A"
    model = MedicalNetResNet(depth, shortcut)
    try:
        model.load_state_dict(fill_bn_counters(model, state), strict=True)
    except RuntimeError as exc:
        raise DataError(f"{path}: does not match MedicalNet ResNet-{depth} ({str(exc)[:500]})") from None
    return model.eval().requires_grad_(False)
