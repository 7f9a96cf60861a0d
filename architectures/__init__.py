"""Networks as plain `torch.nn.Module`s that know nothing of nnU-Net.

Every network here follows one contract, which the trainers in `nnunet_lightseg.trainers` rely on:

- Constructor arguments are explicit (as in dynamic_network_architectures): input channels,
  number of output channels, the conv op (2D or 3D where the network supports both), the
  per-stage downsampling `strides` (one per-axis tuple per stage) and `deep_supervision`.
- The parameter set never depends on `deep_supervision` (nnU-Net's predictor loads weights
  strictly with deep supervision off); the attribute `deep_supervision` can be toggled later.
- `output_strides`: the cumulative per-axis stride of each output, highest resolution first;
  the first is all ones. With deep supervision on, `forward` returns one logits tensor per entry
  (highest resolution first); with it off, the full-resolution logits alone.
- Any input size works: a network pads inputs the total stride does not divide and crops back.
"""
