"""`sae-pipeline` command line: demo, run, train, score, models, review, generate-sample.

`run`, `train`, `score` and `demo` first check and plan without Prefect (`sae_pipeline.preflight`): a wrong
config, lake layout, `--partitions` value, column type or model is reported in a second or two, and a run with
nothing to do says so and stops without starting anything. Otherwise the command takes the output folder's lease,
starts an embedded Prefect server when no PREFECT_API_URL is set (`flows.embedded_server`), and runs the flow in
this process. Expected failures (bad config, bad input, bad or missing model, storage) print one `error:` line
naming the file, partition, column and rule (and at most a `hint:` line) and exit with status 2; anything else
exits 1; Ctrl-C exits 130 at any moment with one line that says how to finish the work. Prefect's logs and
tracebacks appear only with `--verbose`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from flows.alerts import add_alerts_command
from sae_pipeline.config import ConfigError, PipelineConfig, load_config
from sae_pipeline.incidents.commands import add_review_command
from sae_pipeline.lease import RunLease
from sae_pipeline.preflight import committed_since, plan_command
from sae_pipeline.registry.commands import add_models_command
from sae_pipeline.registry.errors import MissingChampionError
from sae_pipeline.schema import InputSchemaError
from sae_pipeline.storage import LakeReadError


@dataclass(frozen=True)
class SampleScenario:
    """A bundled sample: the config the demo runs, the lake it reads, the `sae_pipeline.sample_data` function that
    writes that lake, and the `generate-sample` options that function takes."""

    config: str
    lake: str
    generator: str
    options: tuple[str, ...]


SAMPLE_SCENARIOS = {
    # A fleet over time whose anomalies are only anomalous in context; the demo's default.
    "context": SampleScenario("sample_data/fleet.yaml", "sample_data/fleet", "generate_context_lake", ("days", "seed")),
    # Rows scored alone: spikes, broken correlations, rare categories, invalid rows and two drifted days.
    "telemetry": SampleScenario(
        "sample_data/telemetry.yaml",
        "sample_data/telemetry",
        "generate_sample_lake",
        ("days", "rows_per_day", "seed", "gradual_shift"),
    ),
}
#: `generate-sample` options passed on to a scenario's generator when given (its defaults apply otherwise).
_GENERATE_OPTIONS = ("days", "rows_per_day", "seed", "gradual_shift")
#: Where `demo --format delta|iceberg` writes the sample table, its config and its outputs (git-ignored).
DEMO_TABLES_FOLDER = "outputs"

#: Failures a user can fix (config, data, model, storage): one `error:` line and exit status 2.
_EXPECTED_ERRORS = (ConfigError, InputSchemaError, LakeReadError, ValueError, RuntimeError, OSError)
EXIT_ERROR, EXIT_UNEXPECTED, EXIT_INTERRUPTED = 2, 1, 130


def _quiet_prefect_environment(verbose: bool) -> None:
    """Defaults that keep an embedded Prefect fast and quiet; explicit environment settings win."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "sae_pipeline")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    # The server logs asyncio cancellations when it shuts down; they are noise, not failures.
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_UVICORN_LEVEL", "CRITICAL")


def _silence_console_logs() -> None:
    """Keep log records off the terminal (they still reach the Prefect API, so the UI shows them): without
    `--verbose` the command prints its summary and at most one `error:` line."""
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setLevel(logging.CRITICAL + 1)


class _Interruption:
    """Ctrl-C at any moment: one line that says what is kept and how to finish, then exit 130 at once.

    Exiting from the signal handler (rather than letting KeyboardInterrupt unwind) is deliberate: the interrupt can
    land inside Prefect or pydantic code that wraps it into another error, and partition tasks may still be writing
    on other threads. Nothing is lost by a hard exit: every output is staged and committed atomically, the lease
    names this (then dead) process so the next run takes it at once, and the server child dies with us."""

    def __init__(self):
        self.resume_advice = "nothing was written"

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._exit)

    def _exit(self, signum, frame) -> None:
        try:
            advice = self.resume_advice() if callable(self.resume_advice) else self.resume_advice
        except Exception:  # the advice is a courtesy: an unreadable ledger must not turn Ctrl-C into a traceback
            advice = "committed partitions are kept"
        sys.stdout.flush()
        # Straight to file descriptor 2: while a flow runs, sys.stderr may be a wrapper whose buffer os._exit drops.
        os.write(2, f"error: interrupted; {advice}\n".encode())
        os._exit(EXIT_INTERRUPTED)


