"""HD95 and NSD of saved predictions, with MONAI's metrics, in millimetres of the image spacing.

`monai.metrics.compute_hausdorff_distance(percentile=95)` and `monai.metrics.compute_surface_dice`
(normalised surface Dice at a tolerance in mm), both given the voxel spacing read from the
reference image's header, so that anisotropic images are measured in physical units. A class
absent from the reference or the prediction has no surface distance (NaN), as in MONAI.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

LIBRARY = "MONAI"


def library_version() -> str:
    import monai

    return f"{LIBRARY} {monai.__version__}"


def _read(path: str) -> tuple[np.ndarray, tuple[float, ...]]:
    import SimpleITK as sitk

    image = sitk.ReadImage(path)
    return sitk.GetArrayFromImage(image), tuple(reversed(image.GetSpacing()))  # array axes are z, y, x


def case_metrics(prediction_file: str, reference_file: str, labels: list[int], tolerance_mm: float) -> dict:
    """{label: {"HD95": mm, "NSD": fraction}} and the spacing used, for one case."""
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    for path in (prediction_file, reference_file):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: surface metrics need the saved predictions and references "
                                    f"named in summary.json (or use --no-surface).")
    prediction, _ = _read(prediction_file)
    reference, spacing = _read(reference_file)
    if prediction.shape != reference.shape:
        raise ValueError(f"{prediction_file} has shape {prediction.shape} but {reference_file} has {reference.shape}")
    to_one_hot = lambda array: torch.from_numpy(np.stack([array == label for label in labels])[None])  # noqa: E731
    y_pred, y = to_one_hot(prediction), to_one_hot(reference)
    with warnings.catch_warnings():  # MONAI warns for every empty class; we report NaN for those
        warnings.simplefilter("ignore")
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=spacing)[0]
        nsd = compute_surface_dice(y_pred, y, class_thresholds=[tolerance_mm] * len(labels), include_background=True,
                                   spacing=spacing)[0]
    return {"spacing": list(spacing),
            "per_label": {str(label): {"HD95": float(hd95[i]), "NSD": float(nsd[i])} for i, label in enumerate(labels)}}
