"""A small procedural 3D dataset in nnU-Net raw format: the built-in demo and test data.

Deterministic for a given seed. Two input channels ("T1"-like and "T2"-like contrasts) and two
foreground classes of varied size, shape and contrast: 1 = "blob" (a randomly oriented ellipsoid),
2 = "tube" (a bent cylinder segment). Smooth intensity bias and Gaussian noise on top.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from nnunet_lightseg.errors import OutputFolderError

DEFAULT_DATASET_ID = 987
DEFAULT_DATASET_NAME = "LightSegDemo"
CHANNEL_NAMES = {"0": "T1", "1": "T2"}
LABELS = {"background": 0, "blob": 1, "tube": 2}


@dataclass(frozen=True)
class DemoSettings:
    num_training: int = 12
    num_test: int = 4
    shape: tuple = (40, 48, 40)
    seed: int = 0


def _grid(shape):
    return np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))


def make_case(rng: np.random.Generator, shape) -> tuple[np.ndarray, np.ndarray]:
    """One case: image (2, *shape) float32 and label (*shape) uint8."""
    grid = _grid(shape)
    extent = np.array(shape, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)

    # class 1: a randomly oriented ellipsoid of varied size
    centre = rng.uniform(0.3, 0.7, 3) * extent
    radii = rng.uniform(0.15, 0.3, 3) * extent.min()
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    local = np.einsum("ij,j...->i...", rotation, grid - centre[:, None, None, None])
    label[(local ** 2 / radii[:, None, None, None] ** 2).sum(0) <= 1] = 1

    # class 2: a tube along a bent path, placed away from the blob when possible
    start = rng.uniform(0.15, 0.85, 3) * extent
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    bend = rng.normal(size=3) * 0.02
    tube_radius = rng.uniform(2.5, 4.5)
    length = rng.uniform(0.4, 0.8) * extent.min()
    for t in np.linspace(0, length, int(length * 2)):
        point = start + t * direction + bend * t ** 2
        near = ((grid - point[:, None, None, None]) ** 2).sum(0) <= tube_radius ** 2
        label[near & (label == 0)] = 2

    # contrasts differ per class, channel and case
    background = rng.uniform(0.2, 0.4, 2)
    blob = background + rng.uniform(0.3, 0.6, 2) * np.array([1, -1]) * rng.choice([1, -1])
    tube = background + rng.uniform(0.4, 0.8, 2) * np.array([-1, 1]) * rng.choice([1, -1])
    image = np.empty((2, *shape), dtype=np.float32)
    bias = 1 + 0.2 * np.sin(grid[0] / extent[0] * np.pi * rng.uniform(0.5, 1.5) + rng.uniform(0, np.pi))
    for c in range(2):
        values = np.choose(label, [background[c], blob[c], tube[c]]).astype(np.float32)
        image[c] = values * bias + rng.normal(0, rng.uniform(0.05, 0.12), shape).astype(np.float32)
    return image * 100 + 200, label


def _read_stamp(path: str) -> dict | None:
    """The settings a demo folder was written with, or None when it has no readable stamp."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_dataset(raw_folder: str, settings: DemoSettings = DemoSettings(),
                  dataset_id: int = DEFAULT_DATASET_ID, dataset_name: str = DEFAULT_DATASET_NAME) -> str:
    """Write Dataset<ID>_<name> into raw_folder (imagesTr, labelsTr, imagesTs, labelsTs, dataset.json).

    Reuses a folder written earlier with the same settings; refuses (OutputFolderError) to touch a
    different dataset that already uses the ID.
    """
    import SimpleITK as sitk

    folder = os.path.join(raw_folder, f"Dataset{dataset_id:03d}_{dataset_name}")
    stamp_file = os.path.join(folder, "lightseg_demo_settings.json")
    stamp = asdict(settings)
    stamp["shape"] = list(stamp["shape"])
    if os.path.isdir(folder):
        if _read_stamp(stamp_file) == stamp:
            return folder
        raise OutputFolderError(f"{folder} exists and was not written by this demo with these settings; "
                              f"choose another dataset id or an empty nnUNet_raw folder.")
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        os.makedirs(os.path.join(folder, sub))
    rng = np.random.default_rng(settings.seed)
    cases = [("Tr", f"demo_{i:03d}") for i in range(settings.num_training)] + \
            [("Ts", f"demo_{settings.num_training + i:03d}") for i in range(settings.num_test)]
    for split, case in cases:
        image, label = make_case(rng, tuple(settings.shape))
        for c in range(image.shape[0]):
            sitk.WriteImage(sitk.GetImageFromArray(image[c]), os.path.join(folder, f"images{split}", f"{case}_{c:04d}.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(label), os.path.join(folder, f"labels{split}", f"{case}.nii.gz"))
    dataset_json = {"channel_names": CHANNEL_NAMES, "labels": LABELS, "numTraining": settings.num_training,
                    "file_ending": ".nii.gz", "name": dataset_name,
                    "description": "Procedural demo data made by nnunet-lightseg (deterministic seed)",
                    "licence": "CC0 (generated)"}
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=2)
    with open(stamp_file, "w") as f:
        json.dump(stamp, f)
    return folder