def _compact_selection(names: list[str], order: list[str]) -> str:
    """`names` as a `--partitions` value: runs of partitions adjacent in the lake's order become FIRST..LAST."""
    position = {name: index for index, name in enumerate(order)}
    ranked = sorted(names, key=position.__getitem__)
    runs: list[list[str]] = []
    for name in ranked:
        if runs and position[name] == position[runs[-1][-1]] + 1:
            runs[-1].append(name)
        else:
            runs.append([name])
    return ",".join(run[0] if len(run) == 1 else f"{run[0]}..{run[-1]}" for run in runs)


def _resume_advice(args: argparse.Namespace, mode: str, config: PipelineConfig, plan, started: dt.datetime):
    """What the interrupt line says: plain runs resume by themselves; requested rescoring needs a command."""

    def advice() -> str:
        if getattr(args, "rescore_with", None):
            return "committed partitions are kept; rerun the same command to rescore the rest"
        to_score = plan.scoring.to_score if plan.scoring else {}
        requested = [name for name, reason in to_score.items() if reason in ("requested", "backfill")]
        if not requested:
            return "committed partitions are kept; the next run scores the rest"
        left = [name for name in requested if name not in committed_since(config, requested, started)]
        if not left:
            return "every requested partition was committed"
        command = "score" if mode == "score" else "run"
        selection = _compact_selection(left, [record.name for record in plan.partitions])
        return (
            f"{len(requested) - len(left)} of {len(requested)} requested partition(s) committed; to finish: "
            f"sae-pipeline {command} --config {args.config} --partitions {selection}"
        )

    return advice


def _command_flow(args: argparse.Namespace, mode: str) -> None:
    interruption = _Interruption()
    interruption.install()
    config = load_config(args.config)  # before anything else: a config error needs nothing more
    options = {
        name: getattr(args, name)
        for name in ("partitions", "backfill", "rescore_with", "model", "retrain", "as_of")
        if getattr(args, name, None) not in (None, False)
    }
    plan = plan_command(
        config,
        mode,
        **{name: options.get(name) for name in ("rescore_with", "model")},
        requested=options.get("partitions"),
        backfill=bool(options.get("backfill")),
        retrain=bool(options.get("retrain")),
        as_of=options.get("as_of"),
    )
    if plan.nothing_to_do:
        recorded = (
            " (PREFECT_API_URL is set, but no flow run was recorded there)" if os.environ.get("PREFECT_API_URL") else ""
        )
        print(f"nothing to do: {plan.describe()}; no flow run started{recorded}")
        return
    started = dt.datetime.now(dt.UTC)
    interruption.resume_advice = _resume_advice(args, mode, config, plan, started)
    # Holding the output folder before Prefect starts makes a second run stop at once with a clear message.
    with RunLease(config.output.lease_uri, f"cli-{os.getpid()}", config.run.lease_ttl_seconds):
        summary = _run_flow(args, mode, options)
    _print_summary(summary)


def _run_flow(args: argparse.Namespace, mode: str, options: dict):
    """Start the embedded server if needed, import the flows while it boots, run the combined flow here."""
    _quiet_prefect_environment(args.verbose)  # before Prefect is imported: it reads these once
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        from flows.embedded_server import EmbeddedServer, start_timeout_s

        server = EmbeddedServer(args.verbose)
        timeout_s = start_timeout_s()
        print(
            f"starting the embedded Prefect server (up to {timeout_s:g} s; set PREFECT_API_URL to use your own)",
            flush=True,
        )
        server.launch()
    from flows.lake_pipeline import PartitionFailures, run_in_process

    if not args.verbose:
        _silence_console_logs()
    if server is not None:
        server.wait_until_ready(timeout_s, on_retry=lambda message: print(message, flush=True))
    try:
        return run_in_process(config_path=args.config, mode=mode, progress=not args.no_progress, **options)
    except PartitionFailures as error:  # some partitions failed: show what was committed, then the error
        _print_summary(error.summary)
        raise


