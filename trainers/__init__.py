"""nnU-Net trainers for the registered networks.

Every `nnUNetTrainer*` class defined in a module of this package is exported here, which is where
nnU-Net's trainer search finds it (through `nnunet_lightseg.discovery`). Short schedules follow
nnU-Net's naming: `<trainer>_<N>epochs` (or `_1epoch`) is made on request for every trainer, e.g.
`nnUNetv2_train D 3d_fullres 0 -tr nnUNetTrainerUltraLightUNet_5epochs`.
"""
import importlib
import pkgutil
import re

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

__all__ = []
for _info in pkgutil.iter_modules(__path__):
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name, _obj in vars(_module).items():
        if (_name.startswith("nnUNetTrainer") and isinstance(_obj, type) and issubclass(_obj, nnUNetTrainer)
                and _obj.__module__ == _module.__name__):
            globals()[_name] = _obj
            __all__.append(_name)
__all__.sort()

_SHORT_SCHEDULE = re.compile(r"^(?P<base>nnUNetTrainer\w+?)_(?P<epochs>\d+)epochs?$")


def with_epochs(base: type, num_epochs: int) -> type:
    """`base` with `num_epochs` epochs, named as nnU-Net names its short schedules."""
    name = f"{base.__name__}_{num_epochs}epoch{'' if num_epochs == 1 else 's'}"
    if name in globals():
        return globals()[name]
    if num_epochs < 1:
        raise ValueError(f"{name}: the number of epochs must be at least 1")

    def __init__(self, plans, configuration, fold, dataset_json, device=None):
        import torch
        base.__init__(self, plans, configuration, fold, dataset_json,
                      torch.device("cuda") if device is None else device)
        self.num_epochs = num_epochs

    cls = type(name, (base,), {"__init__": __init__, "__module__": __name__,
                               "__doc__": f"{base.__name__} with a {num_epochs}-epoch schedule."})
    cls.__qualname__ = name
    globals()[name] = cls  # the same class object every time: pickling and resuming rely on it
    return cls


def __getattr__(name: str):
    match = _SHORT_SCHEDULE.match(name)
    if match and match["base"] in __all__ and (match["epochs"] == "1") == name.endswith("epoch"):
        return with_epochs(globals()[match["base"]], int(match["epochs"]))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
