"""VeloxSeg (Lu et al., ICLR 2026): the inference network, built from an nnU-Net plan.

The network's first level downsamples by 4 (a 7^3 conv), the next three by 2: from a plan, the
first level takes the product of the plan's first two steps and the others its next three
(stride 1 where the plan has fewer steps). Every input channel is a modality with its own
transformer stream. SDKT's reconstruction decoders are the trainer's (trainers/veloxseg.py).
"""
from typing import Optional

from nnunet_lightseg.architectures.veloxseg import VeloxSeg, minimum_input_size
from nnunet_lightseg.registry import ModelSpec, PaperFigures, Plan, fit_strides, register

PAPER = "Lu et al., VeloxSeg, ICLR 2026 (arXiv 2509.22307)"


def level_strides(plan: Plan) -> list[tuple[int, ...]]:
    """Four per-axis level strides from the plan's downsampling steps (the paper's: 4, 2, 2, 2)."""
    steps = fit_strides(plan, 5)
    return [tuple(a * b for a, b in zip(steps[0], steps[1]))] + steps[2:]


def patch_requirement(plan: Plan) -> Optional[str]:
    """Why the plan's patch is too small for the network's depth, or None."""
    minimum = minimum_input_size(level_strides(plan))
    if all(p >= m for p, m in zip(plan.patch_size, minimum)):
        return None
    return (f"the network needs a patch of at least {minimum} voxels for the plan's strides "
            f"{[list(s) for s in plan.steps or ()]} (its deepest level must hold 2 voxels per axis for instance "
            f"norm); the plan has {plan.patch_size}. Plan a larger patch or fewer downsampling steps.")


def build(plan):
    return VeloxSeg(plan.in_channels, plan.num_classes, level_strides(plan), deep_supervision=plan.deep_supervision)


register(ModelSpec(
    name="VeloxSeg", family="VeloxSeg", paper=PAPER, dims=(3,), build=build, requirement=patch_requirement,
    description="dual-stream JLC + paired window attention, one transformer stream per input channel; "
                "inference network (SDKT decoders are training-only)",
    paper_figures={3: PaperFigures(1.66e6, (2, 96, 96, 96), 2, gmac=1.79)}))
