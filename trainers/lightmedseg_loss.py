"""LightMedSeg's training objective (Sec. 3.7, Eq. 22): Dice + CE + 0.5 x boundary BCE.

Every term is weighted per class by the inverse voxel frequency of the batch's target,
w_c = |Omega| / (N_cls * sum_r y_c,r); classes absent from the batch get weight 0. Each term is
the w-weighted mean of its per-class (or per-voxel) values:

- Dice: 1 - sum_c w_c Dice_c / sum_c w_c, soft Dice of the softmax over the whole batch.
- CE: sum_r w_(y_r) CE_r / sum_r w_(y_r) (torch's weighted cross-entropy).
- Boundary: for each class c, its boundary (voxels whose 3^3 neighbourhood holds c and another
  class) dilated by d = 3 in the L-infinity norm (a 7^3 max-pool) is the band M_c; the binary
  cross-entropy of the softmax probability p_c against the one-hot y_c, averaged over M_c
  (normalised by |M_c|), then w-weighted over the classes with a non-empty band. 0 without any boundary.

Targets are nnU-Net's: a (B, 1, ...) map of class indices; logits are (B, C, ...).
"""
import torch
import torch.nn.functional as F
from torch import nn

BOUNDARY_WEIGHT = 0.5
BAND_RADIUS = 3  # d in Sec. 3.7, L-infinity
EPS = 1e-6


def inverse_frequency_weights(onehot: torch.Tensor) -> torch.Tensor:
    """w_c = |Omega| / (N_cls * voxels of class c); 0 for a class absent from the batch."""
    counts = onehot.sum(dim=[0] + list(range(2, onehot.ndim)))
    total = onehot[:, :1].numel()
    return torch.where(counts > 0, total / (onehot.shape[1] * counts.clamp(min=1)), torch.zeros_like(counts))


def boundary_bands(onehot: torch.Tensor, radius: int = BAND_RADIUS) -> torch.Tensor:
    """Per class, the voxels within L-infinity distance `radius` of the class boundary (B, C, ...) as 0/1."""
    pool = F.max_pool3d if onehot.ndim == 5 else F.max_pool2d
    inside = pool(onehot, 3, stride=1, padding=1)  # some neighbour belongs to c
    outside = pool(1 - onehot, 3, stride=1, padding=1)  # some neighbour does not
    boundary = inside * outside
    return pool(boundary, 2 * radius + 1, stride=1, padding=radius)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    total = weights.sum()
    return (values * weights).sum() / total if total > 0 else values.sum() * 0


class LightMedSegLoss(nn.Module):
    """L = L_Dice + L_CE + 0.5 L_Bdry, all weighted by inverse voxel frequency (Eq. 22)."""

    def __init__(self, boundary_weight: float = BOUNDARY_WEIGHT, band_radius: int = BAND_RADIUS):
        super().__init__()
        self.boundary_weight, self.band_radius = boundary_weight, band_radius

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(self.terms(logits, target).values())

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three weighted terms (the boundary term already multiplied by 0.5)."""
        logits = logits.float()
        if target.ndim == logits.ndim:
            target = target[:, 0]
        labels = target.long()
        onehot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).float()
        weights = inverse_frequency_weights(onehot)
        log_probs = torch.log_softmax(logits, dim=1)
        probs = log_probs.exp()

        axes = [0] + list(range(2, logits.ndim))
        intersection = (probs * onehot).sum(axes)
        dice = (2 * intersection + EPS) / (probs.sum(axes) + onehot.sum(axes) + EPS)
        dice_loss = 1 - weighted_mean(dice, weights)

        ce_loss = F.nll_loss(log_probs, labels, weight=weights)

        band = boundary_bands(onehot, self.band_radius)
        log_not = torch.log1p(-probs.clamp(max=1 - EPS))
        bce = -(onehot * log_probs + (1 - onehot) * log_not)
        band_size = band.sum(axes)
        per_class = (bce * band).sum(axes) / band_size.clamp(min=1)
        boundary_loss = weighted_mean(per_class, weights * (band_size > 0))
        return {"dice": dice_loss, "ce": ce_loss, "boundary": self.boundary_weight * boundary_loss}
