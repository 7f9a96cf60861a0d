"""The baselines every benchmark compares against, and how a run is named.

A benchmark *entry* is a trainer with the plans it trains on, written as nnU-Net names its result
folders: `TRAINER` (on nnUNetPlans) or `TRAINER__PLANS`, e.g. `nnUNetTrainer__nnUNetResEncUNetMPlans`
for ResEnc M. MONAI's networks are not registry models (they need the patch size, which a
`ModelSpec` does not take), so they are listed here rather than in `registry`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PLANS = "nnUNetPlans"
REFERENCE = "nnUNetTrainer"  # nnU-Net's default, the reference of every speed-up and test
# The experiment planner that writes each plans name nnU-Net ships (nnUNetv2_plan_experiment -pl).
PLANNERS = {
    "nnUNetPlans": "ExperimentPlanner",
    "nnUNetResEncUNetMPlans": "nnUNetPlannerResEncM",
    "nnUNetResEncUNetLPlans": "nnUNetPlannerResEncL",
    "nnUNetResEncUNetXLPlans": "nnUNetPlannerResEncXL",
}
_SCHEDULE_SUFFIX = re.compile(r"_\d+epochs?$")


@dataclass(frozen=True)
class Entry:
    trainer: str
    plans: str = DEFAULT_PLANS

    @property
    def name(self) -> str:
        return self.trainer if self.plans == DEFAULT_PLANS else f"{self.trainer}__{self.plans}"

    @property
    def is_nnunet_default(self) -> bool:
        """nnU-Net's default network and recipe on its default plans, whatever the schedule."""
        base = _SCHEDULE_SUFFIX.sub("", self.trainer)
        return base in (REFERENCE, "nnUNetTrainerBaseline") and self.plans == DEFAULT_PLANS


def parse_entry(text: str) -> Entry:
    """`TRAINER` or `TRAINER__PLANS`; raises ValueError naming the expected form."""
    parts = text.split("__")
    if len(parts) > 2 or not all(parts) or not parts[0].startswith("nnUNetTrainer"):
        raise ValueError(f"{text!r} is not a trainer: write TRAINER or TRAINER__PLANS, e.g. nnUNetTrainerVeloxSeg or "
                         f"nnUNetTrainer__nnUNetResEncUNetMPlans (`nnunet-lightseg list` shows the trainers).")
    return Entry(*parts)


def baseline_rows() -> list[dict]:
    """nnU-Net's default, ResEnc M and the MONAI trainers, for `nnunet-lightseg list`."""
    from nnunet_lightseg.trainers import monai_baselines

    rows = [
        {"entry": REFERENCE, "description": "nnU-Net's default (PlainConvUNet from the plan, deep supervision)",
         "paper": "Isensee et al., nnU-Net, Nature Methods 2021"},
        {"entry": f"{REFERENCE}__nnUNetResEncUNetMPlans",
         "description": "nnU-Net ResEnc M: plan first with nnUNetv2_plan_and_preprocess -pl nnUNetPlannerResEncM",
         "paper": "Isensee et al., nnU-Net Revisited, MICCAI 2024"},
    ]
    for name, cls in sorted(vars(monai_baselines).items()):
        if name.startswith("nnUNetTrainerMonai"):
            rows.append({"entry": name, "description": cls.description, "paper": cls.paper})
    return rows
