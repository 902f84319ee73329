"""Networks: shared blocks, the VQ-GAN autoencoder and its PatchGAN discriminators."""

from .blocks import SPADE, Downsample, ResBlock, Upsample, one_hot
from .discriminators import PatchDiscriminator
from .vqgan import VQGAN, VectorQuantizerEMA, VQGANOutput

__all__ = [
    "SPADE",
    "Downsample",
    "ResBlock",
    "Upsample",
    "one_hot",
    "PatchDiscriminator",
    "VQGAN",
    "VectorQuantizerEMA",
    "VQGANOutput",
]
