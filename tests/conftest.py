"""Shared fixtures."""
import pytest
import torch


def make_tiny_pipeline():
    """A small, untrained MedLSDMPipeline (3 classes, 4× VQ-GAN, 2-level UNet) whose output
    depends on its inputs (the zero-initialised output layers are randomised)."""
    from diffusers import DDPMScheduler

    from medlsdm.models.unet import SemanticUNet
    from medlsdm.models.vqgan import VQGAN
    from medlsdm.pipelines.pipeline_medlsdm import MedLSDMPipeline

    torch.manual_seed(0)
    vqgan = VQGAN(channels=(8, 8, 8), embedding_dim=4, num_embeddings=16, decoder_type="spade", num_classes=3,
                  norm_num_groups=4, scaling_factor=0.7)
    unet = SemanticUNet(in_channels=4, out_channels=4, num_classes=3, channels=(8, 16), attention_levels=(False, True),
                        norm_num_groups=4, num_heads=2)
    with torch.no_grad():
        for p in unet.parameters():
            if not p.abs().sum():
                p.normal_(0, 0.1)
    scheduler = DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2")
    pipe = MedLSDMPipeline(vqgan.eval(), unet.eval(), scheduler, spacing=[6.0, 5.5, 5.5])
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is faster and does not fight other jobs for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_pipeline():
    return make_tiny_pipeline()
