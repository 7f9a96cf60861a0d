"""The runtimes that run an exported `model.onnx` on the CPU: ONNX Runtime and OpenVINO.

`load(path, runtime, threads)` returns the network as a function from a float32 NumPy batch
(batch, channels, spatial...) to its logits; `predict --onnx` wraps it in a module for nnU-Net's
predictor. ONNX Runtime is the default (`export` checks its parity with torch); OpenVINO is the
faster one for the depthwise-heavy networks on a CPU (docs/deployment.md, per patch and per case).
"""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Callable, Optional

from nnunet_lightseg.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

RUNTIMES = ("onnxruntime", "openvino")
INPUT = "image"  # the input name `export` gives the network (its output is "logits")


def _threads(threads: Optional[int]) -> int:
    import torch  # here, not at the top: the CLI's parser reads RUNTIMES

    return threads or torch.get_num_threads()


def _import(runtime: str):
    try:
        return __import__(runtime)
    except ImportError:
        extra = "onnx" if runtime == "onnxruntime" else runtime
        raise UsageError(f"{runtime} is not installed: pip install 'nnunet-lightseg[{extra}]'.") from None


def session(path: str, threads: Optional[int] = None):
    """An ONNX Runtime CPU session of `path`, with `threads` intra-op threads (default: torch's).

    Its threads sleep between runs instead of spinning (ONNX Runtime's default): spinning threads
    took the cores from torch's work between the calls (nnU-Net's pre- and post-processing, or torch
    timed beside it), which ran 2-2.5x slower on 2 cores (docs/deployment.md).
    """
    onnxruntime = _import("onnxruntime")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = _threads(threads)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 4  # fatal only: the export check expects some sizes to fail
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class OpenVinoModel:
    """`path` compiled by OpenVINO for the CPU, in float32, once per input shape it is called with.

    Compiled for one static shape, OpenVINO plans its kernels for it; nnU-Net's sliding window feeds
    every tile at the patch size, so a prediction compiles once. Float32 is asked for explicitly:
    on CPUs with bfloat16 units OpenVINO would otherwise compute in bfloat16, far from torch's
    logits.
    """

    def __init__(self, path: str, threads: Optional[int] = None, input_shape: Optional[tuple[int, ...]] = None):
        self.openvino = _import("openvino")
        self.path, self.threads = path, _threads(threads)
        self.compiled: dict[tuple[int, ...], object] = {}
        if input_shape is not None:  # compiled now, with the loading, not in the first call
            self.compiled[tuple(input_shape)] = self._compile(tuple(input_shape))

    def _compile(self, shape: tuple[int, ...]):
        core = self.openvino.Core()
        model = core.read_model(self.path)
        model.reshape({INPUT: list(shape)})
        return core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": self.threads,
                                                 "INFERENCE_PRECISION_HINT": "f32"})

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape not in self.compiled:
            self.compiled[x.shape] = self._compile(x.shape)
        compiled = self.compiled[x.shape]
        return compiled([x])[compiled.output(0)]


def load(path: str, runtime: str = "onnxruntime", threads: Optional[int] = None,
         input_shape: Optional[tuple[int, ...]] = None) -> Callable[[np.ndarray], np.ndarray]:
    """The network in `path` as a function of its input batch, run by `runtime` (one of RUNTIMES);
    `input_shape`, the shape it will mostly be called with (OpenVINO compiles for it at once)."""
    if runtime == "openvino":
        return OpenVinoModel(path, threads, input_shape)
    if runtime != "onnxruntime":
        raise UsageError(f"--runtime {runtime}: not one of {', '.join(RUNTIMES)}.")
    onnx_session = session(path, threads)
    return lambda x: onnx_session.run(None, {INPUT: x})[0]


def installed(runtime: str) -> bool:
    """Whether `runtime` (one of RUNTIMES) can be imported here, without importing it."""
    return importlib.util.find_spec(runtime) is not None


def version(runtime: str) -> str:
    return _import(runtime).__version__
