"""DALight-3D (3D only) and the paper's four component ablations."""
from nnunet_lightseg.architectures.dalight3d import DALight3D
from nnunet_lightseg.registry import ModelSpec, fit_strides, register

PAPER = "Mishra, Mishra & Singh, DALight-3D, arXiv 2605.04518 (2026)"
NUM_STAGES = 3  # downsampling steps

# The paper gives 2.22M parameters (4 MRI modalities, 4 classes of MSD Task01) and no MAC count; its
# input patch is 64^3; mean Dice 0.727 on MSD Task01 after 50 epochs; removing any one component costs
# 0.01-0.03 Dice, not broken down per component (../shared/specs/dalight3d.md).
PAPER_FIGURES = {"3d": {"params": 2.22e6, "gmac": None, "input": (4, 64, 64, 64), "classes": 4, "dice": 0.727}}
ABLATION_FIGURES = {"3d": {"params": None, "gmac": None, "input": (4, 64, 64, 64), "classes": 4,
                           "dice_drop": (0.01, 0.03)}}

ABLATIONS = {
    "noSepConv": ("use_separable_conv", "full 3^3 convs instead of depthwise-separable ones"),
    "noICN": ("use_icn", "GroupNorm with a learned affine instead of identifier-conditioned normalisation"),
    "noCSA": ("use_csa", "no cross-slice attention in the deepest two stages"),
    "noSSFB": ("use_ssfb", "skips concatenated as they are, no adaptive skip-fusion weighting"),
}


def _builder(**switches):
    def build(in_channels, num_classes, dim, plan_steps, deep_supervision):
        return DALight3D(in_channels, num_classes, fit_strides(plan_steps, NUM_STAGES, dim),
                         deep_supervision=deep_supervision, **switches)
    return build


register(ModelSpec(name="DALight3D", family="DALight3D", paper=PAPER, dims=(3,), build=_builder(),
                   description="widths 24, 48, 96, bottleneck 432; SepConv, ICN, CSA, SSFB",
                   paper_figures=PAPER_FIGURES))

for _suffix, (_switch, _what) in ABLATIONS.items():
    register(ModelSpec(name=f"DALight3D_{_suffix}", family="DALight3D", paper=PAPER, dims=(3,),
                       build=_builder(**{_switch: False}), description=f"ablation: {_what}",
                       paper_figures=ABLATION_FIGURES))
