"""`sae-pipeline` command line: demo, run, train, score, models, generate-sample.

`run`, `train`, `score` and `demo` execute the Prefect flow in `flows/` (an embedded temporary Prefect server
starts when no PREFECT_API_URL is set). The flow module is imported only when such a command runs, so the
library itself never imports Prefect. Expected failures (bad config, bad input, bad or missing model, storage)
print one `error:` line naming the file, partition, column and rule (and at most a `hint:` line) and exit with
status 2; anything else exits 1, Ctrl-C exits 130. Prefect's logs and tracebacks appear only with `--verbose`.
The temporary server is a child process that dies with the command, even when it is killed with SIGKILL.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from pathlib import Path

from sae_pipeline.config import ConfigError, load_config
from sae_pipeline.lake import LakeReadError
from sae_pipeline.lease import RunLease
from sae_pipeline.registry.commands import add_models_command
from sae_pipeline.registry.errors import MissingChampionError
from sae_pipeline.schema import InputSchemaError

DEFAULT_SAMPLE_CONFIG = "sample_data/telemetry.yaml"
DEFAULT_SAMPLE_LAKE = "sample_data/telemetry"
#: Failures a user can fix (config, data, model, storage): one `error:` line and exit status 2.
_EXPECTED_ERRORS = (ConfigError, InputSchemaError, LakeReadError, ValueError, RuntimeError, OSError)
EXIT_ERROR, EXIT_UNEXPECTED, EXIT_INTERRUPTED = 2, 1, 130


def _quiet_prefect_environment(verbose: bool = False) -> None:
    """Defaults that keep an embedded Prefect fast and quiet; explicit environment settings win."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "sae_pipeline")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    # The temporary server logs asyncio cancellations when it shuts down; they are noise, not failures.
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_UVICORN_LEVEL", "CRITICAL")


def run_flow(config_path: str, mode: str, progress: bool = True, verbose: bool = False, **options):
    """Run the Prefect flow in this process and return its run summary (a `runs.RunSummary`)."""
    _quiet_prefect_environment(verbose)  # before Prefect is imported: it reads these once
    in_process = importlib.import_module("flows.in_process")
    return in_process.run(config_path=config_path, mode=mode, progress=progress, verbose=verbose, **options)


def _print_summary(summary) -> None:
    from sae_pipeline.runs import RunSummary, format_summary

    print(format_summary(RunSummary.model_validate(summary)))


