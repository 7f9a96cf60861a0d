"""The model registry: one name, one constructor, variants as configurations (as timm does).

Every network variant we ship (paper variants and ablations alike) is a `ModelSpec` with a unique
name. The trainer `nnUNetTrainer<name>` builds it from an nnU-Net plan; `nnunet-lightseg profile
<name>` builds it in the paper's own configuration. Families register their specs in a module of
`nnunet_lightseg.zoo`, listed in `FAMILY_MODULES`; the registry imports them on first use.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

FAMILY_MODULES = ("ultralightunet", "lightmedseg", "dalight3d", "veloxseg")

StrideList = Sequence[Sequence[int]]


@dataclass(frozen=True)
class ModelSpec:
    """A registered network variant.

    build(in_channels, num_classes, dim, plan_steps, deep_supervision) returns the network.
    `plan_steps` is the plan's downsampling steps (nnU-Net's `pool_op_kernel_sizes[1:]`, per-axis
    strides) or None for the paper's own configuration (isotropic 2x at every stage).
    """

    name: str
    family: str
    paper: str
    dims: tuple[int, ...]
    build: Callable[..., object]
    description: str = ""
    paper_figures: dict = field(default_factory=dict)  # e.g. {"params": 0.453e6, "gmac": 3.42, "input": (1, 96, 96, 96)}

    def create(self, in_channels: int, num_classes: int, dim: int,
               plan_steps: Optional[StrideList] = None, deep_supervision: bool = False):
        if dim not in self.dims:
            only = " and ".join(f"{d}D" for d in self.dims)
            raise UnsupportedConfigurationError(
                f"{self.name} is a {only} network and cannot run on {dim}D data. "
                f"Use a {'3d_fullres' if 3 in self.dims else '2d'} configuration instead.")
        return self.build(in_channels=in_channels, num_classes=num_classes, dim=dim,
                          plan_steps=None if plan_steps is None else [tuple(int(s) for s in step) for step in plan_steps],
                          deep_supervision=deep_supervision)


class UnsupportedConfigurationError(ValueError):
    """A network asked for something it cannot do (a dimensionality, a plan it cannot fit)."""


class UnknownModelError(KeyError):
    def __str__(self):
        return str(self.args[0])


_REGISTRY: dict[str, ModelSpec] = {}
_loaded = False


def register(spec: ModelSpec) -> ModelSpec:
    key = spec.name.lower()
    if key in _REGISTRY and _REGISTRY[key] is not spec:
        raise ValueError(f"model name {spec.name!r} is registered twice")
    _REGISTRY[key] = spec
    return spec


def _load_families() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in FAMILY_MODULES:
            importlib.import_module(f"nnunet_lightseg.zoo.{module}")


def all_specs() -> list[ModelSpec]:
    """Every registered model, family by family in FAMILY_MODULES order, then as registered."""
    _load_families()
    order = {family: i for i, family in enumerate(FAMILY_MODULES)}
    return sorted(_REGISTRY.values(), key=lambda spec: order.get(spec.family.lower(), len(order)))


def default_specs() -> list[ModelSpec]:
    """Each family's default variant: the spec named as its family (e.g. `LightMedSeg`)."""
    return [spec for spec in all_specs() if spec.name == spec.family]


def get(name: str) -> ModelSpec:
    """Look a model up by name, case-insensitive; a `nnUNetTrainer` prefix is accepted too."""
    _load_families()
    key = name.lower()
    if key.startswith("nnunettrainer"):
        key = key[len("nnunettrainer"):]
    if key not in _REGISTRY:
        names = ", ".join(sorted(s.name for s in _REGISTRY.values()))
        raise UnknownModelError(f"unknown model {name!r}. Known models: {names}. "
                                f"`nnunet-lightseg list` shows them with their trainers.")
    return _REGISTRY[key]


def fit_strides(plan_steps: Optional[StrideList], num_stages: int, dim: int) -> list[tuple[int, ...]]:
    """Per-stage strides for a network with `num_stages` downsampling steps.

    Takes the plan's steps in order; a plan with fewer steps leaves the remaining stages at
    stride 1 (they still compute, at the coarsest resolution the plan allows); a plan with more
    steps than the network has stages keeps the first `num_stages`. None gives the paper's own
    configuration: 2x on every axis at every stage.
    """
    if plan_steps is None:
        return [(2,) * dim] * num_stages
    steps = [tuple(int(s) for s in step) for step in plan_steps][:num_stages]
    if any(len(step) != dim for step in steps):
        raise UnsupportedConfigurationError(f"plan strides {plan_steps} do not match {dim}D data")
    return steps + [(1,) * dim] * (num_stages - len(steps))
