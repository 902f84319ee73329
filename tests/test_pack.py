"""medlsdm pack / medlsdm run --from-pack: a smoke run packed, verified, unpacked elsewhere and
notebook 04 run from it; tampered and unsafe packs refused before anything is written."""

import io
import json
import logging
import tarfile

import pytest
import yaml

from medlsdm.atomic import read_json
from medlsdm.cli import main
from medlsdm.data.prepare import load_manifest
from medlsdm.errors import ConfigError, PackError
from medlsdm.pack import MANIFEST, measure_precision, pack_run, unpack_run, verify_pack
from medlsdm.training.checkpoint import file_digest


@pytest.fixture(scope="module")
def smoke_pack(smoke_run, tmp_path_factory):
    """The smoke run packed once through the CLI (read-only for the tests)."""
    out = tmp_path_factory.mktemp("pack") / "smoke.tar.gz"
    assert main(["pack", "--run-dir", str(smoke_run.root), "--out", str(out), "--check-steps", "3"]) == 0
    return out


def _members(pack):
    with tarfile.open(pack, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def _write(path, files, extra=()):
    """A .tar.gz of ``files`` (name → bytes) plus ``extra`` TarInfo members (links and the like)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return path


def test_pack_holds_what_04_to_07_read_with_a_model_card_and_hashes(smoke_pack, smoke_run):
    files = _members(smoke_pack)
    manifest = json.loads(files[MANIFEST])
    assert set(files) - {MANIFEST} == set(manifest["files"])
    assert smoke_pack.stat().st_size < 30e6  # the bar for a quick run (quick: 25.5 MB); smoke is far below
    assert {
        "README.md",
        "metrics.json",
        "data/manifest.json",
        "data/split.json",
        "data/cases.h5",
        "raw/torso-ct/phantom.json",
        "pipeline/model_index.json",
        "pipeline/unet/config.json",
        "pipeline/vqgan/diffusion_pytorch_model.safetensors",
    } <= set(files)
    assert not any(n.startswith(("vqgan/", "diffusion/", "cardiac/", "samples/", "executed/")) for n in files)
    import hashlib

    for name, entry in manifest["files"].items():
        assert hashlib.sha256(files[name]).hexdigest() == entry["sha256"] and len(files[name]) == entry["bytes"]
    # no path of the source run inside: the oracle finds its phantom record relative to the data
    assert str(smoke_run.root).encode() not in b"".join(v for n, v in files.items() if n.endswith(".json"))
    assert json.loads(files["data/manifest.json"])["data_root"] == "../raw/torso-ct"
    assert set(json.loads(files["metrics.json"])) == {"01_preprocessing", "02_vqgan", "03_diffusion"}
    # the model card: Hugging Face front matter, and the run's numbers in the text
    card = files["README.md"].decode()
    front = yaml.safe_load(card.split("---\n")[1])
    assert (
        front["license"] == "apache-2.0"
        and "medlsdm" in front["tags"]
        and front["datasets"] == ["medlsdm torso-ct phantom"]
    )
    m02 = smoke_run.read_metrics()["02_vqgan"]
    assert f"{m02['psnr']:.2f}" in card and "## Intended use" in card and "## Limits" in card
    assert "Not for diagnosis" in card


def test_weights_stored_as_measured(smoke_pack, smoke_run):
    from safetensors.torch import load

    manifest = json.loads(_members(smoke_pack)[MANIFEST])
    precision = manifest["precision"]
    for name in ("unet", "vqgan"):
        tensors = load(_members(smoke_pack)[f"pipeline/{name}/diffusion_pytorch_model.safetensors"])
        floats = {str(t.dtype) for t in tensors.values() if t.is_floating_point()}
        assert floats == {f"torch.{precision[name]['stored']}"}
        assert (precision[name]["psnr_db"] >= precision["tolerance_db"]) == (precision[name]["stored"] == "float16")
    # a tolerance no rounding meets keeps every component in float32
    strict = measure_precision(smoke_run, tolerance_db=1e6, steps=2)
    assert strict["unet"]["stored"] == strict["vqgan"]["stored"] == "float32" and strict["as_stored"]["max_abs"] == 0


def test_round_trip_runs_notebook_04_from_the_pack(smoke_pack, tmp_path):
    new = tmp_path / "class" / "run"
    assert (
        main(["run", "--from-pack", str(smoke_pack), "--run-dir", str(new), "--only", "04", "--profile", "smoke"]) == 0
    )
    assert (new / "executed" / "04_synthesis.ipynb").is_file()
    metrics = read_json(new / "metrics.json")
    assert {"01_preprocessing", "03_diffusion", "04_synthesis"} <= set(metrics)
    assert metrics["04_synthesis"]["diversity_ratio"] > 0  # the oracle re-rendered from the pack's phantom record
    manifest = load_manifest(new / "data")
    assert len(list((new / "data" / "images").glob("*.nii.gz"))) == len(manifest.cases)
    from medlsdm.pipelines.loading import load_pipeline

    assert {str(p.dtype) for p in load_pipeline(new).unet.parameters()} == {"torch.float32"}
    # the same pack again into the same folder: used as it is
    assert unpack_run(smoke_pack, new).root == new.resolve()
    # a changed weight file in it: refused, the run dir is not the pack's any more
    (new / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"0")
    with pytest.raises(PackError, match="changed since the run was unpacked"):
        unpack_run(smoke_pack, new)


def test_unpacked_run_holds_the_verified_bytes(smoke_pack, tmp_path):
    run = unpack_run(smoke_pack, tmp_path / "run")
    manifest = read_json(run.root / MANIFEST)
    for name, entry in manifest["files"].items():
        assert file_digest(run.root / name) == entry["sha256"]
    assert not list(tmp_path.glob(".run.unpack-*"))  # no staging folder left


@pytest.mark.parametrize(
    "change, message",
    [
        ("byte", "does not match its sha256"),
        ("traversal", "climbs out of the pack"),
        ("absolute", "is an absolute path"),
        ("symlink", "is a link"),
        ("hardlink", "is a link"),
        ("code", "is a code file"),
        ("pickle", "is a code file"),
        ("unlisted", "is not listed in pack.json"),
        ("other", "is not a file a pack holds"),
        ("missing", "missing from the pack"),
        ("no manifest", "no pack.json"),
    ],
)
def test_unsafe_or_tampered_pack_is_refused_before_anything_is_written(smoke_pack, tmp_path, change, message):
    files = _members(smoke_pack)
    extra = []
    if change == "byte":
        data = bytearray(files["pipeline/unet/diffusion_pytorch_model.safetensors"])
        data[len(data) // 2] ^= 1
        files["pipeline/unet/diffusion_pytorch_model.safetensors"] = bytes(data)
    elif change == "traversal":
        files["../evil.json"] = b"{}"
    elif change == "absolute":
        files[str(tmp_path / "evil.json")] = b"{}"
    elif change in ("symlink", "hardlink"):
        info = tarfile.TarInfo("raw/torso-ct/phantom.json" if change == "hardlink" else "data/labels.json")
        info.type, info.linkname = (
            (tarfile.SYMTYPE, "/etc/passwd") if change == "symlink" else (tarfile.LNKTYPE, "README.md")
        )
        extra.append(info)
        if change == "hardlink":
            del files["raw/torso-ct/phantom.json"]
    elif change == "code":
        files["pipeline/unet/__init__.py"] = b"import os\n"
    elif change == "pickle":
        files["pipeline/unet/diffusion_pytorch_model.bin"] = b"\x80\x04."
    elif change == "unlisted":
        files["raw/other/phantom.json"] = b"{}"
    elif change == "other":
        files["notes.txt"] = b"hello"
    elif change == "missing":
        del files["data/split.json"]
    elif change == "no manifest":
        del files[MANIFEST]
    bad = _write(tmp_path / "bad.tar.gz", files, extra)
    with pytest.raises(PackError, match=message) as err:
        verify_pack(bad)
    assert str(bad) in str(err.value)
    new = tmp_path / "new"
    assert main(["run", "--from-pack", str(bad), "--run-dir", str(new), "--profile", "smoke", "--only", "04"]) == 2
    assert not new.exists() and not (tmp_path / "evil.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.tar.gz"]  # no staging folder left either


def test_corrupt_archive_is_refused(smoke_pack, tmp_path):
    data = bytearray(smoke_pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(PackError, match=str(bad)):
        verify_pack(bad)


def test_from_pack_refuses_training_notebooks_and_a_run_dir_holding_another_run(
    smoke_pack, smoke_run, tmp_path, caplog
):
    new = tmp_path / "new"
    with caplog.at_level(logging.ERROR):
        assert main(["run", "--from-pack", str(smoke_pack), "--run-dir", str(new), "--only", "03,04"]) == 2
    assert "03 trains the diffusion model again" in caplog.text and not new.exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.json").write_text("{}")
    with pytest.raises(PackError, match="holds another run"):
        unpack_run(smoke_pack, other)
    assert [p.name for p in other.iterdir()] == ["metrics.json"]
    with pytest.raises(ConfigError, match="01 rewrites the data"):
        from medlsdm.runner import run_notebooks

        run_notebooks("smoke", tmp_path / "x", only=["01"], from_pack=smoke_pack)


def test_pack_refuses_a_run_without_a_pipeline(tmp_path):
    from medlsdm.errors import DataError

    (tmp_path / "run" / "data").mkdir(parents=True)
    with pytest.raises(DataError, match="run notebook 01"):
        pack_run(tmp_path / "run", tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()


def test_card_bars_follow_the_numbers():
    from medlsdm.model_card import bars

    metrics = {
        "02_vqgan": {
            "psnr": 27.0,
            "latent_ablation": {"own_minus_other": 3.0},
            "body": {"VQ-GAN": {"psnr": 26.0}, "painting + pooled residual": {"psnr": 25.0}},
        },
        "07_whole_volume": {"seam_gap": {"gap": 0.01, "passes": True}},
    }
    rows = {row[0]: row[3] for row in bars(metrics)}
    assert rows["02 VQ-GAN reconstruction, body PSNR (dB), held-out split"] is True
    assert rows["02 decoder uses its latent: PSNR own − another case's latent (dB)"] is True
    assert rows["07 windowed whole scans: seam gap over one pass"] is True
    assert rows["05 augmentation: Dice gain of real-small + synthetic over real-small"] is None  # not run
    metrics["02_vqgan"]["body"]["VQ-GAN"]["psnr"] = 24.0
    metrics["02_vqgan"]["latent_ablation"]["own_minus_other"] = -1.0
    rows = {row[0]: row[3] for row in bars(metrics)}
    assert rows["02 VQ-GAN reconstruction, body PSNR (dB), held-out split"] is False
    assert rows["02 decoder uses its latent: PSNR own − another case's latent (dB)"] is False
    lesion = "05 lesion augmentation: lesion Dice gain of real-small + lesion edits over real-small"
    assert rows[lesion] is None  # not run
    for ci, met in (([0.01, 0.2], True), ([0.0, 0.0], False), (None, False)):
        metrics["05_evaluation"] = {"lesion_augmentation": {"gain": 0.1, "gain_ci": ci, "control_gain": 0.2}}
        assert {row[0]: row[3] for row in bars(metrics)}[lesion] is met


def _consistent(files, name, data):
    """``files`` with ``name`` replaced by ``data`` and pack.json updated to match: a pack whose
    author means harm, which the hashes cannot catch."""
    import hashlib

    files = dict(files, **{name: data})
    manifest = json.loads(files[MANIFEST])
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    files[MANIFEST] = json.dumps(manifest).encode()
    return files


@pytest.mark.parametrize(
    "change, message",
    [
        ("external link", "cases.h5: torso_000/image is a link"),
        ("foreign class", "model_index.json: component 'unet' is"),
        ("case path", "is not images/<id>.nii.gz"),
    ],
)
def test_a_consistent_but_unsafe_pack_is_refused_before_the_run_dir_appears(smoke_pack, tmp_path, change, message):
    import h5py

    files = _members(smoke_pack)
    if change == "external link":
        store = tmp_path / "cases.h5"
        store.write_bytes(files["data/cases.h5"])
        with h5py.File(store, "r+") as f:
            del f["cases/torso_000/image"]
            f["cases/torso_000/image"] = h5py.ExternalLink("/etc/hostname", "/data")
        files = _consistent(files, "data/cases.h5", store.read_bytes())
        store.unlink()
    elif change == "foreign class":
        index = json.loads(files["pipeline/model_index.json"])
        index["unet"] = ["os", "system"]
        files = _consistent(files, "pipeline/model_index.json", json.dumps(index).encode())
    else:
        manifest = json.loads(files["data/manifest.json"])
        manifest["cases"][0]["image"] = "../../evil.nii.gz"
        files = _consistent(files, "data/manifest.json", json.dumps(manifest).encode())
    bad = _write(tmp_path / "bad.tar.gz", files)
    verify_pack(bad)  # every hash matches
    with pytest.raises(PackError, match=message) as err:
        unpack_run(bad, tmp_path / "new")
    assert str(bad) in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ["bad.tar.gz"]
