"""`nnunet-lightseg`: list the models, profile them, run the demo."""
from __future__ import annotations

import argparse
import json
import sys


def _trainers_by_model() -> dict[str, list[str]]:
    from nnunet_lightseg import trainers

    by_model: dict[str, list[str]] = {}
    for name in trainers.__all__:
        model = getattr(getattr(trainers, name), "model_name", "")
        if model:
            by_model.setdefault(model.lower(), []).append(name)
    return by_model


def command_list(args) -> int:
    from nnunet_lightseg import registry

    by_model = _trainers_by_model()
    rows = [{"model": spec.name, "family": spec.family, "dims": list(spec.dims), "paper": spec.paper,
             "description": spec.description, "trainers": by_model.get(spec.name.lower(), [])}
            for spec in registry.all_specs()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        dims = "/".join(f"{d}D" for d in row["dims"])
        print(f"{row['model']:<28} {dims:<6} {row['description']}")
        print(f"{'':<28} trainers: {', '.join(row['trainers']) or '-'}")
        print(f"{'':<28} paper: {row['paper']}")
    print("\nShort schedules: append _<N>epochs to any trainer name, e.g. nnUNetTrainerUltraLightUNet_5epochs.")
    return 0


def command_profile(args) -> int:
    from nnunet_lightseg import profiling, registry

    spec = registry.get(args.model)
    dim = len(args.patch)
    if dim not in (2, 3):
        raise SystemExit(f"--patch takes two (2D) or three (3D) sizes, got {len(args.patch)}")
    if args.in_channels < 1 or args.classes < 1 or min(args.patch) < 1:
        raise SystemExit("--in-channels, --classes and the --patch sizes must be positive")
    network = spec.create(args.in_channels, args.classes, dim, plan_steps=None, deep_supervision=False)
    input_shape = (1, args.in_channels, *args.patch)
    result = {"model": spec.name, "params": profiling.count_parameters(network),
              "gmac": profiling.count_gmac(network, input_shape), "patch": list(args.patch),
              "in_channels": args.in_channels, "classes": args.classes,
              "configuration": "paper (isotropic 2x downsampling per stage)"}
    if not args.no_latency:
        result.update(profiling.measure_latency(network, input_shape, repeats=args.repeats, threads=args.threads))
    result["machine"] = profiling.machine_description()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value}")
    return 0


def command_demo(args) -> int:
    from nnunet_lightseg.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-lightseg", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("list", help="every model with its trainers, paper and dimensionality")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=command_list)

    p = commands.add_parser("profile", help="params, GMAC and CPU latency of a model in the paper's configuration")
    p.add_argument("model", help="trainer name without the nnUNetTrainer prefix, e.g. UltraLightUNet_M")
    p.add_argument("--in-channels", type=int, required=True)
    p.add_argument("--classes", type=int, required=True)
    p.add_argument("--patch", type=int, nargs="+", required=True, help="D H W (3D) or H W (2D)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the latency (default: torch's)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-latency", action="store_true", help="count params and GMAC only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=command_profile)

    p = commands.add_parser("demo", help="generate demo data, plan, train a short CPU schedule, predict, evaluate")
    p.add_argument("--output", default="lightseg-demo", help="working folder (default ./lightseg-demo)")
    p.add_argument("--trainer", default="nnUNetTrainerUltraLightUNet")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--iterations", type=int, default=20, help="training iterations per epoch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--use-nnunet-env", action="store_true",
                   help="use the nnUNet_raw/_preprocessed/_results folders of your environment instead of --output")
    p.set_defaults(func=command_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from nnunet_lightseg.registry import UnknownModelError, UnsupportedConfigurationError

    try:
        return args.func(args)
    except (UnknownModelError, UnsupportedConfigurationError) as error:
        print(f"nnunet-lightseg {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
