"""CPU inference engine: nnU-Net's prediction runs an optimised copy of our networks (issue 14).

`enable(network)` makes a network, when it is called

- in eval mode, with gradients disabled (nnU-Net's predictor predicts under `torch.inference_mode`),
- on a float32 CPU tensor, outside autocast,

run a cached copy instead of its own graph. `LightSegTrainer.build_network_architecture` enables
it, and nnU-Net's predictor builds its network with that function, so the stock `nnUNetv2_predict`
and the validation of `nnUNetv2_train` use it with no extra step. The networks themselves
(`architectures/`) stay plain modules that know nothing of it. The copy computes the same function:

- batch norm in eval mode (an affine map of running statistics) folded into the preceding conv;
- the activation after a conv fused into the oneDNN conv kernel (`mkldnn._convolution_pointwise`),
  which also keeps grouped and depthwise convs off torch's generic `slow_conv3d` path;
- a 1x1 conv on oneDNN too where the input is channels-last and has at least ONEDNN_MIN_VOXELS
  voxels, else as a matrix product (oneDNN's fixed cost per call dominates small inputs); a 1x1
  depthwise conv as a per-channel scale and shift; a dense conv whose few output channels leave
  oneDNN's output blocks mostly empty with its last axis' taps as output channels, the shifted
  partial sums added after (`_splits_taps`, `_tap_split`);
- weights and activations channels-last, where the oneDNN kernels avoid layout copies (a
  one-channel input given channels-last strides explicitly, see `memory_layout.to_channels_last`);
- the per-block rules of `BLOCK_RULES` (UltraLightUNet's MKIR: its channel shuffle folded into the
  projection's weights; LightMedSeg's skip router and decoder stage: linear maps precomposed;
  DALight-3D's skip fusion: on the channels-last voxel rows).

Nothing is added to the network's module tree: `state_dict`, parameters and checkpoints are
unchanged. The dispatch is the network's own `forward` (an instance attribute), so hooks on the
network itself run as always (the trainers' input-channel check); hooks on its submodules run on
the plain graph only. Copies are cached per network, keyed by a fingerprint of the weights and
bounded to MAX_COPIES: nnU-Net's predictor loads each fold's weights into the same network before
every case, so with five folds each fold's copy is built once per run, not once per case. The first
call of a copy also keeps freed memory mapped for the rest of the process (`allocator`), which
halves the time of the small networks on large patches. Without oneDNN's fused conv op the engine
logs one line and the plain graph runs. Set
NNUNET_LIGHTSEG_FAST_INFERENCE=0 to run the plain graph (docs/performance.md).
"""
from __future__ import annotations

import copy
import hashlib
import logging
import math
import types
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from functools import lru_cache
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_lightseg.allocator import keep_freed_memory
from nnunet_lightseg.architectures.dalight3d import DALight3D, SkipFusion
from nnunet_lightseg.architectures.lightmedseg import DecoderStage, LightMedSeg, SkipRouter, position_grid, resample
from nnunet_lightseg.architectures.ultralightunet import MKIR, UltraLightUNet, channel_shuffle
from nnunet_lightseg.architectures.veloxseg import VeloxSeg
from nnunet_lightseg.memory_layout import channels_last_weights, to_channels_last
from nnunet_lightseg.nnunet_env import switched_off

ENVIRONMENT_VARIABLE = "NNUNET_LIGHTSEG_FAST_INFERENCE"
# The networks the engine serves: those whose copies tests/test_cpu_inference.py checks against
# their plain graph. Others (the baselines) run as they are.
NETWORKS = (UltraLightUNet, VeloxSeg, LightMedSeg, DALight3D)
MAX_COPIES = 5  # nnUNetv2_predict's default is five folds, each with its own weights
# A 1x1 conv runs on oneDNN from this many voxels per sample (channels-last): below it oneDNN's cost
# per call (30-40 us on the 2-core machine) exceeds a matrix product's; above it oneDNN is 2-5x
# faster (docs/performance.md, "1x1 convolutions").
ONEDNN_MIN_VOXELS = 4096
# oneDNN's direct conv kernels compute output channels in blocks of the vector width (16 float32
# lanes with AVX-512, else 8): a conv with fewer output channels costs as much as one with a full
# block (docs/performance.md, "Narrow convolutions").
ONEDNN_OUTPUT_BLOCK = 16 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 8
SPLIT_MIN_SAVED_TAPS = 8 * (27 - 9)  # per output block of the split: see _splits_taps
_ENGINES: "weakref.WeakKeyDictionary[nn.Module, _CopyCache]" = weakref.WeakKeyDictionary()
_forced_off = 0
_log = logging.getLogger(__name__)


