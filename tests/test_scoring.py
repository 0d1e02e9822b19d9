"""Tests for per-row explanations: residuals summed back to source columns, largest first."""

from __future__ import annotations

import numpy as np

from sae_pipeline.scoring import top_features as top_features_arrow


def top_features(residuals, sources, k):
    return top_features_arrow(residuals, sources, k).to_pylist()


SOURCES = ["amount", "disk", "disk", "country", "country", "country"]  # disk + disk__missing, 3 one-hot levels


def test_one_hot_residuals_are_aggregated_to_their_source_column():
    # country's levels are each smaller than amount's residual, but their sum is larger.
    residuals = np.array([[1.0, 0.1, 0.1, 0.4, 0.4, 0.4]])
    assert top_features(residuals, SOURCES, 3) == [["country", "amount", "disk"]]


def test_sources_are_ordered_largest_first_per_row():
    residuals = np.array(
        [
            [5.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 2.0, 0.0, 0.0, 0.0],
            [0.5, 0.0, 0.0, 0.0, 0.0, 1.0],
        ]
    )
    assert top_features(residuals, SOURCES, 2) == [["amount", "disk"], ["disk", "amount"], ["country", "amount"]]
    ranked = top_features(residuals, SOURCES, 3)
    assert [row[0] for row in ranked] == ["amount", "disk", "country"]
    assert ranked[1] == ["disk", "amount", "country"]
    assert ranked[2] == ["country", "amount", "disk"]


def test_ties_keep_feature_order():
    residuals = np.zeros((1, len(SOURCES)))
    assert top_features(residuals, SOURCES, 3) == [["amount", "disk", "country"]]


def test_k_larger_than_number_of_sources_is_clipped():
    residuals = np.random.default_rng(0).random((4, len(SOURCES)))
    result = top_features(residuals, SOURCES, 10)
    assert len(result) == 4
    assert all(sorted(row) == ["amount", "country", "disk"] for row in result)


def test_each_source_named_at_most_once_and_result_is_plain_strings():
    residuals = np.random.default_rng(1).random((50, len(SOURCES)))
    result = top_features(residuals, SOURCES, 2)
    assert all(len(row) == 2 and len(set(row)) == 2 for row in result)
    assert all(isinstance(name, str) for row in result for name in row)


def test_matches_brute_force_ranking():
    rng = np.random.default_rng(2)
    residuals = rng.random((30, len(SOURCES))) ** 3
    for row, names in zip(residuals, top_features(residuals, SOURCES, 3)):
        per_source = {s: sum(r for r, src in zip(row, SOURCES) if src == s) for s in dict.fromkeys(SOURCES)}
        assert names == sorted(per_source, key=lambda s: -per_source[s])


def test_ranking_is_a_stable_descending_sort_with_many_ties():
    terms = np.random.default_rng(3).integers(0, 4, size=(500, 12)).astype(float)
    sources = [f"column_{number}" for number in range(12)]
    expected = np.argsort(-terms, axis=1, kind="stable")[:, :5]
    assert top_features(terms, sources, 5) == [[sources[number] for number in row] for row in expected]


def test_empty_batch_gives_empty_list():
    assert top_features(np.zeros((0, len(SOURCES))), SOURCES, 3) == []
