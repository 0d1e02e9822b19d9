"""The default drift test of a column when the config names none: the one place that choice is made.

Evidently-like: numeric columns with more than ``low_cardinality`` distinct reference values get KS (reference of
at most ``small_reference_rows`` rows, where a p-value is meaningful) or the normalised Wasserstein distance
(larger references, where every p-value would be tiny); categorical and low-cardinality numeric columns get
chi-square or Jensen-Shannon by the same rule.
"""

from __future__ import annotations

from sae_pipeline.drift.stattests.chisquare import CHISQUARE
from sae_pipeline.drift.stattests.jensenshannon import JENSENSHANNON
from sae_pipeline.drift.stattests.ks import KS
from sae_pipeline.drift.stattests.wasserstein import WASSERSTEIN


def choose_method(
    kind: str, reference_rows: int, n_unique: int, small_reference_rows: int, low_cardinality: int
) -> str:
    """The default test's name from the column's kind, the reference size and its number of distinct values.

    A name, not the test: the caller looks it up in the registry like a configured name, so both go one way.
    """
    small = reference_rows <= small_reference_rows
    if kind == "numeric" and n_unique > low_cardinality:
        return KS.name if small else WASSERSTEIN.name
    return CHISQUARE.name if small else JENSENSHANNON.name
