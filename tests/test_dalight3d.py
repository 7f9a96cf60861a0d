"""DALight-3D: shapes, figures, ICN identifiers, CSA axis, ablations and trainers (small patches, CPU)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from nnunet_lightseg import registry
from nnunet_lightseg.architectures.dalight3d import (MODALITY_VOCABULARY, CrossSliceAttention, DALight3D,
                                                     identifiers_for_channels, num_identifiers_for)

BRAIN_TUMOUR = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}  # MSD Task01's channel_names
LABELS = {"background": 0, "edema": 1, "non-enhancing": 2, "enhancing": 3}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


ANISO_PLAN = registry.Plan(2, 2, (8, 16, 16), [(1, 2, 2), (2, 2, 2), (2, 2, 2)])


def test_parameter_count_matches_paper():
    net = DALight3D(4, 4)
    params = sum(p.numel() for p in net.parameters())
    assert params == 2_229_114  # the authors' code: 2,219,074; the paper: 2.22M
    assert abs(params / 2_219_074 - 1) < 0.05
    assert net.channel_identifiers.tolist() == [10, 11, 12, 13]  # unnamed channels: "other" slots


def test_gradients_reach_every_parameter():
    net = DALight3D(2, 3, deep_supervision=True, channel_identifiers=[3, 5]).eval()  # eval: no dropout
    # 16 slices: two at the bottleneck, so the slice softmax has something to choose between
    sum(o.square().mean() for o in net(torch.randn(2, 2, 16, 8, 8))).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        if name.endswith("table.weight"):  # only the rows of the identifiers in use learn
            used = torch.zeros(p.shape[0], dtype=torch.bool)
            used[[3, 5]] = True
            assert p.grad[used].abs().sum() > 0 and p.grad[~used].abs().sum() == 0, name
        else:
            assert p.grad.abs().sum() > 0, name


def test_identifiers_from_channel_names():
    assert identifiers_for_channels(BRAIN_TUMOUR) == [MODALITY_VOCABULARY.index(m) for m in
                                                      ("FLAIR", "T1", "T1CE", "T2")]
    # the same modality gets the same identifier wherever it sits and however it is spelt
    assert identifiers_for_channels(["t2-w", "Flair"]) == identifiers_for_channels(["T2", "FLAIR"])
    assert identifiers_for_channels({"1": "ADC", "0": "T2"}) == [MODALITY_VOCABULARY.index("T2"),
                                                                 MODALITY_VOCABULARY.index("ADC")]
    # unknown names take the "other" slot of their position
    other = len(MODALITY_VOCABULARY)
    assert identifiers_for_channels(["CT", "my_contrast", None]) == [0, other + 1, other + 2]
    assert num_identifiers_for(3) == other + 3


def test_identifiers_are_the_same_in_every_process():
    names = [BRAIN_TUMOUR, ["T2", "ADC"], ["MRI"], ["CT", "weird", "PET"]]
    code = ("import json, sys; from nnunet_lightseg.architectures.dalight3d import identifiers_for_channels; "
            "print(json.dumps([identifiers_for_channels(n) for n in json.loads(sys.argv[1])]))")
    here = [identifiers_for_channels(n) for n in names]
    # Python salts str hashes per process (this one's seed is random); identifiers must not care
    env = dict(os.environ, PYTHONHASHSEED="12345", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code, json.dumps(names)], env=env, capture_output=True,
                            text=True, check=True)
    assert json.loads(result.stdout) == here


def test_identifiers_condition_the_output_and_travel_with_the_checkpoint():
    net = DALight3D(2, 2, channel_identifiers=[3, 5]).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("table.weight"):
                p.normal_(0, 0.2)  # as after training
    x = torch.randn(1, 2, 8, 8, 8)
    with torch.no_grad():
        before = net(x)
        restored = DALight3D(2, 2).eval()  # built as nnU-Net's predictor builds it: no names known
        restored.load_state_dict(net.state_dict())
        assert restored.channel_identifiers.tolist() == [3, 5]
        assert torch.equal(restored(x), before)
        net.set_channel_identifiers([3, 6])
        assert not torch.allclose(net(x), before)
    with pytest.raises(ValueError, match="one per channel"):
        net.set_channel_identifiers([1, 2, 3])
    with pytest.raises(ValueError, match="out of range"):
        net.set_channel_identifiers([1, 99])


def test_cross_slice_attention_mixes_slices_of_the_first_axis_only():
    csa = CrossSliceAttention(16)
    x = torch.randn(1, 16, 4, 6, 10)  # anisotropic: 4 slices of 6x10
    added = csa(x) - x
    assert torch.allclose(added, added[..., :1, :1].expand_as(added), atol=1e-6)  # constant within a slice
    y = x.clone()
    y[:, :, 0] += 1.0  # change slice 0 only
    assert not torch.allclose((csa(y) - y)[:, :, 3], added[:, :, 3])  # slice 3 sees it


ABLATIONS = {  # model -> (parameter-name marker of the removed component)
    "DALight3D_noSepConv": "depthwise",
    "DALight3D_noICN": "table",
    "DALight3D_noCSA": "csa",
    "DALight3D_noSSFB": "fusion",
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_each_ablation_removes_its_component(name):
    marker = ABLATIONS[name]
    full = registry.get("DALight3D").create(ANISO_PLAN).eval()
    ablated = registry.get(name).create(ANISO_PLAN).eval()
    assert any(marker in n for n, _ in full.named_parameters())
    assert not any(marker in n for n, _ in ablated.named_parameters())
    assert sum(p.numel() for p in ablated.parameters()) != sum(p.numel() for p in full.parameters())
    with torch.no_grad():
        for n, p in full.named_parameters():
            if n.endswith("table.weight"):
                p.normal_(0, 0.2)  # a trained ICN differs from a plain GroupNorm
        shared = {k: v for k, v in full.state_dict().items()
                  if k in ablated.state_dict() and ablated.state_dict()[k].shape == v.shape}
        ablated.load_state_dict(shared, strict=False)
        x = torch.randn(1, 2, 4, 16, 16)
        assert not torch.allclose(full(x), ablated(x), atol=1e-5)


def test_two_dimensional_data_is_refused_clearly():
    with pytest.raises(registry.UnsupportedConfigurationError, match="3d_fullres"):
        registry.get("DALight3D").create(registry.Plan(1, 2, (28, 20), [(2, 2)] * 3))
    with pytest.raises(ValueError, match="3D only"):
        DALight3D(1, 2, strides=[(2, 2)] * 3)


# ---- trainers -------------------------------------------------------------------------------------

def _plans(patch, steps, channels=4, batch_size=2, configuration="3d_fullres"):
    pool = [[1] * len(patch)] + [list(s) for s in steps]
    return {"dataset_name": "Dataset999_DALightToy", "plans_name": "nnUNetPlans", "continue_training": False,
            "original_median_spacing_after_transp": [1] * len(patch), "image_reader_writer": "SimpleITKIO",
            "original_median_shape_after_transp": [2 * p for p in patch],
            "transpose_forward": list(range(len(patch))), "transpose_backward": list(range(len(patch))),
            "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {},
            "configurations": {configuration: {
                "data_identifier": f"nnUNetPlans_{configuration}", "preprocessor_name": "DefaultPreprocessor",
                "batch_size": batch_size, "patch_size": list(patch), "median_image_size_in_voxels": [2 * p for p in patch],
                "spacing": [1] * len(patch), "normalization_schemes": ["ZScoreNormalization"] * channels,
                "use_mask_for_norm": [False] * channels, "batch_dice": False,
                "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                                 "arch_kwargs": {"n_stages": len(pool), "strides": pool,
                                                 "kernel_sizes": [[3] * len(patch)] * len(pool)},
                                 "_kw_requires_import": []}}}}


@pytest.fixture
def nnunet_dirs(tmp_path, monkeypatch):
    """nnU-Net's folders; initialize() only needs the preprocessed folder to name a dataset format."""
    data = tmp_path / "preprocessed" / "Dataset999_DALightToy" / "nnUNetPlans_3d_fullres"
    data.mkdir(parents=True)
    (data / "case.npz").touch()
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    return tmp_path