def _command_flow(args: argparse.Namespace, mode: str) -> None:
    config = load_config(args.config)  # fail fast, before Prefect starts, on a missing or invalid config
    # Holding the output folder before Prefect starts makes a second run stop at once with a clear message.
    with RunLease(config.output.lease_uri, f"cli-{os.getpid()}", config.run.lease_ttl_seconds):
        try:
            _run_and_print(args, mode)
        except KeyboardInterrupt:
            # Leave at once, lease still held: partition tasks may still be writing in other threads, and exiting
            # stops them; the lease names this (then dead) process, so the next run here takes it at once.
            print("error: interrupted; committed partitions are kept, the next run redoes the rest", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(EXIT_INTERRUPTED)


def _run_and_print(args: argparse.Namespace, mode: str) -> None:
    options = {
        name: getattr(args, name)
        for name in ("partitions", "backfill", "rescore_with", "model", "retrain")
        if getattr(args, name, None) not in (None, False)
    }
    try:
        summary = run_flow(args.config, mode, progress=not args.no_progress, verbose=args.verbose, **options)
    except RuntimeError as error:
        if hasattr(error, "summary"):  # some partitions failed: show what was committed, then the error
            _print_summary(error.summary)
        raise
    _print_summary(summary)


def _command_demo(args: argparse.Namespace) -> None:
    config = Path(args.config)
    if not config.exists():
        raise ConfigError(f"{config} not found: run the demo from a checkout of sae-pipeline or pass --config")
    if args.config == DEFAULT_SAMPLE_CONFIG and not Path(DEFAULT_SAMPLE_LAKE).exists():
        from sae_pipeline.sample_data import generate_sample_lake

        generate_sample_lake(DEFAULT_SAMPLE_LAKE)
    print(f"sae-pipeline demo: validate, train, score and report on {config} with an embedded Prefect", flush=True)
    _command_flow(args, "run")


def _command_generate(args: argparse.Namespace) -> None:
    from sae_pipeline.sample_data import generate_sample_lake

    files = generate_sample_lake(
        args.output, days=args.days, rows_per_day=args.rows_per_day, seed=args.seed, gradual_shift=args.gradual_shift
    )
    print(f"wrote {len(files)} partition(s) under {args.output}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sae-pipeline", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def flow_command(name: str, help_text: str, default_config: str | None = None) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "--config", required=default_config is None, default=default_config, help="YAML config: a path or an s3:// URI"
        )
        command.add_argument("--no-progress", action="store_true", help="hide progress bars")
        command.add_argument("--verbose", action="store_true", help="show Prefect's logs and full tracebacks")
        return command

    def scoring_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--partitions", nargs="+", metavar="SELECTION",
            help="score these partitions again: names and ranges FIRST..LAST (e.g. day=2026-11-01..day=2026-11-07)",
        )
        command.add_argument("--backfill", action="store_true", help="score every partition again")
        command.add_argument(
            "--rescore-with", metavar="VERSION", help="rescore every partition not yet scored by this model version"
        )

    def training_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--retrain", action="store_true", help="train a new model from scratch")

    demo = flow_command("demo", "run the whole pipeline on the bundled sample data", DEFAULT_SAMPLE_CONFIG)
    demo.set_defaults(handler=_command_demo)
    run = flow_command("run", "train or update the model when there is new data, then score new partitions")
    scoring_options(run)
    training_options(run)
    run.set_defaults(handler=lambda a: _command_flow(a, "run"))
    train = flow_command("train", "train a model, or fine-tune the champion on new data")
    training_options(train)
    train.set_defaults(handler=lambda a: _command_flow(a, "train"))
    score = flow_command("score", "score new, changed or requested partitions with an existing model")
    scoring_options(score)
    score.add_argument("--model", help="model version, unique version prefix or alias (default: champion)")
    score.set_defaults(handler=lambda a: _command_flow(a, "score"))

    generate = commands.add_parser("generate-sample", help="write the synthetic telemetry lake")
    generate.add_argument("--output", default=DEFAULT_SAMPLE_LAKE)
    generate.add_argument("--days", type=int, default=10)
    generate.add_argument("--rows-per-day", type=int, default=2000)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument(
        "--gradual-shift", type=float, default=0.0, metavar="INTENSITY",
        help="drift a little every day, up to INTENSITY times the drifted days' shift on the last day",
    )
    generate.set_defaults(handler=_command_generate)
    add_models_command(commands)
    return parser


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _error_lines(error: BaseException, args: argparse.Namespace) -> tuple[str, str | None]:
    """The `error:` line (file, partition, column and rule are in the messages) and an optional short hint."""
    failed = getattr(getattr(error, "summary", None), "failed", None)  # a RunSummary's failed partitions
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more failed partition(s), listed above)" if len(failed) > 1 else ""
        return (
            f"{first.partition}: {_one_line(first.error)}{more}",
            "the other partitions were committed; fix the input and rerun (only failed partitions are redone)",
        )
    if isinstance(error, MissingChampionError):
        return _one_line(error), f"train first: sae-pipeline train --config {getattr(args, 'config', '...')}"
    return _one_line(error), None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.handler(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        expected = isinstance(error, _EXPECTED_ERRORS)
        if verbose:
            traceback.print_exc()
        message, hint = _error_lines(error, args)
        if not expected:
            message, hint = f"unexpected {type(error).__name__}: {message}", hint or "rerun with --verbose for the traceback"
        print(f"error: {message}", file=sys.stderr)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        return EXIT_ERROR if expected else EXIT_UNEXPECTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
