"""Models that travel: export -> install elsewhere -> the same predictions; every tampering refused, nothing left."""
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import require_real_data
from synthetic_model import make_model_folder, spine_plans
from transseg.cli.export_model import main as export
from transseg.cli.install_model import main as install
from transseg.cli.predict import main as predict
from transseg.inference.in_memory import Predictor
from transseg.model_export import MANIFEST

SPINE_CT = "sub-ct_label-22_ct.nii.gz"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A two-fold model folder, its predictions of the real spine CT, and its export (folds 0 and 1)."""
    base = tmp_path_factory.mktemp("export")
    folder = make_model_folder(base / "results" / "Dataset091_Spine" / "plans", spine_plans(), {"0": 5, "1": 6})
    (folder / "fold_1" / "training_log.txt").write_text("not exported\n")
    assert predict(["-i", str(require_real_data() / SPINE_CT), "-o", str(base / "original"), "-m", str(folder),
                    "--device", "cpu"]) == 0
    assert export(["-m", str(folder), "-o", str(base / "model.zip"), "-f", "0", "1"]) == 0
    return base / "model.zip", base / "original" / SPINE_CT


def _labels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_export_install_predict_gives_the_same_predictions(exported, tmp_path, capsys):
    archive, original = exported
    with zipfile.ZipFile(archive) as opened:
        names = sorted(opened.namelist())
        manifest = json.loads(opened.read(MANIFEST))
    assert names == ["dataset.json", "fold_0/checkpoint_final.pt", "fold_1/checkpoint_final.pt", MANIFEST,
                     "plans.json"]
    assert manifest["folds"] == ["0", "1"] and manifest["transseg_version"] and manifest["checkpoint"] == "final"
    with zipfile.ZipFile(archive) as opened:
        assert all(hashlib.sha256(opened.read(n)).hexdigest() == m["sha256"] for n, m in manifest["members"].items())
    results = tmp_path / "fresh" / "results"                   # empty, on another path
    assert install([str(archive), "--results_root", str(results)]) == 0
    installed = results / "Dataset091_Spine" / "plans"
    assert sorted(p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file()) == [
        f"Dataset091_Spine/plans/{n}" for n in names if n != MANIFEST]
    source = str(require_real_data() / SPINE_CT)
    assert predict(["-i", source, "-o", str(tmp_path / "installed"), "-d", "91", "--results_root", str(results),
                    "--device", "cpu"]) == 0
    assert predict(["-i", source, "-o", str(tmp_path / "zip"), "-m", str(archive), "--device", "cpu"]) == 0
    for folder in ("installed", "zip"):
        assert np.array_equal(_labels(tmp_path / folder / SPINE_CT), _labels(original)), folder
    in_memory = Predictor.from_model_folder(archive, device="cpu").predict_image(sitk.ReadImage(source))
    assert np.array_equal(sitk.GetArrayFromImage(in_memory), _labels(original))
    assert install([str(archive), "--results_root", str(results)]) == 1
    assert "installed there already; pass --overwrite" in capsys.readouterr().err
    assert install([str(archive), "--results_root", str(results), "--overwrite"]) == 0
    assert (installed / "plans.json").is_file() and not [p for p in installed.parent.iterdir() if ".tmp-" in p.name]


def _tampered(archive: Path, target: Path, change) -> Path:
    """A copy of ``archive`` whose members (name -> bytes) and manifest ``change(members, manifest)`` edits."""
    with zipfile.ZipFile(archive) as opened:
        members = {n: opened.read(n) for n in opened.namelist() if n != MANIFEST}
        manifest = json.loads(opened.read(MANIFEST))
    change(members, manifest)
    with zipfile.ZipFile(target, "w") as out:
        out.writestr(MANIFEST, json.dumps(manifest))
        for name, data in members.items():
            out.writestr(name, data)
    return target


def _listed(members, manifest, name, data):
    members[name] = data
    manifest["members"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _flip_a_byte(members, manifest):
    data = bytearray(members["fold_1/checkpoint_final.pt"])
    data[len(data) // 2] ^= 0xFF
    members["fold_1/checkpoint_final.pt"] = bytes(data)


class Pickled:                      # not a tensor, number or string: weights_only=True refuses to build it
    pass


def _pickled_checkpoint(members, manifest):
    path = Path(__file__).parent / ".pickled.pt"
    torch.save({"format": "transseg-checkpoint", "version": 1, "payload": Pickled()}, path)
    _listed(members, manifest, "fold_1/checkpoint_final.pt", path.read_bytes())
    path.unlink()


TAMPERINGS = {
    "parent": (lambda m, f: _listed(m, f, "../escaped.json", b"{}"),
               "member '../escaped.json' refused: its path leaves"),
    "absolute": (lambda m, f: _listed(m, f, "/tmp/escaped.json", b"{}"),
                 "member '/tmp/escaped.json' refused: its path"),
    "hash": (_flip_a_byte, "member 'fold_1/checkpoint_final.pt' refused: its sha256"),
    "unlisted": (lambda m, f: m.__setitem__("fold_2/checkpoint_final.pt", b"x"),
                 "member 'fold_2/checkpoint_final.pt' refused: it is not listed in the manifest"),
    "pickle": (_pickled_checkpoint, "member 'fold_1/checkpoint_final.pt' refused: not a loadable TransSeg checkpoint "
                                    "of these plans with torch.load(weights_only=True)"),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_a_tampered_model_is_refused_naming_the_member_and_nothing_is_installed(exported, tmp_path, capsys,
                                                                                   tampering):
    change, message = TAMPERINGS[tampering]
    archive = _tampered(exported[0], tmp_path / "tampered.zip", change)
    results = tmp_path / "results"
    assert install([str(archive), "--results_root", str(results)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not [p for p in results.rglob("*") if p.is_file()]             # no member, no temporary left
    assert not (tmp_path / "escaped.json").exists() and not Path("/tmp/escaped.json").exists()
    assert predict(["-i", str(require_real_data() / SPINE_CT), "-o", str(tmp_path / "out"), "-m", str(archive),
                    "--device", "cpu"]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
