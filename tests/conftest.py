"""Shared fixtures, among them the one smoke run of the notebooks that every test needing a
run directory reads (``smoke_run``) or copies (``smoke_run_copy``)."""

import shutil

import pytest
import torch
from notebook_utils import error_outputs


def make_tiny_pipeline():
    """A small, untrained MedLSDMPipeline (3 classes, 4× VQ-GAN, 2-level UNet) whose output
    depends on its inputs (the zero-initialised output layers are randomised)."""
    from diffusers import DDPMScheduler

    from medlsdm.models.unet import SemanticUNet
    from medlsdm.models.vqgan import VQGAN
    from medlsdm.pipelines.pipeline_medlsdm import MedLSDMPipeline

    torch.manual_seed(0)
    vqgan = VQGAN(
        channels=(8, 8, 8),
        embedding_dim=4,
        num_embeddings=16,
        decoder_type="spade",
        num_classes=3,
        norm_num_groups=4,
        scaling_factor=0.7,
    )
    unet = SemanticUNet(
        in_channels=4,
        out_channels=4,
        num_classes=3,
        channels=(8, 16),
        attention_levels=(False, True),
        norm_num_groups=4,
        num_heads=2,
    )
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
def phantom_data(tmp_path_factory):
    """A tiny torso phantom run's data folder: 4 cases, prepared like notebook 01 (small grid)."""
    from medlsdm.data.phantom import make_phantom
    from medlsdm.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("phantom")
    make_phantom("torso-ct", root / "raw", 4, seed=0, shape=(48, 48, 20))
    prepare_dataset("torso-ct", root / "raw", root / "data", spacing=(12.0, 11.0, 11.0), block_shape=(16, 32, 32))
    return root / "data"


@pytest.fixture(scope="module")
def tiny_pipeline():
    return make_tiny_pipeline()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Every notebook executed once per test session on the ``smoke`` profile, in order, through
    the real runner (the code path of ``medlsdm run``). Notebook 01 runs with ``interactive=True``
    so its executed copy holds widget state for the report tests; the others run as the
    profile says. Read only: a test that writes into a run directory uses ``smoke_run_copy``.

    papermill stops at the first failing cell and raises; the failure is reported here with
    the failing notebook, cell and traceback (every test using the run then errors with it).
    """
    from medlsdm.errors import NotebookError
    from medlsdm.rundir import RunDir
    from medlsdm.runner import find_notebooks, run_notebooks

    run = RunDir(tmp_path_factory.mktemp("smoke_run"))
    keys = [p.name[:2] for p in find_notebooks()]
    try:
        run_notebooks("smoke", run.root, only=["01"], overrides={"interactive": True})
        # the rest as `make demo` runs them: independent notebooks side by side (jobs=2)
        run_notebooks("smoke", run.root, only=[k for k in keys if k != "01"], jobs=2)
    except NotebookError as exc:
        details = [e for p in sorted(run.executed.glob("*.ipynb")) for e in error_outputs(p)]
        pytest.fail(f"the smoke run failed: {exc}\n" + "\n".join(details), pytrace=False)
    return run


@pytest.fixture
def smoke_run_copy(smoke_run, tmp_path):
    """A private copy of the session's smoke run, for tests that write into the run directory."""
    from medlsdm.rundir import RunDir

    return RunDir(shutil.copytree(smoke_run.root, tmp_path / "run"))
