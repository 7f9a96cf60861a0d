"""UltraLightUNet variants (T, S, base, M, L) and the paper's component ablations (Table 4)."""
from dynamic_network_architectures.building_blocks.helper import convert_dim_to_conv_op

from nnunet_lightseg.architectures.ultralightunet import VARIANT_CHANNELS, UltraLightUNet
from nnunet_lightseg.registry import ModelSpec, PaperFigures, fit_strides, register

PAPER = "Rahman & Marculescu, UltraLightUNet, ICLR 2025 submission"
NUM_STAGES = 5

# (2D params, 2D GMAC at 3x256^2, 3D params, 3D GMAC at 96^3): the paper's Tables 1 and 9 (2D) and
# Tables 3 and 10 (3D) (../shared/specs/ultralightunet.md). 2D: 3 input channels, 1 class.
PAPER_FIGURES = {
    "T": (0.027e6, 0.062, 0.061e6, 1.45),
    "S": (0.093e6, 0.125, 0.163e6, 2.03),
    "base": (0.316e6, 0.314, 0.453e6, 3.42),
    "M": (1.15e6, 0.951, 1.42e6, 7.1),
    "L": (3.76e6, 3.19, 4.28e6, 18.0),
}


def _builder(channels, use_mkira=True, use_gag=True, kernel_sizes=(1, 3, 5)):
    def build(plan):
        return UltraLightUNet(plan.in_channels, plan.num_classes, channels, fit_strides(plan, NUM_STAGES),
                              convert_dim_to_conv_op(plan.dim), use_mkira=use_mkira, use_gag=use_gag,
                              kernel_sizes=kernel_sizes, deep_supervision=plan.deep_supervision)
    return build


def _figures(variant):
    p2, g2, p3, g3 = PAPER_FIGURES[variant]
    return {2: PaperFigures(p2, (3, 256, 256), 1, g2), 3: PaperFigures(p3, (1, 96, 96, 96), 1, g3)}


for _variant in VARIANT_CHANNELS:
    register(ModelSpec(
        name="UltraLightUNet" if _variant == "base" else f"UltraLightUNet_{_variant}",
        family="UltraLightUNet", paper=PAPER, dims=(2, 3), build=_builder(VARIANT_CHANNELS[_variant]),
        description=f"variant {_variant}, channels {VARIANT_CHANNELS[_variant]}",
        paper_figures=_figures(_variant)))

for _name, _mkira, _gag, _what in (("MKIROnly", False, False, "MKIR only (no CMFA, skips added as they are)"),
                                   ("MKIR_GAG", False, True, "MKIR + GAG (no CMFA)"),
                                   ("MKIR_MKIRA", True, False, "MKIR + MKIRA (no GAG)")):
    register(ModelSpec(name=f"UltraLightUNet_{_name}", family="UltraLightUNet", paper=PAPER, dims=(2, 3),
                       build=_builder(VARIANT_CHANNELS["base"], _mkira, _gag),
                       description=f"ablation (Table 4): {_what}, base widths"))


# Table 5: the kernel sets of MKDC, base widths, with their stated 2D figures (3 x 256^2, 1 class;
# (params, GMAC)). The paper's default (1, 3, 5) is UltraLightUNet itself. The paper measured them
# in 2D; they build in 3D too, where their `_Paper` trainers (the paper's 3D recipe) run.
KERNEL_SETS = {
    (1,): (0.272e6, 0.220), (1, 1): (0.275e6, 0.229), (3,): (0.281e6, 0.239), (1, 3): (0.284e6, 0.248),
    (1, 1, 3): (0.288e6, 0.257), (3, 3): (0.294e6, 0.267), (1, 3, 3): (0.297e6, 0.276), (5,): (0.299e6, 0.276),
    (1, 5): (0.303e6, 0.286), (3, 3, 3): (0.306e6, 0.295), (3, 5): (0.312e6, 0.304), (5, 5): (0.331e6, 0.342),
    (5, 5, 5): (0.362e6, 0.408),
}
for _kernels, (_params, _gmac) in KERNEL_SETS.items():
    register(ModelSpec(
        name="UltraLightUNet_K" + "_".join(map(str, _kernels)), family="UltraLightUNet", paper=PAPER, dims=(2, 3),
        build=_builder(VARIANT_CHANNELS["base"], kernel_sizes=_kernels),
        description=f"ablation (Table 5): MKDC kernels {', '.join(map(str, _kernels))}, base widths",
        paper_figures={2: PaperFigures(_params, (3, 256, 256), 1, _gmac)}))
