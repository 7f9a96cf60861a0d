"""Schedule and seed suffixes of trainer names: the one module that builds and reads them (standard library only).

A trainer name fully determines its schedule and seed. On any trainer `T`:

    T_<E>epochs_<I>iters   E epochs of I training iterations each, and
                           max(1, I // 4) validation iterations per epoch (`validation_iterations`)
    T_<E>epochs            E epochs; iterations per epoch as T has them (nnU-Net's 250 / 50)
    T_<I>iters             T's own number of epochs, I iterations per epoch
    ..._seed<S>            after any of these, or on T alone: the training process seeds Python,
                           NumPy and torch with S (trainers/__init__.py; docs/benchmarks.md says what
                           that leaves non-deterministic)

A count is a whole number >= 1 without leading zeros, and the unit is singular for 1
(`T_1epoch_1iter`); epochs come first. A seed is a whole number >= 0 without leading zeros.
Anything else ending in `_<digits>epoch(s)`, `_<digits>iter(s)` or `_seed<digits>` is an invalid
name (`InvalidScheduleName`, whose message gives the valid spelling).

Deprecated: `NNUNET_LIGHTSEG_ITERATIONS` and `NNUNET_LIGHTSEG_VAL_ITERATIONS` still set the
iterations of a name without `_<I>iters` (folders trained before the names carried iterations
resume with `--c`); `nnunet-lightseg benchmark` and `demo` clear them for their runs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from nnunet_lightseg.errors import InvalidScheduleName

ITERATIONS_VARIABLE = "NNUNET_LIGHTSEG_ITERATIONS"  # deprecated: name the schedule instead
VAL_ITERATIONS_VARIABLE = "NNUNET_LIGHTSEG_VAL_ITERATIONS"  # deprecated
DEPRECATED_VARIABLES = (ITERATIONS_VARIABLE, VAL_ITERATIONS_VARIABLE)

_SUFFIX = re.compile(r"_(?:(\d+)(epochs?|iters?)|seed(\d+))$")
_UNITS = ("epoch", "iter")  # in the order they are written


def validation_iterations(iterations: int) -> int:
    """Validation iterations per epoch of a schedule with `iterations` training iterations."""
    return max(1, iterations // 4)


@dataclass(frozen=True)
class Schedule:
    """Epochs, training iterations per epoch and seed; None keeps the trainer's own (nnU-Net: unseeded)."""

    epochs: int | None = None
    iterations: int | None = None
    seed: int | None = None

    def __post_init__(self):
        for unit, value in (("epochs", self.epochs), ("iterations", self.iterations)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidScheduleName(f"the number of {unit} must be a whole number of at least 1, not {value!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise InvalidScheduleName(f"a seed must be a whole number of at least 0, not {self.seed!r}")

    @property
    def is_default(self) -> bool:
        """True when the schedule changes nothing (no suffix)."""
        return self.epochs is None and self.iterations is None and self.seed is None

    def with_seed(self, seed: int | None) -> "Schedule":
        return Schedule(self.epochs, self.iterations, seed)

    @property
    def val_iterations(self) -> int | None:
        return None if self.iterations is None else validation_iterations(self.iterations)

    @property
    def suffix(self) -> str:
        parts = [(self.epochs, "epoch"), (self.iterations, "iter")]
        return "".join(f"_{n}{unit}{'' if n == 1 else 's'}" for n, unit in parts if n is not None) + (
            "" if self.seed is None else f"_seed{self.seed}")

    def describe(self) -> str:
        """E.g. '5 epochs x 20 iterations', for progress lines."""
        parts = [f"{self.epochs} epochs" if self.epochs else "the trainer's epochs",
                 f"{self.iterations} iterations" if self.iterations else "its iterations"]
        described = "full schedule" if self.epochs is None and self.iterations is None else " x ".join(parts)
        return described + ("" if self.seed is None else f", seed {self.seed}")


def scheduled_name(trainer: str, schedule: Schedule) -> str:
    """`trainer` on `schedule`, e.g. ('nnUNetTrainerVeloxSeg', Schedule(5, 20)) -> 'nnUNetTrainerVeloxSeg_5epochs_20iters'."""
    return trainer + schedule.suffix


def _suffixes(name: str) -> tuple[str, list[tuple[str, str]]]:
    """The name without its trailing `_<digits><unit>` parts and `_seed<digits>`, and those parts as
    (digits, unit) in order (the seed's unit is "seed")."""
    base, found = name, []
    while match := _SUFFIX.search(base):
        found.insert(0, (match[1], match[2]) if match[1] else (match[3], "seed"))
        base = base[:match.start()]
    return base, found


def base_name(name: str) -> str:
    """The trainer without any schedule suffix, well-formed or not (for grouping result folders)."""
    return _suffixes(name)[0]


def split(name: str) -> tuple[str, Schedule]:
    """(trainer, schedule) of a trainer name; Schedule() when it has no suffix.

    Raises InvalidScheduleName (one line, with the valid spelling) for a malformed suffix."""
    base, found = _suffixes(name)
    if not found:
        return name, Schedule()
    seeds = [int(digits) for digits, unit in found if unit == "seed"]
    seed = seeds[-1] if seeds else None
    counts = [(digits, unit) for digits, unit in found if unit != "seed"]
    values = {unit.rstrip("s"): digits for digits, unit in counts}
    units = [unit.rstrip("s") for _, unit in counts]
    suggestion = base + Schedule(*(max(1, int(values[u])) if u in values else None for u in _UNITS), seed).suffix
    if units not in ([], ["epoch"], ["iter"], ["epoch", "iter"]) or len(seeds) > 1 or (seeds and found[-1][1] != "seed"):
        problem = "give at most one epochs and one iters suffix, epochs first, and the seed last"
    elif any(digits != str(int(digits)) for digits, _ in found):
        problem = "write the numbers without leading zeros"
    elif any(int(digits) < 1 for digits, _ in counts):
        problem = "the numbers of epochs and iterations must be at least 1"
    elif any((digits == "1") != (not unit.endswith("s")) for digits, unit in counts):
        problem = "the unit is singular for 1 and plural otherwise"
    else:
        return base, Schedule(int(values["epoch"]) if "epoch" in values else None,
                              int(values["iter"]) if "iter" in values else None, seed)
    raise InvalidScheduleName(f"{name} is not a valid schedule name: {problem}, e.g. {suggestion} "
                              f"(<trainer>_<E>epochs_<I>iters_seed<S>, each part optional, docs/training.md)")


def seedless(name: str) -> tuple[str, int | None]:
    """(the name without its seed, the seed): the runs of one trainer and schedule under several seeds
    share the first, e.g. 'T_5epochs_20iters_seed2' -> ('T_5epochs_20iters', 2). A malformed name
    (a folder someone named) is left whole."""
    try:
        base, schedule = split(name)
    except InvalidScheduleName:
        return name, None
    return scheduled_name(base, schedule.with_seed(None)), schedule.seed
