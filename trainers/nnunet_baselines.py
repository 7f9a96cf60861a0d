"""nnU-Net's default trainer under the benchmark's short schedules.

`nnUNetTrainerBaseline` is `nnUNetTrainer` unchanged (network, recipe, plans) except that it gets
the same schedule names as our trainers, made on request (`nnUNetTrainerBaseline_5epochs_20iters`,
`nnunet_lightseg.schedules`), and honours the deprecated iteration variables and writes its checkpoints atomically like them. nnU-Net's
own `nnUNetTrainer_5epochs` etc. keep 250 iterations per epoch, so a short CPU schedule would
otherwise give the reference 10x more training than the models it is compared with. Without a
suffix (and the variables unset) it is `nnUNetTrainer`.
ResEnc M is this trainer (or `nnUNetTrainer`) with the plans `nnUNetResEncUNetMPlans`.
"""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_lightseg.trainers.base import AtomicCheckpoints, SettingsFromEnvironment


class nnUNetTrainerBaseline(SettingsFromEnvironment, AtomicCheckpoints, nnUNetTrainer):
    pass
