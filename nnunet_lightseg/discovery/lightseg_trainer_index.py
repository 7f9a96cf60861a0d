"""The one module nnU-Net's external-trainer search finds in this folder.

nnU-Net imports every module of an `nnUNet_extTrainer` folder by its bare file name and removes
it from `sys.modules` afterwards. This module therefore defines nothing itself: it re-exports the
trainer classes of the namespaced package `nnunet_lightseg.trainers`, so that the class nnU-Net
gets (and pickles, and finds again at prediction time) is always the same object.
"""
from nnunet_lightseg import trainers as _trainers
from nnunet_lightseg.trainers import *  # noqa: F401,F403  (the public trainer classes)


def __getattr__(name):
    # Short schedules such as nnUNetTrainerLightMedSeg_5epochs are made on request.
    return getattr(_trainers, name)
