"""The VGG16 convolutional trunk shared by the perceptual loss and LPIPS (weights from a local file)."""
from __future__ import annotations

from torch import nn

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
