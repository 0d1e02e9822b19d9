"""`sae-pipeline models list|show|promote|rollback`: inspect the registry and move aliases by hand.

`models list` also shows each version's precision on reviewed incidents; `promote` and `rollback` say which scored
partitions keep another version's scores and print the command that rescores them.

These commands read and write only the models folder (no Prefect, no training), so they answer in about a second.
Errors are RegistryError or ConfigError (both ValueErrors), which the command line prints as one `error:` line.
"""

from __future__ import annotations

import argparse
import json

from sae_pipeline.config import load_config
from sae_pipeline.registry.artifact import REPLAY_FILE, read_manifest, read_metadata
from sae_pipeline.registry.store import ModelRegistry, VersionInfo


def _registry(args: argparse.Namespace) -> ModelRegistry:
    return ModelRegistry(load_config(args.config).output.models_uri)


def _reviewed_precision(args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    """Per model version: (incidents reviewed `anomaly`, incidents reviewed), from the incidents table."""
    from sae_pipeline.incidents.reviews import precision_by_version, read_reviews

    return precision_by_version(read_reviews(load_config(args.config)))


def _precision(counts: tuple[int, int] | None) -> str:
    return "-" if not counts else f"{counts[0] / counts[1]:.0%} of {counts[1]}"


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows])
    return "\n".join(lines)


def _metric(info: VersionInfo, name: str) -> str:
    value = info.validation_metrics.get(name)
    return "-" if value is None else f"{value:.4g}"


def _command_list(args: argparse.Namespace) -> None:
    registry = _registry(args)
    infos = registry.versions()
    if not infos:
        print(f"no models under {registry.models_uri}: train one with `sae-pipeline train --config {args.config}`")
        return
    precision = _reviewed_precision(args)
    header = [
        "version",
        "created (UTC)",
        "kind",
        "parent",
        "partitions",
        "rows",
        "val. mean score",
        "reviewed precision",
        "aliases",
    ]
    rows = [
        [
            info.version,
            f"{info.created_at:%Y-%m-%d %H:%M}",
            info.training_kind,
            info.parent_version or "-",
            str(len(info.trained_on)),
            f"{info.training_rows:,}",
            _metric(info, "trimmed_mean_score"),
            _precision(precision.get(info.version)),
            ", ".join(info.aliases) or "-",
        ]
        for info in infos
    ]
    print(f"{len(infos)} model version(s) under {registry.models_uri}, newest first")
    print(_format_table(header, rows))
    if precision:
        print("reviewed precision: share of a version's reviewed incidents confirmed anomalous (`sae-pipeline review`)")


def _command_show(args: argparse.Namespace) -> None:
    registry = _registry(args)
    version = registry.resolve(args.version)
    uri = registry.uri(version)
    manifest = read_manifest(uri)
    metadata = read_metadata(uri, manifest)
    aliases = sorted(alias for alias, target in registry.aliases().items() if target == version)
    details = {
        "version": version,
        "uri": uri,
        "aliases": aliases,
        "created_at": metadata.created_at.isoformat(),
        "training_kind": metadata.training_kind,
        "parent_version": metadata.parent_version,
        "config_name": metadata.config_name,
        "config_hash": metadata.config_hash,
        "trained_on": metadata.trained_on,
        "training_rows": metadata.training_rows,
        "data_fingerprints": metadata.data_fingerprints,
        "target_fpr": metadata.target_fpr,
        "threshold": manifest["threshold"],
        "validation_metrics": metadata.validation_metrics,
        "training_report": manifest["training_report"],
        "detector_params": manifest["params"],
        "replay": {**manifest["replay"], "uri": f"{uri}/{REPLAY_FILE}"} if "replay" in manifest else None,
        "library_versions": metadata.library_versions,
    }
    if args.json:
        print(json.dumps(details, indent=2, default=str))
        return
    for key, value in details.items():
        if isinstance(value, dict) and value:
            print(f"{key}:")
            for name, item in value.items():
                print(f"  {name}: {item}")
        elif isinstance(value, list):
            print(f"{key}: {', '.join(map(str, value)) or '-'}")
        else:
            print(f"{key}: {'-' if value in (None, '', {}) else value}")


def _command_promote(args: argparse.Namespace) -> None:
    registry = _registry(args)
    version = registry.resolve(args.version)
    if args.alias == ModelRegistry.CHAMPION:
        previous = registry.promote(version, args.reason)
    else:
        previous = registry.aliases().get(args.alias)
        registry.set_alias(args.alias, version, args.reason)
    print(f"{args.alias}: {previous or '(none)'} -> {version}")
    if args.alias == ModelRegistry.CHAMPION:
        _print_stale(args)


def _command_rollback(args: argparse.Namespace) -> None:
    before, after = _registry(args).rollback(args.reason)
    print(f"{ModelRegistry.CHAMPION}: {before} -> {after} (rolled back)")
    _print_stale(args)


def _print_stale(args: argparse.Namespace) -> None:
    """After the champion moved: which partitions keep another version's scores, and the command that rescores
    them."""
    from sae_pipeline.runs import stale_partitions

    stale = stale_partitions(load_config(args.config), args.config)
    if stale is not None:
        print(f"{len(stale.partitions)} scored partition(s) keep the scores of another version; to rescore them:")
        print(f"  {stale.command}")


def add_models_command(subparsers) -> None:
    """Add `models` and its subcommands to the `sae-pipeline` parser's subcommands."""
    models = subparsers.add_parser("models", help="list, inspect, promote and roll back trained models")
    commands = models.add_subparsers(dest="models_command", required=True)

    def command(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("--config", required=True, help="YAML config (its output folder holds the models)")
        parser.set_defaults(handler=handler)
        return parser

    command("list", "the model versions, newest first, with their aliases", _command_list)
    show = command("show", "everything recorded about one version", _command_show)
    show.add_argument("version", help="version, unique version prefix, or alias")
    show.add_argument("--json", action="store_true", help="print machine-readable JSON")
    promote = command("promote", "point an alias (default: champion) at a version", _command_promote)
    promote.add_argument("version", help="version, unique version prefix, or alias")
    promote.add_argument("--alias", default=ModelRegistry.CHAMPION, help="alias to move (default: champion)")
    promote.add_argument("--reason", default="promoted with `sae-pipeline models promote`", help="kept in history")
    rollback = command("rollback", "point champion back at the version it replaced", _command_rollback)
    rollback.add_argument("--reason", default="rolled back with `sae-pipeline models rollback`", help="kept in history")
