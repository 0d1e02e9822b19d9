"""Drift tests for one column, one module each, declared once in a registry (see :mod:`.registry`).

    get_stattest("ks", kind="numeric")        # the StatTest, or an error listing the available names
    stattest_names("categorical")             # ("chisquare", "jensenshannon", "psi")
    choose_method(kind, reference_rows, n_unique, small_reference_rows, low_cardinality)  # the default's name

Importing this package registers every test below, in the order given here: it is the order of the names
everywhere (config errors, the report schema, the HTML note).
It imports nothing from the rest of the drift package or the config, so :mod:`sae_pipeline.config` can derive its
allowed names from it.
"""

from sae_pipeline.drift.stattests.chisquare import CHISQUARE
from sae_pipeline.drift.stattests.choice import choose_method
from sae_pipeline.drift.stattests.jensenshannon import JENSENSHANNON
from sae_pipeline.drift.stattests.ks import KS
from sae_pipeline.drift.stattests.psi import PSI
from sae_pipeline.drift.stattests.registry import (
    COLUMN_KINDS,
    ColumnCounts,
    ColumnKind,
    FineBins,
    StatTest,
    StatTestKindError,
    StatTestResult,
    UnknownStatTestError,
    describe_available,
    get_stattest,
    kind_error,
    register,
    registered_stattests,
    stattest_names,
)
from sae_pipeline.drift.stattests.wasserstein import WASSERSTEIN

for _test in (KS, WASSERSTEIN, CHISQUARE, JENSENSHANNON, PSI):
    register(_test)

__all__ = [
    "COLUMN_KINDS",
    "ColumnCounts",
    "ColumnKind",
    "FineBins",
    "StatTest",
    "StatTestKindError",
    "StatTestResult",
    "UnknownStatTestError",
    "choose_method",
    "describe_available",
    "get_stattest",
    "kind_error",
    "register",
    "registered_stattests",
    "stattest_names",
]
