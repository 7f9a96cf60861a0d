"""The papers' own training recipes, for the `_Paper` trainers.

By default every trainer uses nnU-Net's recipe, so that architectures compare under one recipe.
A `_Paper` trainer mixes `PaperRecipe` in and sets the paper's optimiser settings as class
attributes; models whose paper uses a special loss override `_build_loss` as well.
"""
import math
from typing import Optional

import torch
from torch.optim.lr_scheduler import _LRScheduler


class WarmupCosineLRScheduler(_LRScheduler):
    """Linear warm-up to `initial_lr` over `warmup_steps`, then cosine annealing to `min_lr`, which
    the last step (`max_steps - 1`) reaches.

    Stepped once per epoch with the epoch index (0 .. num_epochs - 1), as nnU-Net steps its poly
    schedule, so the last epoch trains at `min_lr` however few epochs a schedule has.
    """

    def __init__(self, optimizer, initial_lr: float, max_steps: int, warmup_steps: int = 0, min_lr: float = 0.0):
        self.initial_lr, self.max_steps = initial_lr, max(1, max_steps)
        self.warmup_steps, self.min_lr = max(0, warmup_steps), min_lr
        self.ctr = 0
        super().__init__(optimizer, -1)

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.initial_lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.max_steps - 1 - self.warmup_steps)
        progress = min(1.0, progress)
        return self.min_lr + 0.5 * (self.initial_lr - self.min_lr) * (1 + math.cos(math.pi * progress))

    def step(self, current_step=None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = self.lr_at(current_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr for _ in self.optimizer.param_groups]


class PaperRecipe:
    """Mixin for `_Paper` trainers: AdamW with warm-up and cosine annealing, the paper's numbers.

    Set `paper_lr`, `paper_weight_decay`, `paper_min_lr`, `paper_warmup_fraction` (share of the
    schedule spent warming up, so that short schedules scale with it), `paper_deep_supervision`
    and `paper_epochs` (nnU-Net epochs of 250 iterations; None keeps nnU-Net's 1000) on a subclass
    per paper; `trainers.base.registry_trainers` mixes it in first:
    `nnUNetTrainerX_Paper(XPaperRecipe, nnUNetTrainerX)`. A `_<E>epochs` schedule name still wins.
    """

    paper_lr: float = 1e-3
    paper_weight_decay: float = 1e-5
    paper_min_lr: float = 0.0
    paper_warmup_fraction: float = 0.0
    paper_deep_supervision: bool = False
    paper_epochs: Optional[int] = None

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.paper_epochs is not None:
            self.num_epochs = self.paper_epochs
        self.initial_lr = self.paper_lr
        self.weight_decay = self.paper_weight_decay
        self.enable_deep_supervision = self.paper_deep_supervision

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        warmup = int(round(self.paper_warmup_fraction * self.num_epochs))
        scheduler = WarmupCosineLRScheduler(optimizer, self.initial_lr, self.num_epochs, warmup, self.paper_min_lr)
        return optimizer, scheduler
