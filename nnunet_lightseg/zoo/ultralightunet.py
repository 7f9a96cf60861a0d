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


def _builder(channels, use_mkira=True, use_gag=True):
    def build(plan):
        return UltraLightUNet(plan.in_channels, plan.num_classes, channels, fit_strides(plan, NUM_STAGES),
                              convert_dim_to_conv_op(plan.dim), use_mkira=use_mkira, use_gag=use_gag,
                              deep_supervision=plan.deep_supervision)
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
