"""CPU inference fast path: an optimised copy of a network, used in eval mode with gradients off.

A network that subclasses `FastInferenceModule` keeps its ordinary graph for training. When it is
called in eval mode, with gradients disabled (nnU-Net's predictor runs under
`torch.inference_mode`), on a float32 CPU input and outside autocast, the call runs a cached copy
instead. The copy computes the same function, rewritten for speed:

- batch norm in eval mode (an affine map of running statistics) folded into the preceding conv;
- the activation after a conv fused into the oneDNN conv kernel (`mkldnn._convolution_pointwise`),
  which also keeps grouped and depthwise convs off torch's generic `slow_conv3d` path;
- a 1x1 conv as a matrix product over the channels-last view; a 1x1 depthwise conv as a
  per-channel scale and shift;
- weights and activations in the network's `inference_memory_format` (channels-last by default),
  where the oneDNN kernels avoid layout copies;
- whatever the network adds in `prepare_inference_copy` (e.g. a channel shuffle folded into weights).

The copy lives outside the module tree: state_dict keys, parameters and checkpoints are unchanged.
It is a deep copy, forward hooks included, so a hook installed on the network before its first
inference call (the trainers' input-channel check) runs on the fast path too.
It is invalidated when any parameter or buffer changes (storage or version counter), on
`load_state_dict` and on `train()`, and rebuilt unless the values prove unchanged (nnU-Net's
predictor reloads the same weights before every case); toggling `deep_supervision` rebuilds it. Set
NNUNET_LIGHTSEG_FAST_INFERENCE=0 to run the plain graph (docs/performance.md).
"""
from __future__ import annotations

import copy
import os
import weakref
from contextlib import contextmanager
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

ENVIRONMENT_VARIABLE = "NNUNET_LIGHTSEG_FAST_INFERENCE"
_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()
_forced_off = 0


def enabled() -> bool:
    """False when NNUNET_LIGHTSEG_FAST_INFERENCE is 0/false/no/off, or inside `plain_path()`."""
    setting = os.environ.get(ENVIRONMENT_VARIABLE, "1").strip().lower()
    return _forced_off == 0 and setting not in ("0", "false", "no", "off")


@contextmanager
def plain_path():
    """Run networks on their plain graph inside this block (e.g. to count MACs or compare outputs)."""
    global _forced_off
    _forced_off += 1
    try:
        yield
    finally:
        _forced_off -= 1


# oneDNN post-op names for the activations it can fuse into a conv: (attr, scalars, algorithm).
def _onednn_activation(module: nn.Module) -> Optional[tuple]:
    if type(module) is nn.ReLU:
        return "relu", [], ""
    if type(module) in (nn.ReLU6, nn.Hardtanh):
        return "hardtanh", [float(module.min_val), float(module.max_val)], ""
    if type(module) is nn.Sigmoid:
        return "sigmoid", [], ""
    if type(module) is nn.SiLU:
        return "swish", [], ""
    if type(module) is nn.GELU:
        return "gelu", [], module.approximate
    if type(module) is nn.LeakyReLU:
        return "leaky_relu", [float(module.negative_slope)], ""
    return None