def _print_summary(summary) -> None:
    from sae_pipeline.runs import format_summary

    print(format_summary(summary))


def _command_demo(args: argparse.Namespace) -> None:
    args.config = args.config or SAMPLE_SCENARIOS[args.scenario].config
    config = Path(args.config)
    if not config.exists():
        raise ConfigError(f"{config} not found: run the demo from a checkout of sae-pipeline or pass --config")
    for scenario in SAMPLE_SCENARIOS.values():
        if args.config == scenario.config and not Path(scenario.lake).exists():
            _write_sample(scenario, scenario.lake, {})
    if args.format != "parquet":
        scenario = next((item for item in SAMPLE_SCENARIOS.values() if item.config == args.config), None)
        if scenario is None:
            raise ConfigError("demo --format applies to the bundled sample lakes: set lake.format in your own config")
        args.config = str(_sample_table_config(scenario, args.format))
        config = Path(args.config)
    print(f"sae-pipeline demo: validate, train, score and report on {config} with an embedded Prefect", flush=True)
    _command_flow(args, "run")


def _write_sample(scenario: SampleScenario, output: str, options: dict, table_format: str = "parquet") -> int:
    """Write `scenario`'s lake under `output` (its generator's defaults for the options not given), as Hive Parquet
    folders or as a Delta or Iceberg table; return the number of partitions."""
    from sae_pipeline import sample_data

    generator = getattr(sample_data, scenario.generator)
    if table_format == "parquet":
        return len(generator(output, **options))
    return sample_data.generate_sample_table(output, table_format, write_lake=generator, **options)


