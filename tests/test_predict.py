"""`nnunet-lightseg predict` (the trained model in process, and its ONNX export in ONNX Runtime and in
OpenVINO) against the stock nnUNetv2_predict, on the demo data (issue 14)."""
import glob
import os
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from cli_helpers import IN_PROCESS_AUGMENTATION, run
from nnunet_lightseg.demo_data import DEFAULT_DATASET_ID
from nnunet_lightseg.onnx_export import PARITY_TOLERANCE

pytest.importorskip("onnxruntime", reason="pip install 'nnunet-lightseg[onnx]'")
pytestmark = pytest.mark.integration

DATASET = str(DEFAULT_DATASET_ID)
TRAINER = "nnUNetTrainerUltraLightUNet_2epochs_3iters"
# ONNX Runtime, OpenVINO and torch sum in different orders: the export check holds the class
# probabilities to PARITY_TOLERANCE of torch's. A label may differ only where the stock prediction's
# two most probable classes are closer than that.


@pytest.fixture(scope="module")
def trained(demo_nnunet):
    env, folder = demo_nnunet
    run(["nnUNetv2_train", DATASET, "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"],
        {**env, **IN_PROCESS_AUGMENTATION})
    return env, folder


def segmentations_and_probabilities(folder):
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.nii.gz"))):
        case = os.path.basename(path)[:-len(".nii.gz")]
        out[case] = (sitk.GetArrayFromImage(sitk.ReadImage(path)),
                     np.load(os.path.join(folder, case + ".npz"))["probabilities"])
    return out


@pytest.fixture(scope="module")
def exported_and_stock(trained, tmp_path_factory):
    """Fold 0 exported, and nnUNetv2_predict's segmentations and probabilities of the held-out cases."""
    env, folder = trained
    exported, stock = (str(tmp_path_factory.mktemp(name)) for name in ("export", "stock"))
    log = run(["nnunet-lightseg", "export", "-d", DATASET, "-c", "3d_fullres", "-tr", TRAINER, "-f", "0",
               "-o", exported], env)
    assert "batch axis dynamic" in log
    assert sorted(os.listdir(exported)) == sorted([".nnunet-lightseg", "dataset.json", "export.json", "model.onnx",
                                                   "plans.json"])
    run(["nnUNetv2_predict", "-i", os.path.join(folder, "imagesTs"), "-o", stock, "-d", DATASET, "-c", "3d_fullres",
         "-tr", TRAINER, "-f", "0", "-device", "cpu", "--save_probabilities", "-npp", "1", "-nps", "1"], env)
    theirs = segmentations_and_probabilities(stock)
    images = glob.glob(os.path.join(folder, "imagesTs", "*_0000.nii.gz"))
    assert sorted(theirs) == sorted(os.path.basename(p)[:-len("_0000.nii.gz")] for p in images)
    return exported, theirs


@pytest.mark.parametrize("source", ["torch", "onnxruntime", "openvino"])
def test_predict_in_process_and_from_onnx_match_nnunetv2_predict(source, trained, exported_and_stock, tmp_path):
    if source == "openvino":
        pytest.importorskip("openvino", reason="pip install 'nnunet-lightseg[openvino]'")
    env, folder = trained
    exported, theirs = exported_and_stock
    images, out = os.path.join(folder, "imagesTs"), str(tmp_path / "out")
    options = (["-d", DATASET, "-c", "3d_fullres", "-tr", TRAINER, "-f", "0"] if source == "torch" else
               ["--onnx", exported, "--runtime", source])
    if source == "onnxruntime":  # the same fold twice: averaged as two folds, the same logits
        options.insert(2, exported)
    log = run(["nnunet-lightseg", "predict", *options, "-i", images, "-o", out, "--save_probabilities"], env)
    cases = sorted(theirs)
    assert cases and [line.split()[1].rstrip(":") for line in log.splitlines() if line.startswith("[")] == cases
    mine = segmentations_and_probabilities(out)
    assert sorted(mine) == cases
    for case in cases:
        (seg, probabilities), (stock_seg, stock_probabilities) = mine[case], theirs[case]
        assert seg.shape == stock_seg.shape
        np.testing.assert_allclose(probabilities, stock_probabilities, atol=PARITY_TOLERANCE)
        top_two = np.sort(stock_probabilities, axis=0)[-2:]
        near_ties = (top_two[1] - top_two[0]) < PARITY_TOLERANCE
        assert np.all((seg == stock_seg) | near_ties), case


def test_export_names_a_missing_fold_and_touches_nothing(trained, tmp_path):
    env, _ = trained
    output = tmp_path / "export"
    with pytest.raises(AssertionError, match=r"no checkpoint_final.pth in .*fold_3: train that fold first"):
        run(["nnunet-lightseg", "export", "-d", DATASET, "-c", "3d_fullres", "-tr", TRAINER, "-f", "3",
             "-o", str(output)], env)
    assert not output.exists()


def test_a_runtime_without_an_export_or_not_installed_is_named_with_its_fix(monkeypatch, tmp_path):
    from nnunet_lightseg.errors import UsageError
    from nnunet_lightseg.onnx_runtimes import load
    from nnunet_lightseg.predict import PredictConfig, predict

    with pytest.raises(UsageError, match=r"--runtime openvino runs an ONNX export: give --onnx DIR too"):
        predict(PredictConfig(str(tmp_path), str(tmp_path / "out"), runtime="openvino"))
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(UsageError, match=r"openvino is not installed: pip install 'nnunet-lightseg\[openvino\]'"):
        load(str(tmp_path / "model.onnx"), "openvino")
    assert not (tmp_path / "out").exists()


def test_an_onnx_network_runs_each_exported_fold_as_the_predictor_loads_it():
    import torch

    from nnunet_lightseg.predict import OnnxNetwork

    network = OnnxNetwork([lambda x: x * 0, lambda x: x * 0 + 2])
    outputs = []
    for state in network.fold_states():  # what nnUNetPredictor does per fold before its sliding window
        network.load_state_dict(state)
        outputs.append(float(network(torch.ones(1, 1, 2, 2, 2)).mean()))
    assert outputs == [0.0, 2.0]


def test_exports_of_different_models_are_refused_before_anything_is_written(tmp_path):
    import json

    from nnunet_lightseg.errors import UsageError
    from nnunet_lightseg.predict import PredictConfig, predict

    metadata = {"trainer_name": "T", "configuration": "3d_fullres", "inference_allowed_mirroring_axes": [0, 1, 2],
                "input": {"channels": 1, "patch_size": [8, 8, 8]}}
    for name, trainer in (("a", "T"), ("b", "OtherTrainer")):
        (tmp_path / name).mkdir()
        for file, content in (("export.json", {**metadata, "trainer_name": trainer}), ("plans.json", {}),
                              ("dataset.json", {})):
            (tmp_path / name / file).write_text(json.dumps(content))
    with pytest.raises(UsageError, match=r"--onnx .*b: not a fold of the model exported in .*a \(trainer"):
        predict(PredictConfig(str(tmp_path), str(tmp_path / "out"), onnx=(str(tmp_path / "a"), str(tmp_path / "b"))))
    assert not (tmp_path / "out").exists()
