"""What every benchmark does with its result: print the JSON, optionally save it, and rewrite its own section of
BENCHMARKS.md (between `<!-- NAME:start -->` and `<!-- NAME:end -->`), quoting the command that produced it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def update_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the named section's text, appending the section (or creating the file) when it is missing."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEach section is written by its script.\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n{block}\n"
    path.write_text(text)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument("--no-markdown", action="store_true", help=f"do not update {BENCHMARKS_MD.name}")


def publish(result: dict, args: argparse.Namespace, section: str, render: Callable[[dict, str], str]) -> None:
    """Print `result` as JSON, write it to `--json`, and render it into its section unless `--no-markdown`."""
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    if not args.no_markdown:
        command = "python " + " ".join(["benchmarks/" + Path(sys.argv[0]).name, *sys.argv[1:]])
        update_section(section, render(result, command))