def _sample_table_config(scenario: SampleScenario, table_format: str) -> Path:
    """`scenario`'s lake as a Delta or Iceberg table under `outputs/sample-<lake>-<format>/` (written once) and a
    copy of its config that reads it (and, for Delta, writes Delta outputs); return the copy's path."""
    import yaml

    from sae_pipeline import sample_data

    folder = Path(DEMO_TABLES_FOLDER) / f"sample-{Path(scenario.lake).name}-{table_format}"
    raw = yaml.safe_load(Path(scenario.config).read_text())
    keys = raw["lake"]["partition_keys"]
    if table_format == "delta":
        raw["lake"] = {"format": "delta", "uri": "./lake", "partition_keys": keys}
        raw["output"] = {"uri": "./demo", "format": "delta"}
    else:
        catalog = {
            "uri": f"sqlite:///lake/{sample_data.ICEBERG_CATALOG_FILE}",
            "warehouse": f"lake/{sample_data.ICEBERG_WAREHOUSE}",
        }
        raw["lake"] = {
            "format": "iceberg",
            "table": sample_data.ICEBERG_TABLE,
            "catalog": catalog,
            "partition_keys": keys,
        }
        raw["output"] = {"uri": "./demo"}
    if not (folder / "lake").exists():
        _write_sample(scenario, str(folder / "lake"), {}, table_format)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _command_generate(args: argparse.Namespace) -> None:
    scenario = SAMPLE_SCENARIOS[args.scenario]
    given = {name: value for name in _GENERATE_OPTIONS if (value := getattr(args, name)) is not None}
    refused = sorted(set(given) - set(scenario.options))
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise ValueError(f"generate-sample --scenario {args.scenario} does not take {flags}")
    output = args.output or scenario.lake
    count = _write_sample(scenario, output, given, args.format)
    print(f"wrote {count} partition(s) under {output}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sae-pipeline", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def flow_command(name: str, help_text: str, config_help: str | None = None) -> argparse.ArgumentParser:
        """A command that runs the pipeline; `config_help` makes `--config` optional and says what it defaults to."""
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "--config",
            required=config_help is None,
            help="YAML config: a path or an s3:// URI" + (f" (default: {config_help})" if config_help else ""),
        )
        command.add_argument("--no-progress", action="store_true", help="hide progress bars")
        command.add_argument("--verbose", action="store_true", help="show Prefect's logs and full tracebacks")
        return command

    def scoring_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--partitions",
            nargs="+",
            metavar="SELECTION",
            help="score these partitions again: names and ranges FIRST..LAST (e.g. day=2026-11-01..day=2026-11-07)",
        )
        command.add_argument("--backfill", action="store_true", help="score every partition again")
        command.add_argument(
            "--rescore-with", metavar="VERSION", help="rescore every partition not yet scored by this model version"
        )
        command.add_argument(
            "--as-of",
            type=int,
            metavar="VERSION",
            help="read the table as it was: a Delta table version or an Iceberg snapshot id",
        )

    def training_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--retrain", action="store_true", help="train a new model from scratch")

    demo = flow_command("demo", "run the whole pipeline on a bundled sample lake", "the scenario's config")
    demo.add_argument(
        "--scenario",
        choices=sorted(SAMPLE_SCENARIOS),
        default="context",
        help="which sample lake (default: context); written on first use",
    )
    demo.add_argument(
        "--format",
        choices=("parquet", "delta", "iceberg"),
        default="parquet",
        help="read the sample lake as Parquet folders, a Delta table or an Iceberg table (delta also writes Delta)",
    )
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

    generate = commands.add_parser("generate-sample", help="write a synthetic sample lake")
    generate.add_argument(
        "--scenario",
        choices=sorted(SAMPLE_SCENARIOS),
        default="telemetry",
        help="telemetry (default): rows scored alone; context: a fleet of hosts over time",
    )
    generate.add_argument("--output", help="default: the scenario's folder under sample_data/")
    generate.add_argument("--days", type=int, help="default 10")
    generate.add_argument("--rows-per-day", type=int, help="telemetry only; default 2000")
    generate.add_argument("--seed", type=int, help="default 0")
    generate.add_argument(
        "--format",
        choices=("parquet", "delta", "iceberg"),
        default="parquet",
        help="Hive-style Parquet folders, a Delta table, or an Iceberg table in a SQLite catalog (OUTPUT/catalog.db)",
    )
    generate.add_argument(
        "--gradual-shift",
        type=float,
        metavar="INTENSITY",
        help="telemetry only: drift a little every day, up to INTENSITY times the drifted days' shift on the last day",
    )
    generate.set_defaults(handler=_command_generate)
    add_models_command(commands)
    add_review_command(commands)
    add_alerts_command(commands)
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
    return _one_line(error), getattr(error, "hint", None)


def _champion_if_it_may_move(args: argparse.Namespace) -> str | None:
    """The champion before `models promote` / `models rollback` (None for other commands)."""
    if getattr(args, "models_command", None) not in ("promote", "rollback"):
        return None
    from sae_pipeline.registry import ModelRegistry

    return ModelRegistry(load_config(args.config).output.models_uri).champion()


def _announce_champion_move(args: argparse.Namespace, before: str | None) -> None:
    """After `models promote` / `models rollback`: a `model.promoted` / `model.rolled-back` event when the champion
    moved and PREFECT_API_URL names a server (`flows.events.emit_outside_a_run`)."""
    command = getattr(args, "models_command", None)
    if command not in ("promote", "rollback") or getattr(args, "alias", "champion") != "champion":
        return
    from flows.events import emit_outside_a_run
    from sae_pipeline.alerts import champion_moved_event
    from sae_pipeline.registry import ModelRegistry

    config = load_config(args.config)
    after = ModelRegistry(config.output.models_uri).champion()
    if after != before and config.events.enabled:
        how = "rolled-back" if command == "rollback" else "promoted"
        emit_outside_a_run([champion_moved_event(config, before, after, how)])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        champion_before = _champion_if_it_may_move(args)
        args.handler(args)
        _announce_champion_move(args, champion_before)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        expected = isinstance(error, _EXPECTED_ERRORS)
        if verbose:
            traceback.print_exc()
        message, hint = _error_lines(error, args)
        if not expected:
            message = f"unexpected {type(error).__name__}: {message}"
            hint = hint or "rerun with --verbose for the traceback"
        print(f"error: {message}", file=sys.stderr)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        return EXIT_ERROR if expected else EXIT_UNEXPECTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