class FastConv(nn.Module):
    """conv (bias included) followed by an optional activation, run by the fastest CPU kernel.

    1x1 dense, stride 1: a matrix product (W @ x channels-first, x @ W^T channels-last). 1x1
    depthwise, stride 1: x * w + b per channel. Anything else: oneDNN's conv with the activation
    as a post-op. Weights are copies (buffers, not parameters).
    """

    def __init__(self, conv: nn.Module, activation: Optional[nn.Module] = None):
        super().__init__()
        weight = conv.weight.detach().clone()
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(weight.shape[0])
        self.dim = weight.ndim - 2
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        unit = all(k == 1 for k in weight.shape[2:]) and all(s == 1 for s in self.stride) and not any(self.padding)
        depthwise = self.groups == conv.in_channels == conv.out_channels
        self.kind = "matmul" if unit and self.groups == 1 else "scale" if unit and depthwise else "onednn"
        if self.kind == "matmul":
            weight = weight.flatten(1)
        elif self.kind == "scale":
            weight = weight.reshape(1, -1, *(1,) * self.dim)
            bias = bias.reshape(weight.shape)
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        fused = _onednn_activation(activation) if activation is not None and self.kind == "onednn" else None
        self.post_op = fused or ("none", [], "")
        self.activation = None if fused else activation

    def add_to(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out += conv(x), in place where out is channels-last (a matrix product accumulated into it)."""
        if self.kind != "matmul" or self.activation is not None or not _is_channels_last(out):
            return out.add_(self(x))
        rows = _rows(out)
        rows.addmm_(_rows(x), self.weight.t())
        if self.bias.any():
            rows.add_(self.bias)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "matmul" and not _is_channels_last(x):  # channels first: W @ x per sample
            y = torch.matmul(self.weight, x.flatten(2)).add_(self.bias[:, None]).unflatten(2, x.shape[2:])
        elif self.kind == "matmul":  # channels last: x @ W^T over the voxels
            y = _from_rows(F.linear(_rows(x), self.weight, self.bias), x.shape)
        elif self.kind == "scale":
            y = torch.addcmul(self.bias, x, self.weight)
        else:
            attr, scalars, algorithm = self.post_op
            y = torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, self.padding, self.stride,
                                                        self.dilation, self.groups, attr, scalars, algorithm)
        return self.activation(y) if self.activation is not None else y


def _is_channels_last(x: torch.Tensor) -> bool:
    memory_format = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.ndim)
    return memory_format is not None and x.is_contiguous(memory_format=memory_format)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *S) -> (N * prod(S), C): a view when x is channels-last."""
    return x.permute(0, *range(2, x.ndim), 1).reshape(-1, x.shape[1])


def _from_rows(rows: torch.Tensor, shape) -> torch.Tensor:
    """The inverse of `_rows`: a channels-last (N, C, *S) view of (N * prod(S), C)."""
    n, spatial = shape[0], tuple(shape[2:])
    return rows.reshape(n, *spatial, rows.shape[-1]).permute(0, len(spatial) + 1, *range(1, len(spatial) + 1))


def fold_batch_norm(conv: nn.Module, norm: nn.Module) -> None:
    """conv <- norm(conv(.)) in place, for a batch norm in eval mode (running statistics)."""
    scale = norm.weight.detach() if norm.affine else torch.ones_like(norm.running_var)
    scale = scale * torch.rsqrt(norm.running_var + norm.eps)
    shift = norm.bias.detach() if norm.affine else torch.zeros_like(norm.running_mean)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(shift)
    conv.weight = nn.Parameter(conv.weight.detach() * scale.reshape(-1, *(1,) * (conv.weight.ndim - 1)),
                               requires_grad=False)
    conv.bias = nn.Parameter((bias - norm.running_mean) * scale + shift, requires_grad=False)


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _rewritable(conv: nn.Module) -> bool:
    return type(conv) in _CONVS and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def rewrite_convs(module: nn.Module) -> None:
    """Fold batch norms into convs and replace convs by `FastConv`, recursively and in place.

    Inside an `nn.Sequential`, a conv followed by a batch norm (running statistics) absorbs it, and
    a fusable activation after that joins the conv; the absorbed entries become `nn.Identity`, so
    indices stay. Every other plain conv becomes a `FastConv` on its own.
    """
    for name, child in list(module.named_children()):
        if _rewritable(child):
            setattr(module, name, FastConv(child))
        else:
            _rewrite_inside(child)


def _rewrite_sequence(sequence: nn.Sequential) -> None:
    modules, names = sequence._modules, list(sequence._modules)
    i = 0
    while i < len(names):
        child = modules[names[i]]
        if not _rewritable(child):
            _rewrite_inside(child)
            i += 1
            continue
        j = i + 1
        if j < len(names) and type(modules[names[j]]) in _BATCH_NORMS and modules[names[j]].track_running_stats:
            fold_batch_norm(child, modules[names[j]])
            modules[names[j]] = nn.Identity()
            j += 1
        activation = modules[names[j]] if j < len(names) else None
        if activation is not None and _onednn_activation(activation) is not None:
            modules[names[i]], modules[names[j]] = FastConv(child, activation), nn.Identity()
            j += 1
        else:
            modules[names[i]] = FastConv(child)
        i = j


def _rewrite_inside(module: nn.Module) -> None:
    if isinstance(module, nn.Sequential):
        _rewrite_sequence(module)
    else:
        rewrite_convs(module)


def _to_memory_format(value, memory_format):
    if torch.is_tensor(value) and value.ndim == {torch.channels_last: 4, torch.channels_last_3d: 5}[memory_format]:
        return value.contiguous(memory_format=memory_format)
    return value


def _contiguous(value):
    if torch.is_tensor(value):
        return value.contiguous()
    if isinstance(value, (list, tuple)):
        return type(value)(_contiguous(v) for v in value)
    return value


def cached_copy(network: nn.Module) -> Optional[nn.Module]:
    """The inference copy `network` would run now without rebuilding, or None."""
    entry = _CACHE.get(network)
    return entry["copy"] if entry is not None and entry["key"] is not None else None


def _invalidate(module: nn.Module, *_) -> None:
    """Mark the copy stale; the next call rebuilds it unless the weights turn out unchanged."""
    entry = _CACHE.get(module)
    if entry is not None:
        entry["key"] = None


def _flat_state(module: nn.Module) -> torch.Tensor:
    tensors = [t.detach().reshape(-1).float() for t in (*module.parameters(), *module.buffers())]
    return torch.cat(tensors) if tensors else torch.zeros(0)


STEPS = ("network_specific", "rewrite_convs", "memory_format")


def build_inference_copy(network: nn.Module, ndim: int, steps=STEPS) -> nn.Module:
    """An eval-mode copy of `network` with the rewrites named in `steps` applied, for inputs of `ndim` axes.

    "rewrite_convs": `rewrite_convs`; "network_specific": the network's `prepare_inference_copy` (after
    the conv rewrites, which it needs);
    "memory_format": weights in the network's `inference_memory_format`. The copy's
    `memory_format` attribute is the layout its inputs should have (None: leave them).
    """
    if "network_specific" in steps and "rewrite_convs" not in steps:
        raise ValueError("the network-specific rewrites build on the conv rewrites: add 'rewrite_convs'")
    with torch.inference_mode(False), torch.no_grad():
        fast = copy.deepcopy(network).eval()
        fast._is_inference_copy = True
        if "rewrite_convs" in steps:
            rewrite_convs(fast)
        if "network_specific" in steps:
            fast.prepare_inference_copy()
        fast.requires_grad_(False)
        fast.memory_format = None
        if "memory_format" in steps and network.inference_memory_format == "channels_last":
            fast.memory_format = channels_last_weights(fast, ndim)
    return fast


def channels_last_format(ndim: int) -> torch.memory_format:
    """The channels-last memory format of `ndim`-axis tensors (4: 2D batches, 5: 3D batches)."""
    return torch.channels_last_3d if ndim == 5 else torch.channels_last


def channels_last_weights(module: nn.Module, ndim: int):
    """Lay the module's `ndim`-axis parameters and buffers (conv weights) out channels-last, in place.

    Parameters stay the same objects (optimisers keep them); returns the memory format used.
    """
    memory_format = channels_last_format(ndim)
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.ndim == ndim:
                tensor.data = tensor.data.contiguous(memory_format=memory_format)
    return memory_format


def _channels_last_input(module: nn.Module, args: tuple):
    """Forward pre-hook: in training, hand the network its input batch channels-last."""
    if module.training and args and isinstance(args[0], torch.Tensor) and args[0].ndim in (4, 5):
        return (args[0].contiguous(memory_format=channels_last_format(args[0].ndim)), *args[1:])
    return None


def apply_training_memory_format(network: nn.Module, ndim: int) -> bool:
    """For CPU training: lay the conv weights out channels-last if the network's `training_memory_format`
    asks for it, and its input batches too if `training_input_memory_format` does (both measured per
    network, docs/performance.md; a layout only). Returns whether the weights were changed."""
    if getattr(network, "training_memory_format", None) != "channels_last":
        return False
    channels_last_weights(network, ndim)
    if getattr(network, "training_input_memory_format", None) == "channels_last":
        network.register_forward_pre_hook(_channels_last_input)
    return True


def run_inference_copy(fast: nn.Module, *args, **kwargs):
    """Call an inference copy: inputs in its memory format, outputs back in the default one."""
    if fast.memory_format is not None:
        args = tuple(_to_memory_format(a, fast.memory_format) for a in args)
    return _contiguous(fast(*args, **kwargs))


class FastInferenceModule(nn.Module):
    """Base class of the networks: adds the cached inference fast path described in this module.

    Subclasses may set `inference_memory_format`, `training_memory_format` (weights) and
    `training_input_memory_format` (input batches) to "channels_last" or "contiguous", whichever
    measures faster (docs/performance.md), and override
    `prepare_inference_copy` for network-specific rewrites of the copy.
    """

    inference_memory_format = "channels_last"
    training_memory_format = "channels_last"  # on CPU (trainers/base.py); same maths, a layout only
    training_input_memory_format = "channels_last"  # the input batch too, in CPU training

    def __init__(self):
        super().__init__()
        self.register_load_state_dict_post_hook(_invalidate)

    def prepare_inference_copy(self) -> None:
        """Network-specific rewrites of the inference copy (called on the copy, in place, after
        `rewrite_convs`, so the convs it finds are `FastConv`s)."""

    def train(self, mode: bool = True):
        if mode:
            _CACHE.pop(self, None)
        return super().train(mode)

    def __call__(self, *args, **kwargs):
        fast = self._inference_copy(args)
        if fast is None:
            return super().__call__(*args, **kwargs)
        return run_inference_copy(fast, *args, **kwargs)

    def _inference_copy(self, args) -> Optional[nn.Module]:
        if self.training or torch.is_grad_enabled() or getattr(self, "_is_inference_copy", False) or not enabled():
            return None
        x = args[0] if args else None
        if not torch.is_tensor(x) or x.device.type != "cpu" or x.dtype != torch.float32 \
                or torch.is_autocast_enabled("cpu") or x.ndim not in (4, 5):
            return None
        # Tensors and `deep_supervision`, the one attribute the networks' contract lets callers toggle.
        key = (x.ndim, getattr(self, "deep_supervision", None),
               tuple((t.data_ptr(), t._version) for t in (*self.parameters(), *self.buffers())))
        entry = _CACHE.get(self)
        if entry is not None and entry["key"] == key:
            return entry["copy"]
        # nnU-Net's predictor reloads the same weights before every case: keep the copy if they are unchanged.
        state = _flat_state(self)
        if entry is None or entry["config"] != key[:2] or not torch.equal(entry["state"], state):
            entry = {"copy": build_inference_copy(self, x.ndim), "state": state, "config": key[:2]}
            _CACHE[self] = entry
        entry["key"] = key
        return entry["copy"]
