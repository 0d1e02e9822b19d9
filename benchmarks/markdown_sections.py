"""Each benchmark owns one section of BENCHMARKS.md, between `<!-- NAME:start -->` and `<!-- NAME:end -->`."""

from __future__ import annotations

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