def enabled() -> bool:
    """False when NNUNET_LIGHTSEG_FAST_INFERENCE is 0/false/no/off, inside `plain_path()`, or
    without oneDNN's fused conv op (`onednn_available`)."""
    return _forced_off == 0 and not switched_off(ENVIRONMENT_VARIABLE) and onednn_available()


_ONEDNN_OPS = ("_convolution_pointwise", "_convolution_transpose_pointwise")


@lru_cache(maxsize=None)
def onednn_available() -> bool:
    """Whether this torch has oneDNN and its private fused conv ops; says once why not, if not."""
    try:
        available = torch.backends.mkldnn.is_available() and all(
            callable(getattr(torch.ops.mkldnn, op, None)) for op in _ONEDNN_OPS)
    except (AttributeError, RuntimeError):
        available = False
    if not available:
        _log.warning("nnunet-lightseg: this torch build lacks oneDNN's fused convolutions "
                     f"(torch.ops.mkldnn.{' and .'.join(_ONEDNN_OPS)}); CPU prediction runs the plain networks.")
    return available


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

    1x1 depthwise, stride 1: x * w + b per channel. 1x1 dense, stride 1: oneDNN's conv on a
    channels-last input of at least ONEDNN_MIN_VOXELS voxels per sample, else a matrix product (W @ x
    channels-first, x @ W^T over the channels-last rows). A dense stride-1 conv whose output
    channels fill oneDNN's output blocks poorly (`_splits_taps`): oneDNN's conv with the last axis'
    taps as output channels, then the shifted partial sums added ("split"). Anything else: oneDNN's
    conv. oneDNN's convs take the activation as a post-op (after the partial sums: separately).
    Weights are copies (buffers, not parameters).
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
        self.kind = "scale" if unit and depthwise else "unit" if unit and self.groups == 1 else "onednn"
        self.out_channels, self.taps = weight.shape[0], weight.shape[-1]
        if self.kind == "onednn" and _splits_taps(weight, self.groups, self.stride, self.padding, self.dilation):
            self.kind = "split"
            weight, bias = _tap_split(weight, bias)
            self.padding[-1] = 0
        if self.kind == "scale":
            weight = weight.reshape(1, -1, *(1,) * self.dim)
            bias = bias.reshape(weight.shape)
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        fusable = _onednn_activation(activation) if activation is not None and self.kind in ("unit", "onednn") else None
        self.post_op = fusable or ("none", [], "")
        self.nonlinearity = activation  # the activation after the conv, fused into oneDNN's kernel or not
        self.input_format: Optional[torch.memory_format] = None  # channels-last: set by build_inference_copy

    @property
    def fused(self) -> bool:
        """Whether oneDNN's kernel applies the activation (a post-op)."""
        return self.post_op[0] != "none"

    @property
    def matrix(self) -> torch.Tensor:
        """A 1x1 conv's weight as an (out, in) matrix, for rules that precompose linear maps."""
        return self.weight.flatten(1)

    def _on_onednn(self, x: torch.Tensor) -> bool:
        return self.kind in ("onednn", "split") or (self.kind == "unit" and _is_channels_last(x)
                                         and math.prod(x.shape[2:]) >= ONEDNN_MIN_VOXELS)

    def add_to(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out += conv(x), in place where out is channels-last (oneDNN's add post-op, or a matrix
        product accumulated into out's rows)."""
        if self.nonlinearity is not None or self.kind in ("scale", "split") or not _is_channels_last(out):
            return out.add_(self(x))
        if self._on_onednn(x) and _is_channels_last(x):
            return torch.ops.mkldnn._convolution_pointwise_.binary(
                out, x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
                "add", None, None, [], None)
        if self.kind != "unit":
            return out.add_(self(x))
        rows = _rows(out)
        rows.addmm_(_rows(x), self.matrix.t())
        if self.bias.any():
            rows.add_(self.bias)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "scale":
            y = torch.addcmul(self.bias, x, self.weight)
        elif self._on_onednn(x):
            if self.input_format is not None and x.shape[1] == 1 and x.stride(1) != 1:
                x = to_channels_last(x, self.input_format)  # else oneDNN reads it, and writes y, channels-first
            attr, scalars, algorithm = self.post_op
            y = torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, self.padding, self.stride,
                                                        self.dilation, self.groups, attr, scalars, algorithm)
            if self.fused:
                return y
            if self.kind == "split":
                y = _sum_taps(y, self.out_channels, self.taps)
        elif _is_channels_last(x):  # x @ W^T over the voxels
            y = _from_rows(F.linear(_rows(x), self.matrix, self.bias), x.shape)
        else:  # channels first: W @ x per sample
            y = torch.matmul(self.matrix, x.flatten(2)).add_(self.bias[:, None]).unflatten(2, x.shape[2:])
        return self.nonlinearity(y) if self.nonlinearity is not None else y


def _splits_taps(weight: torch.Tensor, groups: int, stride, padding, dilation) -> bool:
    """Whether a dense stride-1 conv with a 'same' kernel of k > 1 taps along the last axis computes
    faster with those taps as output channels (`_tap_split`).

    oneDNN then computes ceil(k C / B) output blocks over T / k of the kernel's T taps instead of
    ceil(C / B) blocks over all of them (B = ONEDNN_OUTPUT_BLOCK), but writes k times the output
    and adds it up. Measured (`measure.narrow_convs`, AVX-512), it pays where the block-taps fall
    to two thirds or less (C = 4, k = 3: 1 block over 9 taps instead of 1 over 27; C = 8: 2 over 9;
    C = 24: 5 over 9 instead of 2 over 27 lost, about 0.9x) and the input taps saved, I (T - T / k) for
    I input channels, reach SPLIT_MIN_SAVED_TAPS per output block of the split (with one block:
    8 -> 4 3^3 gains 1.3x, 2 -> 4 loses, 0.9x; with two: 16 -> 8 gains 1.1-1.2x, 8 -> 8 does not)."""
    channels, taps, inputs, total = weight.shape[0], weight.shape[-1], weight.shape[1], math.prod(weight.shape[2:])
    split_blocks, whole_blocks = -(-taps * channels // ONEDNN_OUTPUT_BLOCK), -(-channels // ONEDNN_OUTPUT_BLOCK)
    return (groups == 1 and taps > 1 and taps % 2 == 1 and padding[-1] == taps // 2 and dilation[-1] == 1
            and all(s == 1 for s in stride) and 3 * split_blocks * (total // taps) <= 2 * whole_blocks * total
            and inputs * (total - total // taps) >= SPLIT_MIN_SAVED_TAPS * split_blocks)


def _tap_split(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A (C, I, ..., k) conv as a (k C, I, ..., 1) conv whose channels t C .. (t + 1) C - 1 are tap t's
    partial sums; the bias goes to the centre tap's (`_sum_taps` adds the shifted partial sums)."""
    channels, taps = weight.shape[0], weight.shape[-1]
    split = weight.movedim(-1, 0).reshape(taps * channels, *weight.shape[1:-1], 1).contiguous()
    centre = taps // 2
    split_bias = torch.zeros(taps * channels, dtype=bias.dtype)
    split_bias[centre * channels:(centre + 1) * channels] = bias
    return split, split_bias


def _sum_taps(partial: torch.Tensor, channels: int, taps: int) -> torch.Tensor:
    """y[..., w] = sum_t partial_t[..., w + t - k // 2] (zero outside): the 'same' conv along the last
    axis from the per-tap partial sums of `_tap_split`'s conv."""
    centre = taps // 2
    y = partial[:, centre * channels:(centre + 1) * channels].clone()
    for t in range(taps):
        shift = t - centre
        tap = partial[:, t * channels:(t + 1) * channels]
        if shift > 0:
            y[..., :-shift].add_(tap[..., shift:])
        elif shift < 0:
            y[..., -shift:].add_(tap[..., :shift])
    return y


class FastConvTranspose(nn.Module):
    """A transposed conv (bias included) run by oneDNN's kernel (`mkldnn._convolution_transpose_pointwise`).

    torch runs a strided 3D transposed conv with a kernel larger than its stride (LightMedSeg's
    3^3 upsampling) on its generic `slow_conv_transpose3d`, about twice oneDNN's time on the
    Hippocampus patch (docs/performance.md). Weights are copies (buffers, not parameters).
    """

    def __init__(self, conv: nn.Module):
        super().__init__()
        weight = conv.weight.detach().clone()
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(weight.shape[1] * conv.groups)
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        self.padding, self.output_padding = list(conv.padding), list(conv.output_padding)
        self.stride, self.dilation, self.groups = list(conv.stride), list(conv.dilation), conv.groups

    def forward(self, x: torch.Tensor, shift: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The transposed conv, plus `shift` (one value per output channel) folded into its bias."""
        return torch.ops.mkldnn._convolution_transpose_pointwise(
            x, self.weight, self.bias if shift is None else self.bias + shift, self.padding, self.output_padding,
            self.stride, self.dilation, self.groups, "none", [], "")


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
_TRANSPOSED_CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _rewritable(conv: nn.Module) -> bool:
    return type(conv) in _CONVS and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def _rewritten_alone(module: nn.Module) -> nn.Module:
    """The module's fast form on its own (a conv or transposed conv), or the module with its
    children rewritten."""
    if _rewritable(module):
        return FastConv(module)
    if type(module) in _TRANSPOSED_CONVS and module.padding_mode == "zeros":
        return FastConvTranspose(module)
    _rewrite_inside(module)
    return module


def rewrite_convs(module: nn.Module) -> None:
    """Fold batch norms into convs and replace convs by `FastConv` and transposed convs by
    `FastConvTranspose`, recursively and in place.

    Inside an `nn.Sequential`, a conv followed by a batch norm (running statistics) absorbs it, and
    a fusable activation after that joins the conv; the absorbed entries become `nn.Identity`, so
    indices stay. Every other plain conv becomes a `FastConv` on its own.
    """
    for name, child in list(module.named_children()):
        setattr(module, name, _rewritten_alone(child))


def _rewrite_sequence(sequence: nn.Sequential) -> None:
    modules, names = sequence._modules, list(sequence._modules)
    i = 0
    while i < len(names):
        child = modules[names[i]]
        if not _rewritable(child):
            modules[names[i]] = _rewritten_alone(child)
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


class InferenceMKIR(nn.Module):
    """UltraLightUNet's MKIR (Sec. 3.1, Eq. 1) as the copy runs it, built from an MKIR whose convs
    are already `FastConv`s.

    The same function with fewer passes over memory: the channel shuffle folded into the
    projection's weights (project(shuffle(h)) == project'(h), no layout copy), the MKDC branches
    (conv, BN and ReLU6 fused) summed in place, and the projection accumulated into the shortcut
    conv's output (its bias moved there).
    """

    def __init__(self, mkir: MKIR):
        super().__init__()
        self.expand = mkir.expand
        self.branches = nn.ModuleList(branch[0] for branch in mkir.mkdc.branches)
        self.project, self.shortcut = mkir.project[0], mkir.shortcut
        order = channel_shuffle(torch.arange(self.project.weight.shape[1]).reshape(1, -1, 1),
                                mkir.shuffle_groups).flatten()
        weight = torch.empty_like(self.project.weight)
        weight[:, order] = self.project.weight
        self.project.weight.copy_(weight)
        if isinstance(self.shortcut, FastConv):
            self.shortcut.bias.add_(self.project.bias)
            self.project.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.expand(x)
        mixed = self.branches[0](hidden)
        for branch in self.branches[1:]:
            mixed += branch(hidden)
        if isinstance(self.shortcut, nn.Identity):
            return self.project(mixed).add_(x)
        return self.project.add_to(mixed, self.shortcut(x))


def _unit_conv(matrix: torch.Tensor, bias: torch.Tensor, dim: int) -> FastConv:
    """A `FastConv` computing the 1x1 conv x -> matrix x + bias on `dim`-axis inputs."""
    conv = _CONVS[dim - 1](matrix.shape[1], matrix.shape[0], 1)
    with torch.no_grad():
        conv.weight.copy_(matrix.reshape(conv.weight.shape))
        conv.bias.copy_(bias)
    return FastConv(conv)


class InferenceSkipRouter(nn.Module):
    """LightMedSeg's skip router (Sec. 3.5, Eq. 11-13) as the copy runs it, built from a SkipRouter
    whose convs are already `FastConv`s.

    The same function without the 64-channel projections: trilinear resampling is linear with
    weights that sum to 1, so it commutes with a 1x1 conv (resample(P e + b) = P resample(e) + b),
    and the controller's first layer and each level's output conv are linear too. So each encoder
    map e_i is resampled as it is (8-64 channels, not 64) and goes through precomposed 1x1 convs
    (`FastConv`s, so oneDNN or a matrix product by size): the controller's hidden layer is
    sum_i (W1_i P_i) r_i + (c1 + sum_i W1_i b_i), accumulated in place, and since the softmax
    weights w_i sum to 1, a level's output is sum_i w_i (Wo P_i r_i + Wo b_i + bo).
    """

    def __init__(self, router: SkipRouter):
        super().__init__()
        hidden, self.logits = router.controller[0], router.controller[2]
        dim = hidden.dim
        first = hidden.matrix.split([p.matrix.shape[0] for p in router.project], dim=1)  # W1_i
        hidden_bias = hidden.bias + sum(w @ p.bias for w, p in zip(first, router.project))
        self.hidden = nn.ModuleList(_unit_conv(w @ p.matrix, hidden_bias if i == 0 else torch.zeros_like(hidden_bias),
                                               dim) for i, (w, p) in enumerate(zip(first, router.project)))
        self.hidden_activation = hidden.nonlinearity  # SiLU
        self.levels = nn.ModuleList(nn.ModuleList(_unit_conv(out.matrix @ p.matrix, out.matrix @ p.bias + out.bias, dim)
                                                  for p in router.project) for out in router.out)

    def forward(self, skips, sizes) -> list[torch.Tensor]:
        routed = []
        for convs, size in zip(self.levels, sizes):
            aligned = [resample(skip, size) for skip in skips]
            hidden = self.hidden[0](aligned[0])
            for conv, x in zip(self.hidden[1:], aligned[1:]):
                conv.add_to(x, hidden)
            mix = torch.softmax(self.logits(self.hidden_activation(hidden)), dim=1)
            fused = convs[0](aligned[0]).mul_(mix[:, :1])
            for i in range(1, len(aligned)):
                fused.addcmul_(mix[:, i:i + 1], convs[i](aligned[i]))
            routed.append(fused)
        return routed


class InferenceDecoderStage(nn.Module):
    """LightMedSeg's decoder stage (Sec. 3.6, Eq. 14-21) as the copy runs it, built from a
    DecoderStage whose convs are already `FastConv`s.

    The same function in fewer passes over full-resolution memory: the position bias (Eq. 15, a
    1x1 conv of the K offset maps grid - s_k) is linear in the one-channel grid, u * grid + v with
    u = sum_k W_k and v = b - W s (s_k the anchors' summed coordinates): v joins the transposed
    conv's bias (one sample; a batch adds it per sample) and u * grid, the same for every patch of a
    size, is kept for the last size and added in place; the three branches' gated sum (Eq. 18)
    accumulates in place.
    """

    def __init__(self, stage: DecoderStage):
        super().__init__()
        self.up, self.fuse, self.gate, self.branches, self.se = stage.up, stage.fuse, stage.gate, stage.branches, stage.se
        self.ghost_branch_on_concat = stage.ghost_branch_on_concat
        self.position = stage.position
        if self.position is not None:
            self.grid_scale = self.position.matrix.sum(dim=1)  # u (C)
        self._grid_term: Optional[torch.Tensor] = None  # u * grid at the last size

    def grid_term(self, like: torch.Tensor) -> torch.Tensor:
        """u * grid, (1, C, *size), in the layout of `like`."""
        term = self._grid_term
        if term is None or term.shape[2:] != like.shape[2:] or term.stride() != like[:1].stride():
            grid = position_grid(like.shape[2:], like)[None, None]
            term = torch.empty_like(like[:1]).copy_(self.grid_scale[None, :, None, None, None] * grid)
            self._grid_term = term
        return term

    def forward(self, x: torch.Tensor, skip: torch.Tensor, anchors) -> torch.Tensor:
        if self.position is None:
            up = self.up(x)
        else:
            shift = F.linear(-anchors.sum(dim=-1), self.position.matrix, self.position.bias)  # v (B x C)
            up = self.up(x, shift[0]) if x.shape[0] == 1 else self.up(x).add_(shift[:, :, None, None, None])
            up.add_(self.grid_term(up))
        concat = torch.cat([up, skip], dim=1)
        fused = self.fuse(concat)
        weights = torch.softmax(self.gate(fused), dim=1)
        inputs = (fused, concat if self.ghost_branch_on_concat else fused, fused)
        gated = self.branches[0](inputs[0]).mul_(weights[:, :1])
        for p in (1, 2):
            gated.addcmul_(weights[:, p:p + 1], self.branches[p](inputs[p]))
        return self.se(gated)


class InferenceSkipFusion(nn.Module):
    """DALight-3D's SSFB skip weighting (Methodology, item 4) as the copy runs it, built from a
    SkipFusion whose convs are already `FastConv`s.

    The same function on the channels-last voxel rows (N x C per sample): the softmaxes are taken
    over the rank and the voxel axes of (B, r, N) views, as torch computes a softmax over a short
    contiguous axis (the rank of the rows) about 13x slower (4.6 against 0.35 ms at 8 x 89,600); the
    gated skip is written once and the attention (its mix weight folded into the r x C context)
    accumulated onto it by one batched matrix product; the output is channels-last, where the plain
    graph's was channels-first, so the merge conv after the concatenation reads channels-last.
    """

    def __init__(self, fusion: SkipFusion):
        super().__init__()
        self.query, self.key, self.gate = fusion.query, fusion.key, fusion.gate
        self.mix = float(torch.sigmoid(fusion.alpha))

    def forward(self, decoder: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        batch, channels, spatial = skip.shape[0], skip.shape[1], tuple(range(2, skip.ndim))
        values = _rows(skip).view(batch, -1, channels)  # (B, N, C)
        queries = _rows(self.query(decoder)).view(batch, -1, self.query.out_channels)  # (B, N, r)
        keys = _rows(self.key(skip)).view(batch, -1, self.key.out_channels)
        q = torch.softmax(queries.transpose(1, 2), dim=1)  # over the rank, (B, r, N)
        k = torch.softmax(keys.transpose(1, 2), dim=2)  # over the voxels
        context = torch.bmm(k, values).mul_(self.mix)  # (B, r, C)
        pooled = torch.cat([decoder.mean(dim=spatial), skip.mean(dim=spatial)], dim=1)
        gate = torch.sigmoid(self.gate(pooled)).mul_(1 - self.mix)  # (B, C)
        fused = (values * gate[:, None, :]).baddbmm_(q.transpose(1, 2), context)
        return _from_rows(fused.view(-1, channels), skip.shape)


# Block type -> its inference form, applied to the copy after `rewrite_convs` (the forms build on FastConv).
BLOCK_RULES = {MKIR: InferenceMKIR, SkipRouter: InferenceSkipRouter, DecoderStage: InferenceDecoderStage,
               SkipFusion: InferenceSkipFusion}


def apply_block_rules(module: nn.Module) -> None:
    """Replace every block named in BLOCK_RULES by its inference form, recursively and in place."""
    for name, child in list(module.named_children()):
        rule = BLOCK_RULES.get(type(child))
        if rule is not None:
            setattr(module, name, rule(child))
        else:
            apply_block_rules(child)


def _to_memory_format(value, memory_format):
    if torch.is_tensor(value) and value.ndim == {torch.channels_last: 4, torch.channels_last_3d: 5}[memory_format]:
        return to_channels_last(value, memory_format)
    return value


def _contiguous(value):
    if torch.is_tensor(value):
        return value.contiguous()
    if isinstance(value, (list, tuple)):
        return type(value)(_contiguous(v) for v in value)
    return value


STEPS = ("block_rules", "rewrite_convs", "memory_format")


def build_inference_copy(network: nn.Module, ndim: int, steps=STEPS) -> nn.Module:
    """An eval-mode copy of `network` with the rewrites named in `steps` applied, for inputs of `ndim` axes.

    "rewrite_convs": `rewrite_convs`; "block_rules": `apply_block_rules` (after the conv rewrites,
    which they need); "memory_format": weights channels-last. The copy's `memory_format` attribute
    is the layout its inputs should have (None: leave them). The copy carries no hooks and no
    dispatch of its own.
    """
    if "block_rules" in steps and "rewrite_convs" not in steps:
        raise ValueError("the block rules build on the conv rewrites: add 'rewrite_convs'")
    with torch.inference_mode(False), torch.no_grad():
        fast = copy.deepcopy(network).eval()
        fast.__dict__.pop("forward", None)  # the copied dispatch: the copy runs its class's forward
        for module in fast.modules():
            module._forward_pre_hooks.clear()
            module._forward_hooks.clear()
        if "rewrite_convs" in steps:
            rewrite_convs(fast)
        if "block_rules" in steps:
            apply_block_rules(fast)
        fast.requires_grad_(False)
        fast.memory_format = channels_last_weights(fast, ndim) if "memory_format" in steps else None
        for conv in fast.modules():
            if isinstance(conv, FastConv):
                conv.input_format = fast.memory_format
    return fast


def run_inference_copy(fast: nn.Module, *args, **kwargs):
    """Call an inference copy: inputs in its memory format, outputs back in the default one."""
    if fast.memory_format is not None:
        args = tuple(_to_memory_format(a, fast.memory_format) for a in args)
    return _contiguous(fast(*args, **kwargs))


def fingerprint(network: nn.Module) -> str:
    """A digest of every parameter and buffer value of `network` (in module order)."""
    digest = hashlib.blake2b(digest_size=16)
    with torch.no_grad():
        for tensor in (*network.parameters(), *network.buffers()):
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class _CopyCache:
    """One network's inference copies, keyed by (input axes, deep_supervision, weight fingerprint),
    the least recently used dropped beyond MAX_COPIES. `builds` counts the copies built."""

    def __init__(self):
        self.copies: "OrderedDict[tuple, nn.Module]" = OrderedDict()
        self.version: Optional[tuple] = None  # the (storage, version counter) of each tensor at the last lookup
        self.weights: Optional[str] = None  # their fingerprint then
        self.builds = 0

    def get(self, network: nn.Module, ndim: int) -> nn.Module:
        version = tuple((t.data_ptr(), t._version) for t in (*network.parameters(), *network.buffers()))
        if version != self.version:  # weights loaded or edited since the last call: fingerprint them again
            self.version, self.weights = version, fingerprint(network)
        key = (ndim, getattr(network, "deep_supervision", None), self.weights)
        fast = self.copies.get(key)
        if fast is None:
            keep_freed_memory()  # from the first copy on, for the process's life (allocator.py)
            fast = self.copies[key] = build_inference_copy(network, ndim)
            self.builds += 1
            while len(self.copies) > MAX_COPIES:
                self.copies.popitem(last=False)
        self.copies.move_to_end(key)
        return fast


def _dispatching_forward(network: nn.Module, *args, **kwargs):
    """The enabled network's forward: the cached copy where `uses_copy`, else the class's forward."""
    if uses_copy(network, args):
        cache = _ENGINES.get(network)
        if cache is None:  # a deep copy of an enabled network carries the dispatch, not the cache
            cache = _ENGINES[network] = _CopyCache()
        return run_inference_copy(cache.get(network, args[0].ndim), *args, **kwargs)
    return type(network).forward(network, *args, **kwargs)


def uses_copy(network: nn.Module, args: tuple) -> bool:
    """Whether a call of an enabled `network` with `args` now runs the inference copy."""
    if network.training or torch.is_grad_enabled():
        return False
    x = args[0] if args else None
    return torch.is_tensor(x) and x.device.type == "cpu" and x.dtype == torch.float32 \
        and not torch.is_autocast_enabled("cpu") and x.ndim in (4, 5) and enabled()


def enable(network: nn.Module) -> nn.Module:
    """Make `network` run its inference copy where `uses_copy` says so; returns the network.

    Idempotent; a network not in NETWORKS is returned unchanged. Only the network's `forward`
    changes (an instance attribute): no parameter, buffer or submodule is added.
    """
    if type(network) in NETWORKS and network not in _ENGINES:
        _ENGINES[network] = _CopyCache()
        network.forward = types.MethodType(_dispatching_forward, network)
    return network


def copies_built(network: nn.Module) -> int:
    """How many inference copies this network has built so far."""
    cache = _ENGINES.get(network)
    return cache.builds if cache is not None else 0
