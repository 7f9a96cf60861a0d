"""`nnunet-lightseg predict` (the trained model in process, and its ONNX export) against the stock
nUNetv2_predict, on the demo data (issue 14)."""
import glob
import os

import numpy as np
import pytest
import SimpleITK as sitk

from cli_helpers import IN_PROCESS_AUGMENTATION, run
from nnunet_lightseg.demo_data import DEFAULT_DATASET_ID

pytest.importorskip("onnxruntime", reason="pip install 'nnunet-lightseg[onnx]'")
pytestmark = pytest.mark.integration

DATASET = str(DEFAULT_DATASET_ID)
TRAINER = "nnUNetTrainerUltraLightUNet_2epochs_3iters"
# ONNX Runtime and torch sum in different orders: the export check holds the logits to 1e-4 of the
# largest logit, which moves a softmax probability by less than that. A label may differ only where
# the stock prediction's two most probable classes are closer than this.
PROBABILITY_TOLERANCE = 1e-3


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


def test_predict_in_process_and_from_onnx_match_nnunetv2_predict(trained, tmp_path):
    env, folder = trained
    images = os.path.join(folder, "imagesTs")
    exported, from_onnx, in_process, stock = (str(tmp_path / name) for name in ("export", "onnx", "torch", "stock"))
    log = run(["nnunet-lightseg", "export", "-d", DATASET, "-c", "3d_fullres", "-tr", TRAINER, "-f", "0",
               "-o", exported], env)
    assert "batch axis dynamic" in log
    assert sorted(os.listdir(exported)) == sorted([".nnunet-lightseg", "dataset.json", "export.json", "model.onnx",
                                                   "plans.json"])
    cases = sorted({os.path.basename(p)[:-len("_0000.nii.gz")] for p in glob.glob(os.path.join(images, "*_0000.nii.gz"))})
    for source, out in ((["--onnx", exported], from_onnx),
                        (["-d", DATASET, "-c", "3d_fullres", "-tr", TRAINER, "-f", "0"], in_process)):
        log = run(["nnunet-lightseg", "predict", *source, "-i", images, "-o", out, "--save_probabilities"], env)
        assert [line.split()[1].rstrip(":") for line in log.splitlines() if line.startswith("[")] == cases
    run(["nnUNetv2_predict", "-i", images, "-o", stock, "-d", DATASET, "-c", "3d_fullres", "-tr", TRAINER, "-f", "0",
         "-device", "cpu", "--save_probabilities", "-npp", "1", "-nps", "1"], env)
    theirs = segmentations_and_probabilities(stock)
    assert sorted(theirs) == cases
    for out in (from_onnx, in_process):
        mine = segmentations_and_probabilities(out)
        assert sorted(mine) == cases
        for case in cases:
            (seg, probabilities), (stock_seg, stock_probabilities) = mine[case], theirs[case]
            assert seg.shape == stock_seg.shape
            np.testing.assert_allclose(probabilities, stock_probabilities, atol=PROBABILITY_TOLERANCE)
            top_two = np.sort(stock_probabilities, axis=0)[-2:]
            near_ties = (top_two[1] - top_two[0]) < PROBABILITY_TOLERANCE
            assert np.all((seg == stock_seg) | near_ties), (out, case)


def test_export_names_a_missing_fold_and_touches_nothing(trained, tmp_path):
    env, _ = trained
    output = tmp_path / "export"
    with pytest.raises(AssertionError, match=r"no checkpoint_final.pth in .*fold_3: train that fold first"):
        run(["nnunet-lightseg", "export", "-d", DATASET, "-c", "3d_fullres", "-tr", TRAINER, "-f", "3",
             "-o", str(output)], env)
    assert not output.exists()
