"""LightMedSeg (GhostConv3D, K = 8), its dense-conv and K variants and the paper's ablations (Table 4).

3D only. The plan's first four downsampling steps become the stem's and the three poolings' strides.
"""
from nnunet_lightseg.architectures.lightmedseg import LightMedSeg
from nnunet_lightseg.registry import ModelSpec, PaperFigures, fit_strides, register

PAPER = "Tyagi, Rathi & Goyal, LightMedSeg, arXiv 2603.07228"
NUM_STEPS = 4  # the stem and the three max-poolings
# A plan with fewer steps runs the first poolings at stride 1, not the last (issue 11: with the last
# pooling at stride 1 the network predicted no foreground on Hippocampus in 350 steps).
STRIDE_ONE_AFTER_STEM = 1

# Figures the paper states (Tables 3 and 4; ../shared/specs/lightmedseg.md): BraTS, 4 modalities,
# 4 output channels, one 128^3 volume; "GFLOPs" read as GMAC. Only the default model has a GMAC figure.
_INPUT = (4, 128, 128, 128)

VARIANTS = {
    # name: (constructor settings, the paper's figures or None, description)
    "LightMedSeg": ({}, PaperFigures(0.48e6, _INPUT, 4, gmac=14.64),
                    "GhostConv3D, K = 8 anchors (the paper's model)"),
    "LightMedSeg_StandardConv": ({"ghost": False}, PaperFigures(0.66e6, _INPUT, 4),
                                 "dense 3^3 convs instead of GhostConv3D"),
    "LightMedSeg_K16": ({"num_anchors": 16}, PaperFigures(0.49e6, _INPUT, 4), "K = 16 anchors"),
    "LightMedSeg_K32": ({"num_anchors": 32}, PaperFigures(0.52e6, _INPUT, 4), "K = 32 anchors"),
    "LightMedSeg_noLSPM": ({"use_lspm": False}, None,
                           "ablation: no local structural prior module (encoder paths averaged)"),
    "LightMedSeg_noAnchors": ({"use_anchors": False}, None,
                              "ablation: no anchor detector, FiLM or spatial position bias"),
    "LightMedSeg_noSkipRouter": ({"use_skip_router": False}, None,
                                 "ablation: single aligned skips at every decoder level"),
}


def _builder(settings):
    def build(plan):
        return LightMedSeg(plan.in_channels, plan.num_classes, fit_strides(plan, NUM_STEPS, stride_one_at=STRIDE_ONE_AFTER_STEM),
                           deep_supervision=plan.deep_supervision, **settings)
    return build


for _name, (_settings, _figures, _description) in VARIANTS.items():
    register(ModelSpec(name=_name, family="LightMedSeg", paper=PAPER, dims=(3,), build=_builder(_settings),
                       description=_description, paper_figures={3: _figures} if _figures else {}))
