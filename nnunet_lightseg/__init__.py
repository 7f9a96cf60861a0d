"""nnunet-lightseg: lightweight segmentation networks as nnU-Net v2 plugin trainers.

Kept import-light on purpose: `nnunet_lightseg._startup_hook` runs at every Python start
(see docs/discovery.md) and must not pull in torch or nnU-Net.
"""

__version__ = "0.1.0"
