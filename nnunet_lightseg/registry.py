"""The model registry: one name, one constructor, variants as configurations (as timm does).

Every network we ship or compare against (paper variants, ablations, MONAI baselines) is a
`ModelSpec` with a unique name. The registry is the single answer to "can this model run on this
plan?" (`ModelSpec.check`) and the single way to build it (`ModelSpec.create`), from a `Plan`: the
data's channels and classes, the patch size and the plan's downsampling steps. The trainer
`nnUNetTrainer<name>` builds it from an nnU-Net plan; `nnunet-lightseg profile <name>` in the
paper's own configuration. Families register their specs in a module of `nnunet_lightseg.zoo`,
listed in `FAMILY_MODULES`; the registry imports them on first use.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

from nnunet_lightseg.nnunet_env import DEFAULT_MODELS

FAMILY_MODULES = ("ultralightunet", "lightmedseg", "dalight3d", "veloxseg", "monai")
TRAINER_PREFIX = "nnUNetTrainer"

StrideList = Sequence[Sequence[int]]


class UnsupportedConfigurationError(ValueError):
    """A network asked for something it cannot do (a dimensionality, a plan it cannot fit)."""


class UnknownModelError(KeyError):
    def __str__(self):
        return str(self.args[0])


@dataclass(frozen=True)
class Plan:
    """What a network is built for.

    `steps` are the plan's downsampling steps (nnU-Net's `pool_op_kernel_sizes[1:]`, per-axis
    strides), or None for the paper's own configuration (2x on every axis at every stage).
    """

    in_channels: int
    num_classes: int
    patch_size: tuple[int, ...]
    steps: Optional[tuple[tuple[int, ...], ...]] = None
    deep_supervision: bool = False

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(int(s) for s in self.patch_size))
        if self.steps is not None:
            object.__setattr__(self, "steps", tuple(tuple(int(s) for s in step) for step in self.steps))
            if any(len(step) != self.dim for step in self.steps):
                raise UnsupportedConfigurationError(
                    f"plan strides {[list(s) for s in self.steps]} do not match the {self.dim}D patch {self.patch_size}")

    @property
    def dim(self) -> int:
        return len(self.patch_size)

    @classmethod
    def from_configuration(cls, configuration_manager, in_channels: int, num_classes: int,
                           deep_supervision: bool = False) -> "Plan":
        """From an nnU-Net configuration (anything with `patch_size` and `pool_op_kernel_sizes`)."""
        return cls(in_channels, num_classes, tuple(configuration_manager.patch_size),
                   tuple(map(tuple, configuration_manager.pool_op_kernel_sizes[1:])), deep_supervision)


@dataclass(frozen=True)
class PaperFigures:
    """What a paper states for a model in one dimensionality, and the input it states it for."""

    params: float
    input: tuple[int, ...]  # (channels, *patch)
    classes: int
    gmac: Optional[float] = None  # multiply-accumulates per input, where the paper gives them

    @property
    def plan(self) -> Plan:
        return Plan(self.input[0], self.classes, self.input[1:])


@dataclass(frozen=True)
class ModelSpec:
    """A registered network.

    build(plan) returns the network. `requirement(plan)` returns why a plan that passes the
    dimensionality check still cannot serve (e.g. a patch too small for the network's depth), or
    None. `deep_supervision` says whether the network has deep-supervision outputs; baselines
    (MONAI's networks, single output) have none.
    """

    name: str
    family: str
    paper: str
    dims: tuple[int, ...]
    build: Callable[[Plan], object]
    description: str = ""
    paper_figures: Mapping[int, PaperFigures] = field(default_factory=dict)  # by dimensionality
    requirement: Optional[Callable[[Plan], Optional[str]]] = None
    deep_supervision: bool = True
    baseline: bool = False

    @property
    def trainer(self) -> str:
        return TRAINER_PREFIX + self.name

    @property
    def is_default(self) -> bool:
        """A paper family's default variant (nnunet_env.DEFAULT_MODELS), e.g. `LightMedSeg`."""
        return self.name in DEFAULT_MODELS

    def check(self, plan: Plan) -> None:
        """Raise UnsupportedConfigurationError, with the one message every caller shows, unless
        this network can be built for `plan`."""
        if plan.dim not in self.dims:
            only = " and ".join(f"{d}D" for d in self.dims)
            configuration = "3d_fullres" if 3 in self.dims else "2d"
            raise UnsupportedConfigurationError(
                f"{self.name} is a {only} network and cannot run on {plan.dim}D data (patch {list(plan.patch_size)}). "
                f"Use a {configuration} configuration, e.g. nnUNetv2_train DATASET {configuration} FOLD -tr {self.trainer}.")
        reason = self.requirement(plan) if self.requirement is not None else None
        if reason:
            raise UnsupportedConfigurationError(f"{self.name}: {reason}")

    def create(self, plan: Plan):
        self.check(plan)
        return self.build(plan)


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
    order = {module: i for i, module in enumerate(FAMILY_MODULES)}
    return sorted(_REGISTRY.values(), key=lambda spec: order.get(spec.family.lower(), len(order)))


def paper_specs() -> list[ModelSpec]:
    """The paper models, variants and ablations (not the baselines)."""
    return [spec for spec in all_specs() if not spec.baseline]


def default_specs() -> list[ModelSpec]:
    """Each paper family's default variant, in nnunet_env.DEFAULT_MODELS order."""
    return [get(name) for name in DEFAULT_MODELS]


def get(name: str) -> ModelSpec:
    """Look a model up by name, case-insensitive; a `nnUNetTrainer` prefix is accepted too."""
    _load_families()
    key = name.lower()
    if key.startswith(TRAINER_PREFIX.lower()):
        key = key[len(TRAINER_PREFIX):]
    if key not in _REGISTRY:
        names = ", ".join(sorted(s.name for s in _REGISTRY.values()))
        raise UnknownModelError(f"unknown model {name!r}. Known models: {names}. "
                                f"`nnunet-lightseg list` shows them with their trainers.")
    return _REGISTRY[key]


def fit_strides(plan: Plan, num_stages: int, stride_one_at: Optional[int] = None) -> list[tuple[int, ...]]:
    """Per-stage strides for a network with `num_stages` downsampling steps.

    Takes the plan's steps in order; a plan with fewer steps runs the remaining stages at stride 1
    (they still compute, at the resolution where they sit): after the plan's steps, at the coarsest
    resolution the plan allows, or from stage index `stride_one_at` on when a network names one
    (LightMedSeg: right after the stem, docs/architectures/lightmedseg.md). A plan with more steps
    than the network has stages keeps the first `num_stages`. The paper's own configuration (no
    steps) is 2x on every axis at every stage.
    """
    if plan.steps is None:
        return [(2,) * plan.dim] * num_stages
    steps = list(plan.steps[:num_stages])
    at = len(steps) if stride_one_at is None else min(stride_one_at, len(steps))
    return steps[:at] + [(1,) * plan.dim] * (num_stages - len(steps)) + steps[at:]