def _trainer(name, patch=(16, 16, 16), steps=((2, 2, 2),) * 3, channel_names=BRAIN_TUMOUR):
    import nnunet_lightseg.trainers as trainers
    dataset_json = {"channel_names": channel_names, "labels": LABELS, "numTraining": 1, "file_ending": ".nii.gz"}
    trainer = getattr(trainers, name)(_plans(patch, steps, len(channel_names)), "3d_fullres", 0, dataset_json,
                                      torch.device("cpu"))
    trainer.initialize()
    return trainer


def test_trainers_are_exported():
    import nnunet_lightseg.trainers as trainers
    for suffix in ("", "_noSepConv", "_noICN", "_noCSA", "_noSSFB", "_Paper"):
        assert f"nnUNetTrainerDALight3D{suffix}" in trainers.__all__


def test_trainer_sets_identifiers_that_the_predictor_gets_back(nnunet_dirs):
    trainer = _trainer("nnUNetTrainerDALight3D", channel_names={"0": "T2", "1": "ADC"})
    expected = identifiers_for_channels(["T2", "ADC"])
    assert trainer.network.channel_identifiers.tolist() == expected
    # nnU-Net's predictor: build from the plan alone, then load the checkpoint's state dict
    network = type(trainer).build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 2, 4,
                                                       False)
    network.load_state_dict(trainer.network.state_dict())
    assert network.channel_identifiers.tolist() == expected


