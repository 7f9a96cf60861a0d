"""Registrations of the model families: one module per family (see nnunet_lightseg.registry)."""
