"""VeloxSeg (Lu et al., ICLR 2026): the inference network, built from an nnU-Net plan.

The network's first level downsamples by 4 (a 7^3 conv), the next three by 2: from a plan, the
first level takes the product of the plan's first two steps and the others its next three
(stride 1 where the plan has fewer steps). Every input channel is a modality with its own
transformer stream. SDKT's reconstruction decoders are the trainer's (trainers/veloxseg.py).
"""
from nnunet_lightseg.architectures.veloxseg import VeloxSeg
from nnunet_lightseg.architectures.shapes import cumulative_strides
from nnunet_lightseg.registry import ModelSpec, UnsupportedConfigurationError, fit_strides, register

PAPER = "Lu et al., VeloxSeg, ICLR 2026 (arXiv 2509.22307)"


def level_strides(plan_steps, dim: int = 3) -> list[tuple[int, ...]]:
    """Four per-axis level strides from the plan's downsampling steps (None: the paper's 4, 2, 2, 2)."""
    steps = fit_strides(plan_steps, 5, dim)
    return [tuple(a * b for a, b in zip(steps[0], steps[1]))] + steps[2:]


def check_patch_size(patch_size, plan_steps) -> None:
    """Raise UnsupportedConfigurationError unless the deepest level holds 2 voxels per axis."""
    minimum = tuple(t + 1 for t in cumulative_strides(level_strides(plan_steps, len(patch_size)))[-1])
    if any(p < m for p, m in zip(patch_size, minimum)):
        raise UnsupportedConfigurationError(
            f"VeloxSeg needs a patch of at least {minimum} voxels for the plan's strides {list(plan_steps)} "
            f"(its deepest level must hold 2 voxels per axis for instance norm); the plan has {tuple(patch_size)}. "
            f"Plan a larger patch or fewer downsampling steps.")


def build(in_channels, num_classes, dim, plan_steps, deep_supervision):
    return VeloxSeg(in_channels, num_classes, level_strides(plan_steps, dim), deep_supervision=deep_supervision)


register(ModelSpec(
    name="VeloxSeg", family="VeloxSeg", paper=PAPER, dims=(3,), build=build,
    description="dual-stream JLC + paired window attention, one transformer stream per input channel; "
                "inference network (SDKT decoders are training-only)",
    paper_figures={"3d": {"params": 1.66e6, "gmac": 1.79, "input": (2, 96, 96, 96), "classes": 2}}))
