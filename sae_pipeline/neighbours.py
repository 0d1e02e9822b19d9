"""The nearest reference rows of each row: the search behind the detector's kNN density term.

Exact search compares every row with every reference row: reference_rows x n_features multiply-adds and a top-k
over reference_rows per row, about 90% of the default model's scoring time on a CPU. With `cells`, the search is an
inverted-file index (faiss `IndexIVFFlat`): the reference is split into k-means cells, and a row is compared only
with the members of its nearest `PROBE_SHARE` (a twenty-fourth) of the cells: about 420 of 10,000 reference rows.
On four benchmark sets (donors, magic.gamma, shuttle, smtp) 92-99.98% of the rows found neighbours exactly as near as
the exact ones (the rest slightly farther ones, so a slightly higher score), at 7-11x less time than exact search;
`python benchmarks/neighbour_search.py` measures it. Probing a twelfth instead took about twice the search time and
gave the same mean AUC-ROC to four decimals in all three protocols of the detection benchmark (BENCHMARKS.md).
A narrow search (`narrow=True`) compares a row with the members of its nearest cell alone. Those members are among
the wide search's candidates, so its neighbours are never nearer: the detector searches wide again only the rows
whose narrow score comes near its threshold. The narrow search runs cell by cell, an exact search of the cell's
members for all of its rows (faiss `knn`), not as a one-cell probe of the index, which scans row by row: it finds
the same neighbours in 0.7-2.0 us per row against 1.9-3.0 on four real sets (BENCHMARKS.md).

The cells' centroids are fitted state saved with the model: a loaded model rebuilds the same index and finds the same
neighbours. The index (`CellIndex`: each reference row's cell, faiss's inverted lists) is built on a model's first
search and kept for the next batches and partitions (`cell_index`). The index is a shortcut for CPUs: on an
accelerator the search stays exact, since there it is a matrix product per block of rows, and faiss (CPU build)
would move every batch back to the host.
"""

from __future__ import annotations

import math

import faiss
import numpy as np
import torch

from sae_pipeline.recent import RecentlyUsed

#: References smaller than this are searched exactly (exact search is cheap there, and k-means needs rows).
MIN_ROWS_FOR_CELLS = 4_096
#: Share of the cells a row is compared with (its nearest ones).
PROBE_SHARE = 1 / 24
_GAP_CHUNK = 8_192  # rows per block of (rows x k x n_features) gaps
_EXACT_CHUNK = 2_048  # query rows per block of exact distances: 2,048 x reference rows


def fit_cells(reference: torch.Tensor, seed: int) -> torch.Tensor:
    """k-means centroids that split `reference` into about sqrt(rows) cells; (0, n_features) = search exactly."""
    n_rows, n_features = reference.shape
    if n_rows < MIN_ROWS_FOR_CELLS:
        return reference.new_zeros((0, n_features))
    kmeans = faiss.Kmeans(n_features, round(math.sqrt(n_rows)), niter=20, seed=seed, verbose=False)
    kmeans.train(_as_faiss(reference))
    return torch.as_tensor(kmeans.centroids.copy())


def searches_cells(X: torch.Tensor, cells: torch.Tensor | None) -> bool:
    """Whether `neighbour_gaps` searches X through the cell index (else exactly, and `narrow` changes nothing)."""
    return cells is not None and cells.shape[0] > 0 and X.device.type == "cpu"


def wide_probe(n_cells: int) -> int:
    """How many cells the wide search compares a row with: its nearest `PROBE_SHARE` of `n_cells`."""
    return max(1, math.ceil(n_cells * PROBE_SHARE))


@torch.no_grad()
def neighbour_gaps(
    X: torch.Tensor,
    reference: torch.Tensor,
    k: int,
    cells: torch.Tensor | None = None,
    in_reference: torch.Tensor | None = None,
    narrow: bool = False,
) -> torch.Tensor:
    """Squared per-feature gaps to each row's k nearest reference rows, averaged over them: (n_rows, n_features).

    A row's mean over features is its mean squared distance to its k nearest neighbours / n_features.
    `cells`: centroids from `fit_cells` (None or empty, or X not on the CPU: exact search). `in_reference[i]` is the
    position of row i in `reference` (or -1): a reference row is not its own neighbour. `narrow`: probe only each
    row's nearest cell (module doc).
    """
    k = max(1, min(k, reference.shape[0] - (1 if in_reference is not None else 0)))
    if not searches_cells(X, cells):
        nearest = _exact_nearest(X, reference, k, in_reference)
    else:
        index = cell_index(reference, cells)
        nearest = (
            index.home_cell_nearest(X, k, in_reference)
            if narrow
            else index.nearest(X, k, in_reference, wide_probe(cells.shape[0]))
        )
        short = torch.nonzero((nearest < 0).any(dim=1)).squeeze(1)  # fewer than k rows in the probed cells
        if short.numel():
            own = in_reference[short] if in_reference is not None else None
            nearest[short] = _exact_nearest(X[short], reference, k, own)
    gaps = torch.empty_like(X)
    for start in range(0, X.shape[0], _GAP_CHUNK):  # in place, in cache-sized blocks: 5x faster than one expression
        rows = slice(start, start + _GAP_CHUNK)
        neighbours = reference[nearest[rows]]
        neighbours.sub_(X[rows].unsqueeze(1)).square_()
        torch.mean(neighbours, dim=1, out=gaps[rows])
    return gaps


