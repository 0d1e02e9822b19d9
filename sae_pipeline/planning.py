"""What a scoring run has to do: compare the lake with the ledger and the user's request.

A partition is scored when it is new, when its files changed since it was scored (its fingerprint differs),
when the user names it (`--partitions`), asks for everything (`--backfill`), or asks to rescore with a model
version that did not score it (`--rescore-with`). Partitions in the ledger that left the lake are `removed`:
their outputs are deleted so readers never see scores of data that no longer exists.
"""

from __future__ import annotations

from sae_pipeline.records import ScoringPlan

__all__ = ["ScoringPlan", "SelectionError", "compare_with_ledger", "select_partitions"]


class SelectionError(ValueError):
    """A `--partitions` selection that is malformed or names nothing in the lake."""


def select_partitions(spec: list[str] | None, available: list[str]) -> list[str] | None:
    """Resolve a selection: partition names and inclusive ranges `FIRST..LAST` (in the lake's sort order).

    Items may also be comma-separated inside one string. `None` selects nothing in particular.
    """
    if spec is None:
        return None
    items = [item.strip() for entry in spec for item in entry.split(",") if item.strip()]
    position = {name: index for index, name in enumerate(available)}
    chosen: list[str] = []
    for item in items:
        if ".." in item:
            first, _, last = item.partition("..")
            missing = [end for end in (first, last) if end not in position]
            if missing:
                raise SelectionError(f"partition range {item!r}: {missing} not in the lake")
            if position[first] > position[last]:
                raise SelectionError(f"partition range {item!r} is empty: {first} comes after {last}")
            chosen += available[position[first] : position[last] + 1]
        elif item in position:
            chosen.append(item)
        else:
            raise SelectionError(f"partition {item!r} is not in the lake (it has {len(available)} partitions)")
    if not chosen:
        raise SelectionError("the partition selection is empty")
    return list(dict.fromkeys(chosen))


def compare_with_ledger(
    fingerprints: dict[str, str],
    committed: dict[str, tuple[str, str]],
    model_version: str,
    requested: list[str] | None = None,
    backfill: bool = False,
    rescore: bool = False,
) -> ScoringPlan:
    """Decide per partition what to score and why. `fingerprints`: the lake's partitions now; `committed`: ledger
    name -> (fingerprint, model version that scored it); `rescore`: rescore partitions that `model_version` did not
    score."""
    to_score: dict[str, str] = {}
    up_to_date: list[str] = []
    wanted = set(requested or ())
    for name, fingerprint in fingerprints.items():
        previous = committed.get(name)
        if name in wanted:
            reason = "requested"
        elif backfill:
            reason = "backfill"
        elif previous is None:
            reason = "new"
        elif previous[0] != fingerprint:
            reason = "changed"
        elif rescore and previous[1] != model_version:
            reason = f"rescore with {model_version}"
        else:
            up_to_date.append(name)
            continue
        to_score[name] = reason
    return ScoringPlan(to_score=to_score, up_to_date=up_to_date, removed=sorted(set(committed) - set(fingerprints)))
