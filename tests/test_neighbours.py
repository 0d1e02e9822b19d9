"""The kNN search behind the density term: the index of k-means cells against exact search."""

from __future__ import annotations

import numpy as np
import torch

from sae_pipeline.neighbours import MIN_ROWS_FOR_CELLS, cell_index, fit_cells, neighbour_gaps


def low_rank_rows(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(6, 16))
    return torch.as_tensor(rng.normal(size=(n, 6)) @ loadings + 0.1 * rng.normal(size=(n, 16)), dtype=torch.float32)


def test_indexed_search_misses_few_neighbours_and_only_by_a_little():
    """Smooth low-rank rows are the index's hard case (on four benchmark sets 92%-99.98% of rows get exact
    neighbours; here 65%, where probing a twelfth of the cells gave 92%). What a missed neighbour costs stays small:
    the mean squared distance grows 0.6% on average, by more than 5% for 1.9% of rows and at most 16%."""
    reference, queries = low_rank_rows(6_000, seed=0), low_rank_rows(5_000, seed=1)
    cells = fit_cells(reference, seed=0)
    assert cells.shape == (round(6_000**0.5), 16)
    exact = neighbour_gaps(queries, reference, 5).mean(dim=1)
    indexed = neighbour_gaps(queries, reference, 5, cells).mean(dim=1)
    same = torch.isclose(indexed, exact, rtol=1e-5)
    assert same.float().mean() >= 0.6
    assert (indexed[~same] >= exact[~same]).all()  # a missed neighbour can only be a farther one
    excess = (indexed - exact) / exact
    assert excess.mean() < 0.01 and (excess > 0.05).float().mean() < 0.03 and excess.max() < 0.25


def test_reference_rows_are_not_their_own_neighbours_in_either_search():
    reference = low_rank_rows(5_000, seed=2)
    cells = fit_cells(reference, seed=0)
    rows = torch.arange(reference.shape[0])
    for searched_cells in (None, cells):
        gaps = neighbour_gaps(reference, reference, 3, searched_cells, in_reference=rows).mean(dim=1)
        assert (gaps > 0).all()


def test_small_references_are_searched_exactly():
    assert fit_cells(low_rank_rows(MIN_ROWS_FOR_CELLS - 1, seed=3), seed=0).shape[0] == 0


def test_rows_whose_probed_cells_hold_fewer_than_k_rows_fall_back_to_exact_search():
    reference, queries = low_rank_rows(MIN_ROWS_FOR_CELLS, seed=4), low_rank_rows(300, seed=5)
    cells = fit_cells(reference, seed=0)
    k = MIN_ROWS_FOR_CELLS // 2  # more than the probed sixth of the cells can hold
    np.testing.assert_allclose(
        neighbour_gaps(queries, reference, k, cells).numpy(), neighbour_gaps(queries, reference, k).numpy(), rtol=1e-4
    )


def test_narrow_search_finds_what_a_one_cell_probe_of_the_index_finds():
    """The narrow search runs cell by cell; it must find the neighbours that probing each row's nearest cell of the
    index finds (what the detector's two stages rely on: they are among the wide search's candidates)."""
    reference, queries = low_rank_rows(6_000, seed=6), low_rank_rows(3_000, seed=7)
    cells = fit_cells(reference, seed=0)
    own = torch.full((queries.shape[0],), -1)
    own[:500] = torch.arange(500)  # the first rows are reference rows too: not their own neighbours
    queries[:500] = reference[:500]
    for k, in_reference in ((5, None), (5, own), (400, None)):  # k = 400: many cells hold too few rows
        narrow = neighbour_gaps(queries, reference, k, cells, in_reference, narrow=True)
        probed = cell_index(reference, cells).nearest(queries, k, in_reference, n_probe=1)
        short = (probed < 0).any(dim=1)
        by_probe = (reference[probed.clamp(min=0)] - queries.unsqueeze(1)).square().mean(dim=1)
        np.testing.assert_allclose(narrow[~short].numpy(), by_probe[~short].numpy(), rtol=1e-5)
        exact = neighbour_gaps(queries[short], reference, k, in_reference=None if in_reference is None else own[short])
        np.testing.assert_allclose(narrow[short].numpy(), exact.numpy(), rtol=1e-4)


def test_the_index_of_a_reference_is_built_once_and_rebuilt_when_it_changes():
    reference, queries = low_rank_rows(5_000, seed=8), low_rank_rows(200, seed=9)
    cells = fit_cells(reference, seed=0)
    index = cell_index(reference, cells)
    assert cell_index(reference, cells) is index
    reference.mul_(2)  # in place: the same tensor, other rows
    assert cell_index(reference, cells) is not index
    fresh = reference.clone()  # another tensor: an index of its own
    assert torch.equal(neighbour_gaps(queries, reference, 3, cells), neighbour_gaps(queries, fresh, 3, cells))