def _exact_nearest(X: torch.Tensor, reference: torch.Tensor, k: int, in_reference: torch.Tensor | None) -> torch.Tensor:
    reference_norms = reference.square().sum(dim=1)
    chunks = []
    for start in range(0, X.shape[0], _EXACT_CHUNK):
        batch = X[start : start + _EXACT_CHUNK]
        distances = torch.addmm(reference_norms, batch, reference.t(), alpha=-2)  # minus |x|^2, rank-equivalent
        if in_reference is not None:
            own = in_reference[start : start + _EXACT_CHUNK]
            rows = torch.nonzero(own >= 0).squeeze(1)
            distances[rows, own[rows]] = float("inf")
        chunks.append(distances.topk(k, dim=1, largest=False).indices)
    return torch.cat(chunks) if chunks else torch.zeros((0, k), dtype=torch.long, device=X.device)


class CellIndex:
    """A reference split into the cells of `fit_cells`, ready for searching batch after batch: which cell each
    reference row belongs to, and faiss's inverted-file index, are worked out once per model (`cell_index`).
    Searches only read it, so threads may share it."""

    def __init__(self, reference: torch.Tensor, cells: torch.Tensor):
        n_cells, n_features = cells.shape
        self.members = _as_faiss(reference)
        self.quantizer = faiss.IndexFlatL2(n_features)  # each row's cell: an exact search of the centroids
        self.quantizer.add(_as_faiss(cells))
        member_cells = self.cell_of(self.members)
        self.member_by_cell = np.argsort(member_cells, kind="stable")
        self.members_by_cell = self.members[self.member_by_cell]  # each cell's members one contiguous block
        self.member_bounds = np.searchsorted(member_cells[self.member_by_cell], np.arange(n_cells + 1))
        self.inverted = faiss.IndexIVFFlat(self.quantizer, n_features, n_cells)
        self.inverted.is_trained = True
        self.inverted.add(self.members)

    def cell_of(self, rows: np.ndarray) -> np.ndarray:
        return self.quantizer.search(rows, 1)[1].ravel()

    def nearest(self, X: torch.Tensor, k: int, in_reference: torch.Tensor | None, n_probe: int) -> torch.Tensor:
        """The nearest reference rows among the members of each row's `n_probe` nearest cells (-1 where they hold
        too few)."""
        found = self.inverted.search(
            _as_faiss(X), k if in_reference is None else k + 1, params=faiss.SearchParametersIVF(nprobe=n_probe)
        )[1]
        return _without_self(torch.as_tensor(found), in_reference, k)

    def home_cell_nearest(self, X: torch.Tensor, k: int, in_reference: torch.Tensor | None) -> torch.Tensor:
        """`nearest` with one probe, searched cell by cell: an exact search of the cell's members for its rows
        (module doc)."""
        rows = _as_faiss(X)
        row_cells = self.cell_of(rows)
        rows_by_cell = np.argsort(row_cells, kind="stable")
        row_bounds = np.searchsorted(row_cells[rows_by_cell], np.arange(self.member_bounds.size))
        wanted = k if in_reference is None else k + 1
        found = np.full((rows.shape[0], wanted), -1, dtype=np.int64)
        for cell in np.flatnonzero(np.diff(row_bounds)):
            in_cell = rows_by_cell[row_bounds[cell] : row_bounds[cell + 1]]
            members = slice(self.member_bounds[cell], self.member_bounds[cell + 1])
            if members.start == members.stop:
                continue
            local = faiss.knn(rows[in_cell], self.members_by_cell[members], wanted)[1]
            found[in_cell] = np.where(local >= 0, self.member_by_cell[members][np.maximum(local, 0)], -1)
        return _without_self(torch.as_tensor(found), in_reference, k)


#: Models whose `CellIndex` is kept (a worker may score with a few at once), by the ids of their tensors.
_CACHED_INDEXES = 4
_cell_indexes: RecentlyUsed[tuple[int, int], tuple[torch.Tensor, torch.Tensor, tuple[int, int], CellIndex]] = (
    RecentlyUsed(_CACHED_INDEXES)
)


def cell_index(reference: torch.Tensor, cells: torch.Tensor) -> CellIndex:
    """The `CellIndex` of these very tensors, built on first use. The cache holds the tensors, so no other tensor
    can take their ids while it is kept; their version counters tell an in-place change."""
    key, versions = (id(reference), id(cells)), (reference._version, cells._version)
    entry = _cell_indexes.get(key)
    if entry is not None and entry[2] == versions:
        return entry[3]
    index = CellIndex(reference, cells)
    _cell_indexes.put(key, (reference, cells, versions, index))
    return index


def _without_self(found: torch.Tensor, in_reference: torch.Tensor | None, k: int) -> torch.Tensor:
    """`found` (k + 1 per row with `in_reference`, else k) without each reference row's own entry; rows whose own
    entry was not found drop their farthest one instead."""
    if in_reference is None:
        return found
    is_self = found == in_reference.cpu().unsqueeze(1)
    is_self[:, -1] |= ~is_self.any(dim=1)
    order = torch.argsort(is_self.to(torch.int8), dim=1, stable=True)
    return found.gather(1, order[:, :k])


def _as_faiss(values: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(values.detach().cpu().numpy(), dtype=np.float32)
