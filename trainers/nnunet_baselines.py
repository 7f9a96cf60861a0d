"""nnU-Net's default trainer under the benchmark's short schedules.

`nnUNetTrainerBaseline` is `nnUNetTrainer` unchanged (network, recipe, plans) except that it
honours NNUNET_LIGHTSEG_ITERATIONS / NNUNET_LIGHTSEG_VAL_ITERATIONS like our trainers, and gets
`_<N>epochs` variants made on request. nnU-Net's own `nnUNetTrainer_5epochs` etc. keep 250
iterations per epoch, so a short CPU schedule would otherwise give the reference 10x more
training than the models it is compared with. With the variables unset it is `nnUNetTrainer`.
ResEnc M is this trainer (or `nnUNetTrainer`) with the plans `nnUNetResEncUNetMPlans`.
"""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_lightseg.trainers.base import IterationsFromEnvironment


class nnUNetTrainerBaseline(IterationsFromEnvironment, nnUNetTrainer):
    pass
