"""One (trainer, fold) of a benchmark: its result folder, how far it got, and the stock command that
takes it on. Shared by the local executor (`benchmark`) and the SLURM one (`slurm`) (standard
library only)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from nnunet_lightseg.baselines import Entry


@dataclass(frozen=True)
class Job:
    entry: Entry  # as trained, schedule included
    fold: int

    def folder(self, results: str, configuration: str) -> str:
        return os.path.join(results, f"{self.entry.trainer}__{self.entry.plans}__{configuration}", f"fold_{self.fold}")


def fold_state(folder: str) -> str:
    """'finished', 'validate' (trained, validation missing), 'resume' (a checkpoint to go on from) or 'new'."""
    trained = os.path.isfile(os.path.join(folder, "checkpoint_final.pth"))
    if trained:
        return "finished" if os.path.isfile(os.path.join(folder, "validation", "summary.json")) else "validate"
    return "resume" if os.path.isfile(os.path.join(folder, "checkpoint_latest.pth")) else "new"


RESUME_FLAGS = {"new": [], "resume": ["--c"], "validate": ["--val"]}  # nnUNetv2_train's flags per fold_state


def train_command(dataset: str, configuration: str, job: Job, device: str, status: str) -> list[str]:
    """The stock command that takes `job` on from `status` (fold_state): train, resume, or validate."""
    return ["nnUNetv2_train", dataset, configuration, str(job.fold), "-tr", job.entry.trainer, "-p", job.entry.plans,
            "-device", device] + RESUME_FLAGS[status]
