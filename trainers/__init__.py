"""nnU-Net trainers for the registered networks.

Every `nnUNetTrainer*` class defined in a module of this package is exported here, which is where
nnU-Net's trainer search finds it (through `nnunet_lightseg.discovery`). Short schedules are made
on request for every trainer from their names (`nnunet_lightseg.schedules`), e.g.
`nnUNetv2_train D 3d_fullres 0 -tr nnUNetTrainerUltraLightUNet_5epochs_20iters`.
"""
import importlib
import pkgutil
import sys

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_lightseg.errors import InvalidScheduleName
from nnunet_lightseg.schedules import Schedule, base_name, scheduled_name, split

__all__ = []
for _info in pkgutil.iter_modules(__path__):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name, _obj in vars(_module).items():
        if (_name.startswith("nnUNetTrainer") and isinstance(_obj, type) and issubclass(_obj, nnUNetTrainer)
                and _obj.__module__ == _module.__name__):
            globals()[_name] = _obj
            __all__.append(_name)
__all__.sort()


def with_schedule(base: type, schedule: Schedule) -> type:
    """`base` on `schedule`, named by `schedules.scheduled_name`; the same class object every time
    (pickling and resuming rely on it). The name's epochs and iterations win over the deprecated
    iteration variables. A seed seeds Python's, NumPy's and torch's generators of the training
    process before the trainer is built (so the network's initial weights and, with
    nnUNet_n_proc_DA=0, the batches and augmentations follow it)."""
    name = scheduled_name(base.__name__, schedule)
    if name in globals():
        return globals()[name]

    def __init__(self, plans, configuration, fold, dataset_json, device=None):
        import torch
        if schedule.seed is not None:
            seed_everything(schedule.seed)
        base.__init__(self, plans, configuration, fold, dataset_json,
                      torch.device("cuda") if device is None else device)
        if schedule.epochs is not None:
            self.num_epochs = schedule.epochs
        if schedule.iterations is not None:
            self.num_iterations_per_epoch = schedule.iterations
            self.num_val_iterations_per_epoch = schedule.val_iterations

    cls = type(name, (base,), {"__init__": __init__, "__module__": __name__, "schedule": schedule,
                               "__doc__": f"{base.__name__} on the schedule {schedule.describe()}."})
    cls.__qualname__ = name
    globals()[name] = cls
    return cls


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every CUDA device) random generators."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


_reported: set = set()


def __getattr__(name: str):
    """Short schedules of our trainers, made on request. nnU-Net's trainer search asks with hasattr,
    so a bad name is an AttributeError; for our trainers its reason is printed first (once), since
    nnU-Net's own message only says the trainer was not found."""
    try:
        base, schedule = split(name)
    except InvalidScheduleName as error:
        if base_name(name) in __all__ and name not in _reported:
            _reported.add(name)
            print(f"nnunet-lightseg: {error}", file=sys.stderr, flush=True)
        raise AttributeError(str(error)) from None
    if base in __all__ and not schedule.is_default:
        return with_schedule(globals()[base], schedule)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
