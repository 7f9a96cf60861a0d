"""UltraLightUNet variants (T, S, base, M, L) and the paper's ablations (Tables 4 to 8)."""
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


def _builder(channels, **switches):
    """A build function for the registry: `switches` are UltraLightUNet's ablation arguments."""
    def build(plan):
        return UltraLightUNet(plan.in_channels, plan.num_classes, channels, fit_strides(plan, NUM_STAGES),
                              convert_dim_to_conv_op(plan.dim), deep_supervision=plan.deep_supervision, **switches)
    return build


def _figures_2d(params, gmac):
    """Figures the ablation tables state: 2D, 3 x 256^2 input, 1 class (Table 5's caption)."""
    return {2: PaperFigures(params, (3, 256, 256), 1, gmac)}


def _figures(variant):
    p2, g2, p3, g3 = PAPER_FIGURES[variant]
    return {2: PaperFigures(p2, (3, 256, 256), 1, g2), 3: PaperFigures(p3, (1, 96, 96, 96), 1, g3)}


for _variant in VARIANT_CHANNELS:
    register(ModelSpec(
        name="UltraLightUNet" if _variant == "base" else f"UltraLightUNet_{_variant}",
        family="UltraLightUNet", paper=PAPER, dims=(2, 3), build=_builder(VARIANT_CHANNELS[_variant]),
        description=f"variant {_variant}, channels {VARIANT_CHANNELS[_variant]}",
        paper_figures=_figures(_variant)))

# The component ablations, base widths, with the (params, GMAC) their tables state. Table 4's Mobile
# UNet and Table 6's IRB are one network (the same figures): IRB blocks with one 3-kernel, no CMFA,
# no GAG. Table 6's MKIR row is Table 4's "MKIR" (MKIROnly).
ABLATIONS = {
    "MKIROnly": (dict(use_mkira=False, use_gag=False), "Tables 4 and 6: MKIR only (no CMFA, skips added as they are)",
                 (0.306e6, 0.300)),
    "MKIR_GAG": (dict(use_mkira=False), "Table 4: MKIR + GAG (no CMFA)", (0.310e6, 0.311)),
    "MKIR_MKIRA": (dict(use_gag=False), "Table 4: MKIR + MKIRA (no GAG)", (0.311e6, 0.303)),
    "IRB": (dict(use_mkira=False, use_gag=False, block="irb"),
            "Table 4's Mobile UNet = Table 6's IRB: MobileNetV2 inverted residuals (one 3-kernel, no shuffle), "
            "no CMFA, no GAG", (0.271e6, 0.230)),
    "EncoderMKIRA": (dict(encoder_mkira=True), "Table 7: MKIRA in the encoder too", (0.321e6, 0.346)),
    "AG": (dict(gate="ag"), "Table 8: Attention U-Net's gate (AG) instead of GAG", (0.326e6, 0.320)),
}
for _name, (_switches, _what, _stated) in ABLATIONS.items():
    register(ModelSpec(name=f"UltraLightUNet_{_name}", family="UltraLightUNet", paper=PAPER, dims=(2, 3),
                       build=_builder(VARIANT_CHANNELS["base"], **_switches),
                       description=f"ablation ({_what}), base widths", paper_figures=_figures_2d(*_stated)))


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
        paper_figures=_figures_2d(_params, _gmac)))
