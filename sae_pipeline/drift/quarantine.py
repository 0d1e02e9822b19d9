"""The quarantine section of a drift report: rows that never reached the model, and why.

Why in the drift report: a partition whose rows are increasingly rejected by validation drifts too, in a way the
column tests cannot see (they only read the valid rows). Reasons written as ``"column: rule"`` are also summed
per column.
"""

from __future__ import annotations

from sae_pipeline.drift.common import fraction


def quarantine_section(quarantined_rows: int | None, reasons: dict[str, int] | None, valid_rows: int) -> dict | None:
    """Quarantined rows and their reasons; per column from reasons written as ``"column: rule"``."""
    if quarantined_rows is None and not reasons:
        return None
    rows = int(quarantined_rows or 0)
    total = rows + valid_rows
    by_column: dict[str, int] = {}
    for reason, count in (reasons or {}).items():
        column = reason.split(":", 1)[0].strip()
        by_column[column] = by_column.get(column, 0) + int(count)
    return {
        "rows": rows,
        "rate": fraction(rows, total),
        "reasons": {reason: int(count) for reason, count in sorted((reasons or {}).items(), key=lambda i: -i[1])},
        "columns": {
            column: {"rows": count, "rate": fraction(count, total)}
            for column, count in sorted(by_column.items(), key=lambda item: -item[1])
        },
    }
