"""`nnunet-lightseg`: list the models, profile them, run the demo, benchmark, report, export to ONNX, self-check.

The only module that turns errors into exit statuses: the commands' modules raise
`nnunet_lightseg.errors` exceptions (and the registry's), which `main` prints as one line (with
their traceback under --debug or NNUNET_LIGHTSEG_DEBUG=1). Any other exception is a bug and keeps
its traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from nnunet_lightseg.errors import BenchmarkInterrupted, LightSegError, UsageError
from nnunet_lightseg.nnunet_env import DEFAULT_TRAINERS
from nnunet_lightseg.onnx_runtimes import RUNTIMES
from nnunet_lightseg.output_folder import ASIDE_PREFIX

EXIT_FAILED = 1  # a run failed (a trainer, a stock command, a profile or report that could not be made)
EXIT_USAGE = 2  # the request cannot work as given (as argparse's own errors)
DEBUG_VARIABLE = "NNUNET_LIGHTSEG_DEBUG"  # set (non-empty) to show every error's traceback, as --debug does
FORCE_HELP = ("use an --output folder that nnunet-lightseg did not make: its files are moved, not deleted, into "
              f"<output>/{ASIDE_PREFIX}<time>/")


def _say(line: str) -> None:
    print(line, flush=True)


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
    from nnunet_lightseg.baselines import baseline_rows

    if args.baselines:
        rows = baseline_rows()
        if args.json:
            print(json.dumps(rows, indent=2))
        for row in [] if args.json else rows:
            print(f"{row['entry']:<40} {row['description']}\n{'':<40} paper: {row['paper']}")
        return 0
    by_model = _trainers_by_model()
    rows = [{"model": spec.name, "family": spec.family, "dims": list(spec.dims), "paper": spec.paper,
             "description": spec.description, "trainers": by_model.get(spec.name.lower(), [])}
            for spec in registry.paper_specs()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        dims = "/".join(f"{d}D" for d in row["dims"])
        print(f"{row['model']:<28} {dims:<6} {row['description']}")
        print(f"{'':<28} trainers: {', '.join(row['trainers']) or '-'}")
        print(f"{'':<28} paper: {row['paper']}")
    print("\nShort schedules: append _<E>epochs_<I>iters to any trainer name, e.g. "
          "nnUNetTrainerUltraLightUNet_5epochs_20iters (docs/training.md).")
    print("Baselines (nnU-Net's default, ResEnc M, MONAI networks): nnunet-lightseg list --baselines")
    return 0


def command_profile(args) -> int:
    if args.dataset is not None:
        return command_profile_plan(args)
    missing = [flag for flag, value in (("MODEL", args.model), ("--in-channels", args.in_channels),
                                        ("--classes", args.classes), ("--patch", args.patch)) if value is None]
    if missing:
        raise UsageError(f"give {', '.join(missing)} (a model in the paper's configuration), "
                         f"or -d DATASET -c CONFIGURATION to profile trainers at a plan's patch size.")
    from nnunet_lightseg import profiling, registry

    _check_profile_arguments(args)
    profiling.check_size(args.in_channels, args.classes, args.patch)
    spec = registry.get(args.model)
    network = spec.create(registry.Plan(args.in_channels, args.classes, tuple(args.patch)))
    input_shape = (1, args.in_channels, *args.patch)
    gmac, computed = profiling.forward_cost(network, input_shape)
    result = {"model": spec.name, "params": profiling.count_parameters(network), "gmac": gmac,
              "patch": list(args.patch), "in_channels": args.in_channels, "classes": args.classes,
              "configuration": "paper (isotropic 2x downsampling per stage)"}
    if computed != tuple(args.patch):
        result["padded_patch"] = list(computed)
    if not args.no_latency:
        result.update(profiling.measure_latency(network, input_shape, repeats=args.repeats, threads=args.threads))
    result["machine"] = profiling.machine_description()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value}")
        if "padded_patch" in result:
            print(f"the network pads the patch {result['patch']} to {result['padded_patch']} (a multiple of its total "
                  f"stride); gmac and latency are of the padded patch")
    return 0


def _check_profile_arguments(args) -> None:
    if len(args.patch) not in (2, 3):
        raise UsageError(f"--patch takes two (2D) or three (3D) sizes, got {len(args.patch)}")
    if args.in_channels < 1 or args.classes < 1 or min(args.patch) < 1:
        raise UsageError("--in-channels, --classes and the --patch sizes must be positive")
    if args.repeats < 1 or (args.threads is not None and args.threads < 1):
        raise UsageError("--repeats and --threads must be at least 1")


def command_profile_plan(args) -> int:
    from nnunet_lightseg import plan_profile
    from nnunet_lightseg.baselines import parse_entry

    if args.configuration is None:
        raise UsageError("-d needs -c CONFIGURATION as well, e.g. -c 3d_fullres")
    if args.model is not None:
        raise UsageError(f"give either MODEL ({args.model}) or -d/-c, not both; with -d, name trainers with --trainers.")
    config = plan_profile.ProfileConfig(
        args.dataset, args.configuration, tuple(parse_entry(t) for t in args.trainers), device=args.device,
        threads=args.threads, repeats=args.repeats, predictor=args.predictor, tile_step_size=args.tile_step,
        mirroring=not args.no_mirroring)
    output = args.output or plan_profile.default_output(args.dataset, args.configuration)
    plan_profile.check_output(output)  # before the long run
    result = plan_profile.profile(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    plan_profile.write(result, output)
    print(json.dumps(result, indent=2) if args.json else plan_profile.format_table(result))
    print(f"profile written to {output}", file=sys.stderr)
    failed = [row["entry"] for row in result["results"] if "error" in row]
    if failed:
        print(f"nnunet-lightseg profile: {', '.join(failed)} could not be profiled (FAILED above)", file=sys.stderr)
    return EXIT_FAILED if failed else 0


def command_report(args) -> int:
    from nnunet_lightseg import report

    config = report.ReportConfig(args.dataset, args.configuration, reference=args.reference,
                                 profile_path=args.profile, surface=not args.no_surface,
                                 nsd_tolerance_mm=args.nsd_tolerance, output=args.output, force=args.force)
    built, written = report.make_report(config)
    print(built["summary"].to_string(index=False))
    print("\n".join(["", *built["notes"], "", "written:", *written]))
    return 0


def command_benchmark(args) -> int:
    from nnunet_lightseg.benchmark import BenchmarkConfig, run_benchmark
    from nnunet_lightseg.slurm import SlurmOptions

    config = BenchmarkConfig(output=args.output, datasets=tuple(args.datasets or ()), configuration=args.configuration,
                             trainers=tuple(args.trainers or ()), folds=tuple(args.folds), seeds=tuple(args.seeds),
                             epochs=args.epochs,
                             iterations=args.iterations, device=args.device, predictor=args.predictor,
                             profile=not args.no_profile, surface=not args.no_surface, force=args.force,
                             executor=args.executor, slurm=SlurmOptions(
                                 partition=args.partition, gpus_per_task=args.gpus_per_task,
                                 cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, time_min=args.time_min,
                                 max_parallel=args.max_parallel, sbatch=tuple(args.sbatch)),
                             wait=args.wait, save_every=args.save_every)
    result = run_benchmark(config, say=_say)
    return EXIT_FAILED if result.failures else 0


def command_status(args) -> int:
    from nnunet_lightseg import slurm

    if not os.path.isfile(os.path.join(args.output, slurm.GRID_FILE)):
        raise UsageError(f"{args.output} holds no SLURM grid ({slurm.GRID_FILE}): give the --output of a "
                         f"`benchmark --executor slurm`.")
    rows = slurm.grid_status(args.output)
    print(json.dumps(rows, indent=2) if args.json else slurm.format_status(rows))
    return EXIT_FAILED if any(row["state"] == "failed" for row in rows) else 0


def command_demo(args) -> int:
    from nnunet_lightseg.demo import DemoConfig, run_demo

    run_demo(DemoConfig(output=args.output, trainer=args.trainer, epochs=args.epochs, iterations=args.iterations,
                        device=args.device, use_nnunet_env=args.use_nnunet_env, force=args.force), say=_say)
    return 0


def command_export(args) -> int:
    from nnunet_lightseg.onnx_export import ExportConfig, export_fold

    metadata = export_fold(ExportConfig(args.dataset, args.configuration, args.trainer, args.fold, args.output,
                                        plans=args.plans, checkpoint=args.checkpoint, force=args.force))
    spatial = "dynamic" if metadata["input"]["dynamic_spatial_axes"] else "fixed to the patch size"
    batch = "dynamic" if metadata["input"]["dynamic_batch"] else "fixed to 1"
    difference = metadata["parity"]["max_probability_difference_at_patch"]
    print(f"exported {metadata['trainer_name']} fold {metadata['fold']} to {args.output} (batch axis {batch}, spatial "
          f"axes {spatial}; ONNX Runtime's probabilities within {difference:.1g} of torch's)")
    return 0


def command_predict(args) -> int:
    from nnunet_lightseg.predict import PredictConfig, predict

    records = predict(PredictConfig(args.input, args.output, onnx=tuple(args.onnx), runtime=args.runtime,
                                    dataset=args.dataset, configuration=args.configuration, trainer=args.trainer,
                                    folds=tuple(args.folds), plans=args.plans, checkpoint=args.checkpoint,
                                    tile_step_size=args.step_size, mirroring=not args.disable_tta,
                                    save_probabilities=args.save_probabilities, threads=args.threads,
                                    force=args.force), say=_say)
    print(f"{len(records)} cases in {sum(r['seconds'] for r in records):.1f} s, written to {args.output}")
    return 0


def command_selfcheck(args) -> int:
    from nnunet_lightseg.selfcheck import SelfCheckConfig, markdown, run_selfcheck

    result = run_selfcheck(SelfCheckConfig(output=args.output, device=args.device, trainers=tuple(args.trainers),
                                           iterations=args.iterations, force=args.force), say=_say)
    output = os.path.abspath(args.output)
    print("\n" + markdown(result))
    print(f"written: {os.path.join(output, 'selfcheck.json')}, {os.path.join(output, 'selfcheck.md')}")
    return 0 if result["passed"] else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-lightseg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", help=f"show an error's traceback (or set {DEBUG_VARIABLE}=1)")

    p = commands.add_parser("list", parents=[debug], help="every model with its trainers, paper and dimensionality")
    p.add_argument("--json", action="store_true")
    p.add_argument("--baselines", action="store_true", help="the baselines instead: nnU-Net's default, ResEnc M, MONAI")
    p.set_defaults(func=command_list)

    p = commands.add_parser(
        "profile", parents=[debug],
        help="a model in the paper's configuration (MODEL --in-channels --classes --patch), or every "
                        "trainer at a plan's patch size (-d DATASET -c CONFIGURATION)")
    p.add_argument("model", nargs="?", help="trainer name without the nnUNetTrainer prefix, e.g. UltraLightUNet_M")
    p.add_argument("--in-channels", type=int)
    p.add_argument("--classes", type=int)
    p.add_argument("--patch", type=int, nargs="+", help="D H W (3D) or H W (2D)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the latency (default: torch's)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-latency", action="store_true", help="count params and GMAC only")
    p.add_argument("--json", action="store_true")
    p.add_argument("-d", dest="dataset", help="with -c: profile trainers on this dataset's plan")
    p.add_argument("-c", dest="configuration", help="the plan's configuration, e.g. 3d_fullres")
    p.add_argument("--trainers", nargs="+", default=list(DEFAULT_TRAINERS),
                   help="TRAINER or TRAINER__PLANS (default: the paper models' default trainers; nnUNetTrainer is "
                        "always added as the reference)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--predictor", action="store_true",
                   help="also time nnUNetPredictor end to end on a random case of the plan's median shape (slow)")
    p.add_argument("--tile-step", type=float, default=0.5, help="predictor tile step (nnU-Net's default 0.5)")
    p.add_argument("--no-mirroring", action="store_true", help="predictor without test-time mirroring")
    p.add_argument("--output", help="profile JSON (default: <nnUNet_results>/<dataset>/lightseg_profile_<C>.json)")
    p.set_defaults(func=command_profile)

    p = commands.add_parser("report", parents=[debug],
                            help="tables, tests and plots of every trainer's results on a dataset")
    p.add_argument("-d", dest="dataset", required=True)
    p.add_argument("-c", dest="configuration", required=True)
    p.add_argument("--reference", help="the trainer (TRAINER or TRAINER__PLANS) the tests compare against "
                                       "(default: nnUNetTrainer)")
    p.add_argument("--profile", help="profile JSON (default: <nnUNet_results>/<dataset>/lightseg_profile_<C>.json)")
    p.add_argument("--no-surface", action="store_true", help="skip HD95 and NSD (they read every prediction)")
    p.add_argument("--nsd-tolerance", type=float, default=1.0, help="NSD tolerance in mm (default 1)")
    p.add_argument("--output", help="report folder (default ./lightseg-report-<dataset>-<C>)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=command_report)

    p = commands.add_parser(
        "benchmark", parents=[debug],
        help="train, validate, profile and report every trainer (the built-in demo data without -d)")
    p.add_argument("-d", dest="datasets", nargs="+", help="your datasets, one or more (default: the built-in demo "
                                                           "data); several add a cross-dataset summary")
    p.add_argument("-c", dest="configuration", help="configuration, e.g. 3d_fullres (with -d)")
    p.add_argument("--trainers", nargs="+", help="TRAINER or TRAINER__PLANS, e.g. "
                   "nnUNetTrainer__nnUNetResEncUNetMPlans (default: nnUNetTrainer and the paper models' trainers)")
    p.add_argument("--folds", type=int, nargs="+", default=[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[],
                   help="train each trainer and fold under these seeds (<trainer>..._seed<S>; default: unseeded, "
                        "as nnU-Net); the report gives mean ± std over seeds and folds")
    p.add_argument("--epochs", type=int, help="short schedule (demo default 5; with -d default nnU-Net's 1000); "
                                              "trains <trainer>_<E>epochs_<I>iters")
    p.add_argument("--iterations", type=int, help="iterations per epoch (demo default 20; with -d nnU-Net's 250); "
                                                  "validation runs a quarter as many")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--predictor", action="store_true", help="time nnUNetPredictor end to end in the profile")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--no-surface", action="store_true", help="skip HD95 and NSD in the report")
    p.add_argument("--output", default="lightseg-benchmark", help="working folder (default ./lightseg-benchmark)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument("--save-every", type=int, help="write checkpoint_latest.pth every N epochs (nnU-Net: 50), which an "
                                                  "interrupted or requeued fold resumes from")
    cluster = p.add_argument_group("SLURM (--executor slurm; docs/benchmarks.md)")
    cluster.add_argument("--executor", choices=("local", "slurm"), default="local",
                         help="local: one fold after another here (default); slurm: one array job of every fold "
                              "still to do, through submitit; returns once submitted")
    cluster.add_argument("--partition")
    cluster.add_argument("--gpus-per-task", type=int, default=0)
    cluster.add_argument("--cpus-per-task", type=int)
    cluster.add_argument("--mem-gb", type=float)
    cluster.add_argument("--time-min", type=int, default=24 * 60, help="time limit per task (default 1440); a task "
                                                                       "that reaches it is requeued and resumes")
    cluster.add_argument("--max-parallel", type=int, default=16, help="array tasks running at once (default 16)")
    cluster.add_argument("--sbatch", nargs="+", default=[], metavar="KEY=VALUE",
                         help="further sbatch options, e.g. --sbatch qos=high account=mylab")
    cluster.add_argument("--wait", action="store_true", help="wait for the grid, then profile and report")
    p.set_defaults(func=command_benchmark)

    p = commands.add_parser("status", parents=[debug], help="the SLURM grid of a benchmark: done, running, queued, "
                                                            "failed (with the error's last line)")
    p.add_argument("--output", default="lightseg-benchmark", help="the benchmark's --output")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=command_status)

    p = commands.add_parser("demo", parents=[debug],
                            help="generate demo data, plan, train a short CPU schedule, predict, evaluate")
    p.add_argument("--output", default="lightseg-demo", help="working folder (default ./lightseg-demo)")
    p.add_argument("--trainer", default="nnUNetTrainerUltraLightUNet", help="a trainer without schedule suffix")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--iterations", type=int, default=25,
                   help="training iterations per epoch (validation: a quarter as many)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--use-nnunet-env", action="store_true",
                   help="use the nnUNet_raw/_preprocessed/_results folders of your environment instead of --output")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=command_demo)

    p = commands.add_parser("export", parents=[debug], help="write a trained fold as an ONNX network with its plans "
                                                             "(for predict --onnx)")
    p.add_argument("-d", dest="dataset", required=True)
    p.add_argument("-c", dest="configuration", required=True)
    p.add_argument("-tr", dest="trainer", required=True, help="the trainer the fold was trained with")
    p.add_argument("-f", dest="fold", required=True, help="one fold: 0-4 or all")
    p.add_argument("-p", dest="plans", default="nnUNetPlans")
    p.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth")
    p.add_argument("-o", "--output", dest="output", required=True, help="the export folder")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=command_export)

    p = commands.add_parser("predict", parents=[debug],
                            help="nnU-Net's prediction in one process, a line per case: a trained model (-d -c -tr -f) "
                                 "or an ONNX export (--onnx)")
    p.add_argument("-i", dest="input", required=True, help="images as for nnUNetv2_predict (CASE_0000.nii.gz, ...)")
    p.add_argument("-o", dest="output", required=True)
    p.add_argument("--onnx", nargs="+", default=[], metavar="DIR",
                   help="folders written by `nnunet-lightseg export`, one fold each, averaged as nnU-Net averages "
                        "folds (instead of -d -c -tr -f)")
    p.add_argument("--runtime", choices=RUNTIMES,
                   help="what runs the --onnx network (default onnxruntime; openvino: pip install "
                        "'nnunet-lightseg[openvino]')")
    p.add_argument("-d", dest="dataset")
    p.add_argument("-c", dest="configuration")
    p.add_argument("-tr", dest="trainer")
    p.add_argument("-f", dest="folds", nargs="+", default=["0", "1", "2", "3", "4"],
                   help="folds to average (nnUNetv2_predict's default: 0 1 2 3 4)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans")
    p.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth")
    p.add_argument("-step_size", "--step_size", dest="step_size", type=float, default=0.5,
                   help="sliding-window tile step (nnU-Net's default 0.5)")
    p.add_argument("--disable_tta", action="store_true", help="no test-time mirroring (nnUNetv2_predict's flag)")
    p.add_argument("--save_probabilities", action="store_true")
    p.add_argument("--threads", type=int, help="CPU threads for the network (default: torch's)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=command_predict)

    p = commands.add_parser("selfcheck", parents=[debug],
                            help="train (compile off and on), predict and profile every default trainer on demo data "
                                 "on this machine's GPU or CPU; writes a JSON and a Markdown table")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="default: cuda when torch sees a GPU")
    p.add_argument("--trainers", nargs="+", default=[*DEFAULT_TRAINERS, "nnUNetTrainer"],
                   help="trainers without schedule suffix (default: the paper models' and nnU-Net's default)")
    p.add_argument("--iterations", type=int, default=3, help="training iterations of the one epoch (default 3)")
    p.add_argument("--output", default="lightseg-selfcheck", help="working folder (default ./lightseg-selfcheck)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=command_selfcheck)
    return parser


def main(argv=None) -> int:
    """Run one command; its errors become one line on stderr and the exit status."""
    args = build_parser().parse_args(argv)
    from nnunet_lightseg.registry import UnknownModelError, UnsupportedConfigurationError

    try:
        return args.func(args)
    except (UsageError, UnknownModelError, UnsupportedConfigurationError) as error:
        return _failed(args, error, EXIT_USAGE)
    except BenchmarkInterrupted as error:  # the shell's convention for a process stopped by a signal
        return _failed(args, error, 128 + error.signal_number)
    except LightSegError as error:
        return _failed(args, error, EXIT_FAILED)


def _failed(args, error: Exception, status: int) -> int:
    if args.debug or os.environ.get(DEBUG_VARIABLE):
        raise error
    print(f"nnunet-lightseg {args.command}: {error}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