def test_cascade_segmentation_channels_are_unnamed():
    from nnunet_lightseg.trainers.dalight3d import channel_identifiers
    ids = channel_identifiers({"channel_names": {"0": "CT"}}, 3)
    assert ids == [0, len(MODALITY_VOCABULARY) + 1, len(MODALITY_VOCABULARY) + 2]


def test_default_recipe_reduces_the_loss_without_nan(nnunet_dirs):
    trainer = _trainer("nnUNetTrainerDALight3D", patch=(8, 16, 16), steps=((1, 2, 2), (2, 2, 2)))
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-2
    x = torch.randn(2, 4, 8, 16, 16)
    seg = (torch.nn.functional.avg_pool3d(x[:, :1], 3, 1, 1) > 0.1).float() * 2
    target = [seg] + [torch.nn.functional.interpolate(seg, scale_factor=[1 / s for s in stride], mode="nearest")
                      for stride in trainer.network.output_strides[1:]]
    losses = [float(trainer.train_step({"data": x, "target": target})["loss"]) for _ in range(6)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_paper_recipe(nnunet_dirs):
    trainer = _trainer("nnUNetTrainerDALight3D_Paper")
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert trainer.optimizer.param_groups[0]["lr"] == 5e-5 and trainer.optimizer.param_groups[0]["weight_decay"] == 1e-5
    trainer.lr_scheduler.step(trainer.num_epochs - 1)  # the last of the paper's 50 epochs ends the cosine
    assert trainer.num_epochs == 50 and trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-6, rel=1e-3)
    assert trainer.batch_size == 1 and trainer.probabilistic_oversampling
    assert not trainer.enable_deep_supervision and trainer.loss.weight_ce == 0.5 and trainer.loss.weight_dice == 1
    assert trainer.grad_scaler is None
    x = torch.randn(1, 4, 16, 16, 16)
    # nnU-Net's steps enter autocast on CUDA; the network computes in float32 inside it all the same
    seen = []
    trainer.network.head[-1].register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert trainer.network(x).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")  # the network's forward left the caller's autocast as it was
    assert seen == [torch.float32]
    with pytest.raises(RuntimeError), torch.autocast("cpu", dtype=torch.bfloat16):
        trainer.network(torch.randn(1, 4, 16, 16))  # a failing forward leaves autocast too
    assert not torch.is_autocast_enabled("cpu")
    default = _trainer("nnUNetTrainerDALight3D")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert default.network(x)[0].dtype == torch.bfloat16  # the default recipe keeps nnU-Net's mixed precision
    loss = trainer.train_step({"data": x, "target": (x[:, :1] > 0).float()})["loss"]
    assert torch.isfinite(torch.tensor(loss))
