"""`onnx_export`: which axes an export keeps dynamic; how ONNX Runtime and OpenVINO run it (issue 14)."""

import pytest
import torch

from nnunet_lightseg import registry

pytest.importorskip("onnxruntime", reason="pip install 'nnunet-lightseg[onnx]'")
onnx = pytest.importorskip("onnx")

from nnunet_lightseg.onnx_export import PARITY_TOLERANCE, export_network, probability_difference  # noqa: E402
from nnunet_lightseg.onnx_runtimes import OpenVinoModel, session  # noqa: E402


@pytest.mark.parametrize("name, dynamic", [("UltraLightUNet", True), ("VeloxSeg", False)])
def test_an_export_fixes_only_the_axes_its_trace_bakes_in(name, dynamic, tmp_path):
    # VeloxSeg's window attention bakes the patch size and the batch into the trace: it exports with
    # both fixed (batch 1, what nnU-Net's sliding window feeds), instead of being refused
    patch = [40, 56, 40]
    torch.manual_seed(0)
    network = registry.get(name).create(registry.Plan(1, 3, patch, [(2, 2, 2)] * 3)).eval()
    parity = export_network(network, 1, patch, str(tmp_path / "model.onnx"), 1)
    assert parity["dynamic_spatial_axes"] == parity["dynamic_batch"] == dynamic
    assert parity["max_probability_difference_at_patch"] <= PARITY_TOLERANCE
    if dynamic:
        assert parity["max_probability_difference_batch_2"] <= PARITY_TOLERANCE
    else:
        assert parity["max_probability_difference_batch_2"] is None
        assert session(str(tmp_path / "model.onnx"), 1).get_inputs()[0].shape == [1, 1, *patch]


def test_a_network_that_takes_only_its_own_multiples_exports_with_fixed_spatial_axes(tmp_path):
    # nnU-Net's own network on a plan with 4 poolings cannot run at the patch + 8 voxels that the
    # dynamic-axes check probes (the CT-like plan of issue 14 has 5); the export keeps the patch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    network = PlainConvUNet(1, 5, (4, 8, 16, 16, 16), torch.nn.Conv3d, 3, [1, 2, 2, 2, 2], 1, 2, 1, True,
                            torch.nn.InstanceNorm3d, {"affine": True}, None, None, torch.nn.LeakyReLU).eval()
    with pytest.raises(RuntimeError):
        network(torch.zeros(1, 1, 40, 40, 40))
    parity = export_network(network, 1, [32, 32, 32], str(tmp_path / "model.onnx"), 1)
    assert not parity["dynamic_spatial_axes"] and parity["dynamic_batch"]
    assert max(parity["max_probability_difference_at_patch"], parity["max_probability_difference_batch_2"]) <= PARITY_TOLERANCE


def test_onnx_runtime_sessions_do_not_spin_between_runs(tmp_path):
    # spinning intra-op threads took the 2 cores from torch's work between ONNX Runtime calls
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "identity",
                              [value("image", TensorProto.FLOAT, [1])], [value("out", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "identity.onnx"))
    options = session(str(tmp_path / "identity.onnx"), 1).get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_openvino_compiles_the_export_once_per_input_shape_and_matches_torch(tmp_path):
    pytest.importorskip("openvino", reason="pip install 'nnunet-lightseg[openvino]'")
    patch = [40, 56, 40]
    torch.manual_seed(0)
    network = registry.get("UltraLightUNet").create(registry.Plan(1, 3, patch, [(2, 2, 2)] * 3)).eval()
    export_network(network, 1, patch, str(tmp_path / "model.onnx"), 1)
    model = OpenVinoModel(str(tmp_path / "model.onnx"), 1, (1, 1, *patch))
    assert list(model.compiled) == [(1, 1, *patch)]  # compiled with the loading
    for size in (patch, patch, [48, 64, 48]):
        x = torch.randn(1, 1, *size)
        with torch.no_grad():
            expected = network(x).numpy()
        assert probability_difference(model(x.numpy()), expected) <= PARITY_TOLERANCE
    assert sorted(model.compiled) == [(1, 1, 40, 56, 40), (1, 1, 48, 64, 48)]
