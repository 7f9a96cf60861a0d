"""`onnx_export`: which axes an export keeps dynamic, and how its ONNX Runtime sessions run (issue 14)."""

import pytest
import torch

from nnunet_lightseg import registry

pytest.importorskip("onnxruntime", reason="pip install 'nnunet-lightseg[onnx]'")
onnx = pytest.importorskip("onnx")

from nnunet_lightseg.onnx_export import PARITY_TOLERANCE, export_network, session  # noqa: E402


@pytest.mark.parametrize("name, dynamic", [("UltraLightUNet", True), ("VeloxSeg", False)])
def test_an_export_fixes_only_the_axes_its_trace_bakes_in(name, dynamic, tmp_path):
    # VeloxSeg's window attention bakes the patch size and the batch into the trace: it exports with
    # both fixed (batch 1, what nnU-Net's sliding window feeds), instead of being refused
    patch = [40, 56, 40]
    torch.manual_seed(0)
    network = registry.get(name).create(registry.Plan(1, 3, patch, [(2, 2, 2)] * 3)).eval()
    parity = export_network(network, 1, patch, str(tmp_path / "model.onnx"), 1)
    assert parity["dynamic_spatial_axes"] == parity["dynamic_batch"] == dynamic
    assert parity["max_relative_difference_at_patch"] <= PARITY_TOLERANCE
    if dynamic:
        assert parity["max_relative_difference_batch_2"] <= PARITY_TOLERANCE
    else:
        assert parity["max_relative_difference_batch_2"] is None
        assert session(str(tmp_path / "model.onnx"), 1).get_inputs()[0].shape == [1, 1, *patch]


def test_onnx_runtime_sessions_do_not_spin_between_runs(tmp_path):
    # spinning intra-op threads took the 2 cores from torch's work between ONNX Runtime calls
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "identity",
                              [value("image", TensorProto.FLOAT, [1])], [value("out", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "identity.onnx"))
    options = session(str(tmp_path / "identity.onnx"), 1).get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
