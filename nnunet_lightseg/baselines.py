"""The baselines every benchmark compares against, and how a run is named.

A benchmark *entry* is a trainer with the plans it trains on, written as nnU-Net names its result
folders: `TRAINER` (on nnUNetPlans) or `TRAINER__PLANS`, e.g. `nnUNetTrainer__nnUNetResEncUNetMPlans`
for ResEnc M. nnU-Net's own networks are listed here; MONAI's are registry specs (`baseline=True`,
nnunet_lightseg/zoo/monai.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from nnunet_lightseg.errors import UsageError
from nnunet_lightseg.schedules import base_name

DEFAULT_PLANS = "nnUNetPlans"
REFERENCE = "nnUNetTrainer"  # nnU-Net's default, the reference of every speed-up and test
# nnU-Net's default as it trains on our short schedules (trainers/nnunet_baselines.py): nnU-Net's own
# `nnUNetTrainer_5epochs` would keep 250 iterations per epoch.
SCHEDULABLE_REFERENCE = "nnUNetTrainerBaseline"
# The experiment planner that writes each plans name nnU-Net ships (nnUNetv2_plan_experiment -pl).
PLANNERS = {
    "nnUNetPlans": "ExperimentPlanner",
    "nnUNetResEncUNetMPlans": "nnUNetPlannerResEncM",
    "nnUNetResEncUNetLPlans": "nnUNetPlannerResEncL",
    "nnUNetResEncUNetXLPlans": "nnUNetPlannerResEncXL",
}


def network_trainer(trainer: str) -> str:
    """The trainer that names the network and recipe: without its schedule, nnUNetTrainerBaseline as
    nnUNetTrainer."""
    base = base_name(trainer)
    return REFERENCE if base == SCHEDULABLE_REFERENCE else base


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
        return network_trainer(self.trainer) == REFERENCE and self.plans == DEFAULT_PLANS


def parse_entry(text: str) -> Entry:
    """`TRAINER` or `TRAINER__PLANS`; raises UsageError naming the expected form."""
    parts = text.split("__")
    if len(parts) > 2 or not all(parts) or not parts[0].startswith("nnUNetTrainer"):
        raise UsageError(f"{text!r} is not a trainer: write TRAINER or TRAINER__PLANS, e.g. nnUNetTrainerVeloxSeg or "
                         f"nnUNetTrainer__nnUNetResEncUNetMPlans (`nnunet-lightseg list` shows the trainers).")
    return Entry(*parts)


def baseline_rows() -> list[dict]:
    """nnU-Net's default, ResEnc M and the MONAI trainers, for `nnunet-lightseg list`."""
    from nnunet_lightseg import registry

    rows = [
        {"entry": REFERENCE, "description": "nnU-Net's default (PlainConvUNet from the plan, deep supervision)",
         "paper": "Isensee et al., nnU-Net, Nature Methods 2021"},
        {"entry": f"{REFERENCE}__nnUNetResEncUNetMPlans",
         "description": "nnU-Net ResEnc M: plan first with nnUNetv2_plan_and_preprocess -pl nnUNetPlannerResEncM",
         "paper": "Isensee et al., nnU-Net Revisited, MICCAI 2024"},
    ]
    rows += [{"entry": spec.trainer, "description": spec.description, "paper": spec.paper}
             for spec in registry.all_specs() if spec.baseline]
    return rows
