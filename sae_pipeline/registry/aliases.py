"""`aliases.json`: which version each alias names, and a bounded history of every alias move.

The whole document is replaced in one write (`storage.write_json`: temp + move locally, one PUT on S3), so readers
always see a consistent set of aliases. Moves are read-modify-write without a lock: two simultaneous moves can
lose one of them, which is acceptable for operator-driven promotions but not for racing automated writers.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pyarrow.fs as pafs

from sae_pipeline import storage
from sae_pipeline.registry.errors import RegistryError

ALIASES_FILE = "aliases.json"
FORMAT_VERSION = 1
HISTORY_LIMIT = 200
ALIAS_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*")


def check_alias_name(alias: str) -> None:
    if not ALIAS_PATTERN.fullmatch(alias):
        raise RegistryError(
            f"invalid alias name {alias!r}: use lowercase letters, digits, '-' and '_', starting with a letter or digit"
        )


def empty_document() -> dict:
    return {"format_version": FORMAT_VERSION, "aliases": {}, "history": []}


def read_document(uri: str) -> dict:
    """The aliases document at `uri`; an empty one when the file does not exist yet."""
    fs, path = storage.filesystem_for(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return empty_document()
    try:
        document = json.loads(storage.read_bytes(uri))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RegistryError(f"{uri}: not valid JSON (restore it or delete it to drop every alias): {error}") from error
    if not isinstance(document, dict) or document.get("format_version") != FORMAT_VERSION:
        found = document.get("format_version") if isinstance(document, dict) else type(document).__name__
        raise RegistryError(f"{uri}: expected an aliases document with format_version {FORMAT_VERSION}, found {found}")
    if not isinstance(document.get("aliases"), dict) or not isinstance(document.get("history"), list):
        raise RegistryError(f"{uri}: an aliases document needs an 'aliases' mapping and a 'history' list")
    return document


def record_move(document: dict, alias: str, version: str, reason: str, now: dt.datetime) -> dict:
    """A new document with `alias` pointing at `version` and the move appended to history."""
    aliases = dict(document["aliases"])
    previous = aliases.get(alias)
    aliases[alias] = version
    entry = {"alias": alias, "version": version, "previous": previous, "at": now.isoformat(), "reason": reason}
    history = [*document["history"], entry][-HISTORY_LIMIT:]
    return {"format_version": FORMAT_VERSION, "aliases": dict(sorted(aliases.items())), "history": history}


def earlier_holders(document: dict, alias: str) -> list[str]:
    """The versions `alias` pointed at before its current one, most recent first, as a stack.

    Replays the history: a move to a new version pushes it; a move back to the version below the top (a
    rollback, or promoting the previous holder again) pops. So repeated rollbacks walk further back instead of
    toggling between two versions. A removal of the alias (version None, written by older versions) clears the stack.
    """
    stack: list[str] = []
    for entry in document["history"]:
        if entry["alias"] != alias:
            continue
        if entry["version"] is None:
            stack = []
        elif not stack and entry["previous"] is not None:  # history older than the kept window
            stack = [entry["previous"], entry["version"]]
        elif len(stack) >= 2 and stack[-2] == entry["version"]:
            stack.pop()
        elif not stack or stack[-1] != entry["version"]:
            stack.append(entry["version"])
    return stack[-2::-1]
