"""The drift-test registry: every column test declared once, with the column kinds it accepts and how to read it.

Why a registry: the method names, the column kinds each test applies to, the default thresholds and the reading
of a score (a p-value drifts when ``score <= threshold``, a distance when ``score >= threshold``) were repeated in
the config, the report schema, the statistics and two dispatch chains that disagreed on unknown names. Now each
test module (``ks.py``, ``psi.py``, ...) holds the test's function and one :class:`StatTest` passed to
:func:`register`, like Evidently's ``StatTest(name, allowed_feature_types, default_threshold)``; the config's
allowed names and kind checks, the report's ``method`` type, the HTML note and the dispatch all read it from here.
Adding a test is one new module plus its import in ``stattests/__init__.py``: tests register when that package is
imported, because the config's and the report's types are built from the registry when those modules load.

Every test reads the same input, :class:`ColumnCounts`: the reference and current counts of one column over the
same buckets, and for numeric columns also the fine reference bins (edges, counts and per-bin sums), so a test
never needs the rows themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

ColumnKind = Literal["numeric", "categorical"]
#: ``pvalue``: drift when score <= threshold; ``distance``: drift when score >= threshold.
Direction = Literal["pvalue", "distance"]
COLUMN_KINDS: tuple[ColumnKind, ...] = ("numeric", "categorical")


class UnknownStatTestError(ValueError):
    """No drift test is registered under this name; the message lists the registered ones."""


class StatTestKindError(ValueError):
    """The drift test does not apply to this kind of column; the message lists the ones that do."""


@dataclass(frozen=True)
class FineBins:
    """A numeric column's fine reference bins (see :mod:`..binning`): edges, and both samples' counts and sums."""

    edges: np.ndarray
    reference_counts: np.ndarray
    reference_sums: np.ndarray
    current_counts: np.ndarray
    current_sums: np.ndarray
    reference_std: float | None


@dataclass(frozen=True)
class ColumnCounts:
    """What a test reads of one column: reference and current counts over the same buckets.

    Buckets are the categories plus one for unseen ones (categorical columns), one per value (numeric columns
    with few exact values) or equal-frequency groups of the fine bins (other numeric columns). ``fine`` is set
    for numeric columns only.
    """

    reference: np.ndarray
    current: np.ndarray
    fine: FineBins | None = None


@dataclass(frozen=True)
class StatTestResult:
    """A test's score (read against the threshold as the test's direction says) and its raw statistic, if any."""

    score: float
    statistic: float | None = None


@dataclass(frozen=True)
class StatTest:
    """One registered drift test.

    name : the config and report name (``drift.numeric.method: ks``).
    title : the name a reader knows it by.
    column_kinds : kinds of column it applies to (``numeric`` tests need an ordered column).
    default_threshold : threshold used when the config gives none.
    direction : ``pvalue`` (drift when score <= threshold) or ``distance`` (drift when score >= threshold).
    function : ColumnCounts -> StatTestResult.
    note : what a reader must know to read the score (shown in the report), e.g. its normalisation.
    """

    name: str
    title: str
    column_kinds: tuple[ColumnKind, ...]
    default_threshold: float
    direction: Direction
    function: Callable[[ColumnCounts], StatTestResult]
    note: str = ""

    def applies_to(self, kind: str) -> bool:
        return kind in self.column_kinds

    def drifted(self, score: float | None, threshold: float) -> bool:
        """Whether ``score`` is past ``threshold`` in this test's direction (no score: no drift)."""
        if score is None:
            return False
        return score <= threshold if self.direction == "pvalue" else score >= threshold

    def severity(self, score: float | None, threshold: float) -> float:
        """How far past (> 1) or below (< 1) its threshold a score is, comparable across tests (for sorting)."""
        if score is None:
            return 0.0
        if self.direction == "pvalue":
            return float(math.log(max(score, 1e-300)) / math.log(threshold)) if threshold < 1 else 0.0
        return float(score / threshold)


_REGISTRY: dict[str, StatTest] = {}


def register(test: StatTest) -> StatTest:
    """Add ``test`` to the registry (once per name) and return it."""
    if test.name in _REGISTRY:
        raise ValueError(f"a drift test named {test.name!r} is already registered")
    if not test.column_kinds or not set(test.column_kinds) <= set(COLUMN_KINDS):
        raise ValueError(f"drift test {test.name!r}: column_kinds must be among {COLUMN_KINDS}")
    if test.direction not in ("pvalue", "distance"):
        raise ValueError(f"drift test {test.name!r}: direction must be 'pvalue' or 'distance'")
    _REGISTRY[test.name] = test
    return test


def registered_stattests(kind: str | None = None) -> tuple[StatTest, ...]:
    """The registered tests in registration order; only those that apply to ``kind`` when given."""
    return tuple(test for test in _REGISTRY.values() if kind is None or test.applies_to(kind))


def stattest_names(kind: str | None = None) -> tuple[str, ...]:
    """Names of the registered tests (that apply to ``kind`` when given)."""
    return tuple(test.name for test in registered_stattests(kind))


def describe_available() -> str:
    """The registered names, each numeric-only (or otherwise restricted) one marked: for error messages."""
    return ", ".join(
        test.name
        if set(test.column_kinds) == set(COLUMN_KINDS)
        else f"{test.name} ({'/'.join(test.column_kinds)} columns only)"
        for test in registered_stattests()
    )


def get_stattest(name: str, kind: str | None = None) -> StatTest:
    """The test registered as ``name``; raises when there is none, or when it does not apply to ``kind``."""
    test = _REGISTRY.get(name)
    if test is None:
        raise UnknownStatTestError(f"unknown drift test {name!r}; available: {describe_available()}")
    if kind is not None and not test.applies_to(kind):
        raise StatTestKindError(kind_error(test, kind))
    return test


def kind_error(test: StatTest, kind: str) -> str:
    """The sentence that refuses ``test`` for a ``kind`` column, naming the tests that do apply."""
    return (
        f"method {test.name!r} only applies to {'/'.join(test.column_kinds)} columns "
        f"({kind} columns: {', '.join(stattest_names(kind))})"
    )
