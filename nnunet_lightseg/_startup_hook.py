"""Make the stock nnU-Net commands find our trainers, with nothing for the user to set up.

`nnunet_lightseg.pth` (installed at the root of site-packages) imports this module when Python
starts. It appends our discovery folder to `nnUNet_extTrainer`, nnU-Net 2.8's supported search
path for external trainers, keeping whatever the user already has there (their entries come
first, so their own trainers win on a name clash). Only `os` is imported: this runs in every
Python process of the environment.
"""
import os

DISCOVERY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "discovery")
VARIABLE = "nnUNet_extTrainer"


def extend_ext_trainer_path(environ=os.environ) -> str:
    """Append DISCOVERY_DIR to environ[VARIABLE] unless it is already listed; return the value."""
    entries = [e for e in environ.get(VARIABLE, "").split(os.pathsep) if e]
    if DISCOVERY_DIR not in entries:
        entries.append(DISCOVERY_DIR)
    environ[VARIABLE] = os.pathsep.join(entries)
    return environ[VARIABLE]


if os.environ.get("NNUNET_LIGHTSEG_NO_AUTODISCOVERY", "0") != "1":
    extend_ext_trainer_path()
