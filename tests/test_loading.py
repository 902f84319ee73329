"""Loading model folders safely: nothing in a folder someone hands you runs code (issue 25)."""

import json
import shutil

import numpy as np
import pytest

from medlsdm import cli
from medlsdm.atomic import save_pretrained_atomic
from medlsdm.data.io import write_nifti
from medlsdm.errors import DataError
from medlsdm.pipelines.loading import check_model_folder, check_pipeline_folder, load_pipeline, load_pipeline_dir
from medlsdm.training.vqgan import load_vqgan

#: Code that would leave a marker file when run (the crafted folders' payload).
PAYLOAD = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n\nclass Evil:\n    pass\n"


@pytest.fixture(scope="module")
def saved(tiny_pipeline, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "pipeline"
    tiny_pipeline.save_pretrained(folder)
    return folder


@pytest.fixture
def folder(saved, tmp_path):
    return shutil.copytree(saved, tmp_path / "pipeline")


def _edit(path, **changes):
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_a_saved_pipeline_loads(folder):
    check_pipeline_folder(folder)
    pipe = load_pipeline_dir(folder)
    assert type(pipe).__name__ == "MedLSDMPipeline" and pipe.unet.config.num_classes == 3


def test_model_index_naming_a_module_beside_its_code_is_refused(folder, tmp_path, caplog):
    """The audit's crafted folder: ``["evil", "Evil"]`` in model_index.json beside evil.py; through
    the CLI too. The code never runs."""
    marker = tmp_path / "marker"
    (folder / "evil.py").write_text(PAYLOAD.format(marker=str(marker)))
    _edit(folder / "model_index.json", evil=["evil", "Evil"])
    with pytest.raises(DataError, match=r"evil\.py: a \.py file in a model folder can run code"):
        load_pipeline_dir(folder)
    labels = tmp_path / "labels.nii.gz"
    write_nifti(labels, np.zeros((8, 16, 16), np.int64), np.eye(4), kind="label")
    assert (
        cli.main(["synthesize", "--pipeline", str(folder), "--labels", str(labels), "--out-dir", str(tmp_path / "out")])
        == 2
    )
    assert "evil.py" in caplog.text
    (folder / "evil.py").unlink()  # without the file: the entry itself is refused
    with pytest.raises(DataError, match=r"model_index.json: unexpected entry 'evil'"):
        load_pipeline_dir(folder)
    assert not marker.exists()


@pytest.mark.parametrize(
    "name",
    [
        "evil.py",
        "unet/diffusion_pytorch_model.bin",
        "vqgan/extra.pkl",
        "weights.pt",
        "scheduler/state.PTH",
        "x.pickle",
        "pkg.py/__init__.txt",
    ],
)
def test_files_that_can_run_code_are_refused_anywhere(folder, name):
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"\x80\x04")
    with pytest.raises(DataError, match="can run code when loaded"):
        load_pipeline_dir(folder)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("_class_name", ["evil", "Evil"], "only MedLSDMPipeline"),
        ("_class_name", "StableDiffusionPipeline", "only MedLSDMPipeline"),
        ("unet", ["evil", "Evil"], "component 'unet'"),
        ("unet", ["diffusers", "UNet2DConditionModel"], "component 'unet'"),
        ("scheduler", ["diffusers", "LCMScheduler"], "allowed: diffusers.DDIMScheduler"),
        ("vqgan", ["medlsdm.models.unet", "SemanticUNet"], "component 'vqgan'"),
        ("spacing", ["evil", "Evil"], "unexpected entry 'spacing'"),
        ("custom_pipeline", "evil", "unexpected entry 'custom_pipeline'"),
    ],
)
def test_model_index_allow_list(folder, key, value, message):
    _edit(folder / "model_index.json", **{key: value})
    with pytest.raises(DataError, match=message):
        check_pipeline_folder(folder)


def test_component_configs_must_name_the_allowed_class(folder):
    _edit(folder / "unet" / "config.json", _class_name="UNet2DModel")
    with pytest.raises(DataError, match=r"unet/config.json: _class_name is 'UNet2DModel', expected 'SemanticUNet'"):
        load_pipeline_dir(folder)
    _edit(folder / "unet" / "config.json", _class_name="SemanticUNet", auto_map={"AutoModel": "evil.Evil"})
    with pytest.raises(DataError, match="auto_map"):
        check_pipeline_folder(folder)
    (folder / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(DataError, match="scheduler_config.json: missing"):
        check_pipeline_folder(folder)


def test_a_symlinked_folder_is_searched_too(folder, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "payload.pkl").write_bytes(b"\x80\x04")
    (folder / "extra").symlink_to(outside, target_is_directory=True)
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # a cycle ends the walk, no hang
    with pytest.raises(DataError, match="payload.pkl"):
        check_pipeline_folder(folder)


def test_vqgan_folder_of_a_run_is_checked(tiny_pipeline, tmp_path):
    model = tmp_path / "run" / "vqgan" / "model"
    save_pretrained_atomic(tiny_pipeline.vqgan, model)
    assert load_vqgan(tmp_path / "run").config.num_classes == 3
    (model / "evil.py").write_text("raise SystemExit('ran')\n")
    with pytest.raises(DataError, match="evil.py"):
        load_vqgan(tmp_path / "run")
    (model / "evil.py").unlink()
    _edit(model / "config.json", _class_name="SemanticUNet")
    with pytest.raises(DataError, match="expected 'VQGAN'"):
        check_model_folder(model, "VQGAN")


def test_missing_pipeline_of_a_run_creates_nothing(tmp_path):
    with pytest.raises(DataError, match="no trained pipeline here"):
        load_pipeline(tmp_path / "run")
    assert not (tmp_path / "run").exists()
