"""The VGG16 convolutional trunk shared by the perceptual loss and LPIPS (weights from a local file).

The weights file is a ``torch.save``-d state_dict of torchvision's ``vgg16().features``
(keys ``"0.weight"``, ``"0.bias"``, ``"2.weight"`` …; a ``"features."`` prefix is stripped,
``"classifier.*"`` keys are ignored), e.g. made once where internet is available with::

    torch.save(torchvision.models.vgg16(weights="IMAGENET1K_V1").features.state_dict(), "vgg16_features.pt")
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ...errors import DataError
from .weights import read_state_dict

#: torchvision's ``vgg16().features`` layout: conv output channels, "M" = max pool.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
#: indices (in the Sequential) of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (the LPIPS taps)
VGG16_TAPS = (3, 8, 15, 22, 29)


def vgg16_features(width: float = 1.0) -> nn.Sequential:
    """VGG16 convolutional trunk with torchvision's module indices (so its state_dict loads).

    ``width`` scales the channel counts (tests use tiny nets; real weights need 1.0).
    """
    layers: list[nn.Module] = []
    prev = 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            ch = max(1, int(item * width))
            layers += [nn.Conv2d(prev, ch, 3, padding=1), nn.ReLU(inplace=False)]
            prev = ch
    return nn.Sequential(*layers)


def load_vgg16_features(path: str | os.PathLike) -> nn.Sequential:
    """The VGG16 trunk with the weights of ``path`` (its width read from the file), frozen, eval mode.

    Raises:
        DataError: the file is missing, unreadable or not a VGG16-features state_dict.
    """
    path = Path(path)
    state = read_state_dict(path, "VGG16 features")
    state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    if "0.weight" not in state:
        raise DataError(f"{path}: no key '0.weight'; expected torchvision vgg16().features.state_dict()")
    net = vgg16_features(state["0.weight"].shape[0] / 64)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(f"{path}: does not match the VGG16 features layout ({str(exc)[:400]})") from None
    return net.eval().requires_grad_(False)


def vgg16_taps(net: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """Channel-normalised activations (unit L2 norm over channels at every position) of ``x``
    at :data:`VGG16_TAPS`, as LPIPS uses them; ``x`` is already scaled for the network."""
    feats = []
    for i, layer in enumerate(net):
        x = layer(x)
        if i in VGG16_TAPS:
            feats.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        if i == VGG16_TAPS[-1]:
            break
    return feats
