"""The nearest reference rows of each row: the search behind the detector's kNN density term.

Exact search compares every row with every reference row: reference_rows x n_features multiply-adds and a top-k
over reference_rows per row, about 90% of the default model's scoring time on a CPU. With `cells`, the search is an
inverted-file index (faiss `IndexIVFFlat`): the reference is split into k-means cells, and a row is compared only
with the members of its nearest `PROBE_SHARE` (a twenty-fourth) of the cells: about 420 of 10,000 reference rows.
On four benchmark sets (donors, magic.gamma, shuttle, smtp) 92-99.98% of the rows found neighbours exactly as near as
the exact ones (the rest slightly farther ones, so a slightly higher score), at 7-11x less time than exact search;
`python benchmarks/neighbour_search.py` measures it. Probing a twelfth instead took about twice the search time and
gave the same mean AUC-ROC to four decimals in all three protocols of the detection benchmark (BENCHMARKS.md).
A narrow search (`narrow=True`) compares a row with the members of its nearest cell alone, in about half the
time. Those members are among the wide search's candidates, so its neighbours are never nearer: the detector
searches wide again only the rows whose narrow score comes near its threshold.

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


def probed_cells(n_cells: int, narrow: bool) -> int:
    """How many of `n_cells` cells a row is compared with: its nearest one, or its nearest `PROBE_SHARE`."""
    return 1 if narrow else max(1, math.ceil(n_cells * PROBE_SHARE))


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
        nearest = _indexed_nearest(X, reference, cells, k, in_reference, probed_cells(cells.shape[0], narrow))
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
    if in_reference is None:
        return torch.as_tensor(index.search(_as_faiss(X), k)[1])
    found = torch.as_tensor(index.search(_as_faiss(X), k + 1)[1])
    # Drop each reference row's own entry; rows whose own entry was not found drop their farthest one instead.
    is_self = found == in_reference.cpu().unsqueeze(1)
    is_self[:, -1] |= ~is_self.any(dim=1)
    order = torch.argsort(is_self.to(torch.int8), dim=1, stable=True)
    return found.gather(1, order[:, :k])


def _as_faiss(values: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(values.detach().cpu().numpy(), dtype=np.float32)
