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
whose narrow score comes near its threshold. The narrow search runs cell by cell, one exact product of the cell's
rows with its members (faiss `IndexFlatL2`), not as a one-cell probe of the index, which scans row by row: it finds
the same neighbours in 0.7-2.0 us per row against 1.9-3.0 on four real sets (BENCHMARKS.md).

The cells' centroids are fitted state saved with the model: a loaded model rebuilds the same index and finds the same
neighbours. The index is a shortcut for CPUs: on an accelerator the search stays exact, since there it is a matrix
product per block of rows, and faiss (CPU build) would move every batch back to the host.
"""

from __future__ import annotations

import math

import faiss
import numpy as np
import torch

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
        nearest = (
            _home_cell_nearest(X, reference, cells, k, in_reference)
            if narrow
            else _indexed_nearest(X, reference, cells, k, in_reference, wide_probe(cells.shape[0]))
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


def _indexed_nearest(
    X: torch.Tensor,
    reference: torch.Tensor,
    cells: torch.Tensor,
    k: int,
    in_reference: torch.Tensor | None,
    n_probe: int,
) -> torch.Tensor:
    n_features = reference.shape[1]
    quantizer = faiss.IndexFlatL2(n_features)
    index = faiss.IndexIVFFlat(quantizer, n_features, cells.shape[0])
    quantizer.add(_as_faiss(cells))
    index.is_trained = True
    index.add(_as_faiss(reference))
    index.nprobe = n_probe
    found = index.search(_as_faiss(X), k if in_reference is None else k + 1)[1]
    return _without_self(torch.as_tensor(found), in_reference, k)


def _home_cell_nearest(
    X: torch.Tensor, reference: torch.Tensor, cells: torch.Tensor, k: int, in_reference: torch.Tensor | None
) -> torch.Tensor:
    """The nearest reference rows among the members of each row's nearest cell (-1 where the cell holds too few),
    searched cell by cell. Rows and members are assigned to cells by the same exact search as the index's."""
    quantizer = faiss.IndexFlatL2(reference.shape[1])
    quantizer.add(_as_faiss(cells))
    rows, members = _as_faiss(X), _as_faiss(reference)
    row_cells, member_cells = quantizer.search(rows, 1)[1].ravel(), quantizer.search(members, 1)[1].ravel()
    rows_by_cell, member_by_cell = np.argsort(row_cells, kind="stable"), np.argsort(member_cells, kind="stable")
    starts = np.arange(cells.shape[0] + 1)
    row_bounds = np.searchsorted(row_cells[rows_by_cell], starts)
    member_bounds = np.searchsorted(member_cells[member_by_cell], starts)
    wanted = k if in_reference is None else k + 1
    found = np.full((rows.shape[0], wanted), -1, dtype=np.int64)
    for cell in np.flatnonzero(np.diff(row_bounds)):
        in_cell = rows_by_cell[row_bounds[cell] : row_bounds[cell + 1]]
        cell_members = member_by_cell[member_bounds[cell] : member_bounds[cell + 1]]
        if not cell_members.size:
            continue
        flat = faiss.IndexFlatL2(members.shape[1])
        flat.add(members[cell_members])
        local = flat.search(rows[in_cell], wanted)[1]
        found[in_cell] = np.where(local >= 0, cell_members[np.maximum(local, 0)], -1)
    return _without_self(torch.as_tensor(found), in_reference, k)


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
