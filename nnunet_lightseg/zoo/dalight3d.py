"""DALight-3D (3D only) and the paper's four component ablations."""
from nnunet_lightseg.architectures.dalight3d import DALight3D
from nnunet_lightseg.registry import ModelSpec, PaperFigures, fit_strides, register

PAPER = "Mishra, Mishra & Singh, DALight-3D, arXiv 2605.04518 (2026)"
NUM_STAGES = 3  # downsampling steps

# The paper gives 2.22M parameters (4 MRI modalities, 4 classes of MSD Task01, 64^3 patches) and no
# MAC count (../shared/specs/dalight3d.md); its accuracy figures are in docs/architectures/dalight3d.md.
PAPER_FIGURES = {3: PaperFigures(2.22e6, (4, 64, 64, 64), 4)}

ABLATIONS = {
    "noSepConv": ("use_separable_conv", "full 3^3 convs instead of depthwise-separable ones"),
    "noICN": ("use_icn", "GroupNorm with a learned affine instead of identifier-conditioned normalisation"),
    "noCSA": ("use_csa", "no cross-slice attention in the deepest two stages"),
    "noSSFB": ("use_ssfb", "skips concatenated as they are, no adaptive skip-fusion weighting"),
}


def _builder(**switches):
    def build(plan):
        return DALight3D(plan.in_channels, plan.num_classes, fit_strides(plan, NUM_STAGES),
                         deep_supervision=plan.deep_supervision, **switches)
    return build


register(ModelSpec(name="DALight3D", family="DALight3D", paper=PAPER, dims=(3,), build=_builder(),
                   description="widths 24, 48, 96, bottleneck 432; SepConv, ICN, CSA, SSFB",
                   paper_figures=PAPER_FIGURES))

for _suffix, (_switch, _what) in ABLATIONS.items():
    register(ModelSpec(name=f"DALight3D_{_suffix}", family="DALight3D", paper=PAPER, dims=(3,),
                       build=_builder(**{_switch: False}), description=f"ablation: {_what}"))
