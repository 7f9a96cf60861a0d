"""LightMedSeg under nnU-Net's recipe on a synthetic task: two nested ellipsoids in noise.

    OMP_NUM_THREADS=1 python -m nnunet_lightseg.measure.lightmedseg_stability 200 24 32 24

SGD lr 1e-2, Nesterov momentum 0.99, weight decay 3e-5, gradient clipping at 12, deep-supervised
Dice + CE (nnU-Net's loss and weights), batch 2, Hippocampus strides ([2, 2, 2] x 3). Prints the loss
at the start and the end, whether any was NaN, and the hard Dice of the two nested regions on 8
fresh samples. Arguments: steps, then the patch (D H W).
"""
import sys
import time

import numpy as np
import torch

from nnunet_lightseg import registry
from nnunet_lightseg.architectures.shapes import scaled_size
from nnunet_lightseg.measure.gradient_flow import nnunet_loss


def sample(n, size):
    zz, yy, xx = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in size], indexing="ij")
    images, labels = [], []
    for _ in range(n):
        centre, radii = 0.3 * (torch.rand(3) - 0.5), 0.6 + 0.2 * torch.rand(3)
        d = sum(((g - c) / r) ** 2 for g, c, r in zip((zz, yy, xx), centre, radii))
        y = ((d < 1).long() + (d < 0.35).long())[None].float()
        labels.append(y)
        images.append(y / 2 + 0.4 * torch.randn(1, *size))
    return torch.stack(images), torch.stack(labels)


def nnunet_recipe_losses(net: torch.nn.Module, batches) -> list[float]:
    """Train `net` (deep supervision on) on `batches` of (image, label) with nnU-Net's recipe: SGD lr 1e-2,
    Nesterov momentum 0.99, weight decay 3e-5, gradient clipping at 12, deep-supervised Dice + CE with
    nnU-Net's loss weights. Returns the loss of every step."""
    loss_fn = nnunet_loss(len(net.output_strides))
    optimizer = torch.optim.SGD(net.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    losses = []
    for x, y in batches:
        targets = [torch.nn.functional.interpolate(y, size=scaled_size(tuple(y.shape[2:]), s), mode="nearest")
                   for s in net.output_strides]
        loss = loss_fn(net(x), targets)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        optimizer.step()
        losses.append(loss.item())
    return losses


def main(steps=200, size=(24, 32, 24), model="LightMedSeg"):
    torch.manual_seed(0)
    net = registry.get(model).create(registry.Plan(1, 3, size, [(2, 2, 2)] * 3, deep_supervision=True))
    start = time.time()
    losses = nnunet_recipe_losses(net, (sample(2, size) for _ in range(steps)))
    print(f"{model}: {steps} steps, {(time.time() - start) / steps:.2f} s/step, NaN: {not np.isfinite(losses).all()}")
    print(f"loss first {losses[0]:.3f}, last {losses[-1]:.3f}; mean of the first 10 {np.mean(losses[:10]):.3f}, "
          f"of the last 10 {np.mean(losses[-10:]):.3f}")
    net.eval()
    net.deep_supervision = False
    x, y = sample(8, size)
    with torch.no_grad():
        prediction = net(x).argmax(1)
    for c in (1, 2):  # nested regions: label >= c
        a, b = prediction >= c, y[:, 0] >= c
        print(f"Dice, label >= {c}: {(2 * (a & b).sum() / (a.sum() + b.sum())).item():.3f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    args = [int(a) for a in sys.argv[1:5]]
    main(*args[:1], *([tuple(args[1:4])] if len(args) == 4 else []))
