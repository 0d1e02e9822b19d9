"""Training loop for `SparseAutoencoder`: Adam on reconstruction + sparsity, early stopping on a validation split.

Training length is counted in optimiser steps, not passes over the data, so a 600k-row set costs the same as a
60k-row one. Robust training: after a third of the steps the rows the model reconstructs worst (the likely
anomalies in contaminated data) are dropped from the training pool, so the model stops learning to reproduce
them. Every run reports the numbers SAE trainers always log: fraction of variance unexplained (FVU), L0 (active
latents per row) and the dead-latent fraction.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from sae_pipeline.detector_settings import TrainingSettings
from sae_pipeline.model import SparseAutoencoder

logger = logging.getLogger(__name__)

_EVAL_CHUNK = 65_536
#: Steps between validation checks (early stopping counts `patience` of them).
EVAL_EVERY = 100


@dataclass(frozen=True)
class TrainingReport:
    steps: int
    stopped_early: bool
    train_rows_used: int
    validation_mse: float
    fraction_variance_unexplained: float
    l0: float
    dead_latent_fraction: float
    seconds: float
    samples_per_second: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def row_errors(model: SparseAutoencoder, X: torch.Tensor) -> torch.Tensor:
    """Squared reconstruction residuals, shape (n_rows, n_features), computed in chunks."""
    chunks = []
    for start in range(0, X.shape[0], _EVAL_CHUNK):
        batch = X[start : start + _EVAL_CHUNK]
        reconstruction, _ = model(batch)
        chunks.append((reconstruction - batch).square())
    return torch.cat(chunks) if chunks else X.new_zeros((0, X.shape[1]))


@torch.no_grad()
def _code_statistics(model: SparseAutoencoder, X: torch.Tensor) -> tuple[float, float]:
    """Mean active latents per row (L0) and the fraction of latents that never fire on X."""
    active_total, fired = 0.0, torch.zeros(model.n_latents, dtype=torch.bool, device=X.device)
    for start in range(0, X.shape[0], _EVAL_CHUNK):
        active = model.encode(X[start : start + _EVAL_CHUNK]) > 0
        active_total += active.sum().item()
        fired |= active.any(dim=0)
    return active_total / max(X.shape[0], 1), 1.0 - fired.float().mean().item()


def _sample_batch(pool: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    rows = torch.randint(pool.shape[0], (min(batch_size, pool.shape[0]),), generator=generator)
    return pool[rows.to(pool.device)]


def mixed_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass on GPUs that support it (weights and optimiser state stay fp32);
    plain fp32 elsewhere, e.g. on CPU workers and in CI."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _step(
    model: SparseAutoencoder,
    optimiser: torch.optim.Optimizer,
    batch: torch.Tensor,
    settings: TrainingSettings,
    sparsity_weight: float,
) -> None:
    """One Adam step on reconstruction MSE + sparsity_weight x the mode's penalty, keeping decoder columns unit-norm."""
    with mixed_precision(batch.device):
        reconstruction, code = model(batch)
        loss = (reconstruction.float() - batch).square().mean()
        if sparsity_weight:
            loss = loss + sparsity_weight * model.sparsity_penalty(
                code.float(), settings.l1_coefficient, settings.kl_target, settings.kl_weight
            )
    model.zero_grad(set_to_none=True)
    loss.backward()
    model.remove_parallel_decoder_gradient()
    torch.nn.utils.clip_grad_norm_([p for group in optimiser.param_groups for p in group["params"]], 1.0)
    optimiser.step()
    model.normalize_decoder()


def _trimmed(model: SparseAutoencoder, X: torch.Tensor, fraction: float) -> torch.Tensor:
    """X without its `fraction` worst-reconstructed rows."""
    errors = row_errors(model, X).mean(dim=1)
    return X[errors <= torch.quantile(errors, 1 - fraction)]


def train_sae(
    model: SparseAutoencoder,
    X_train: torch.Tensor,
    X_val: torch.Tensor,
    settings: TrainingSettings,
    seed: int,
    progress: bool = False,
) -> TrainingReport:
    """Train in place (batches drawn with `seed`) and leave the model at its best validation checkpoint."""
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    trim_at = settings.max_steps // 3 if settings.trim_fraction > 0 else -1
    warmup_steps = max(1, settings.max_steps // 20)  # the L1 coefficient ramps up over the first 5% of steps
    best_mse, best_state, evaluations_without_gain = float("inf"), copy.deepcopy(model.state_dict()), 0
    pool, stopped_early, step = X_train, False, 0
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)

    model.train()
    bar = tqdm(
        total=settings.max_steps, desc="training SAE", unit="step", disable=None if progress else True, leave=False
    )
    for step in range(1, settings.max_steps + 1):
        ramp = min(1.0, step / warmup_steps) if model.sparsity == "l1" else 1.0
        _step(model, optimiser, _sample_batch(pool, settings.batch_size, generator), settings, ramp)
        bar.update(1)
        if step == trim_at:
            pool = _trimmed(model, X_train, settings.trim_fraction)
        if step % EVAL_EVERY and step != settings.max_steps:
            continue
        mse = row_errors(model, X_val).mean().item()
        bar.set_postfix(val_mse=f"{mse:.4g}")
        if mse < best_mse - 1e-7:
            best_mse, best_state, evaluations_without_gain = mse, copy.deepcopy(model.state_dict()), 0
        else:
            evaluations_without_gain += 1
            if evaluations_without_gain >= settings.patience and step > trim_at:
                stopped_early = True
                break
    bar.close()
    model.load_state_dict(best_state)

    if settings.finetune_steps:
        # Decoder-only refit on reconstruction alone: removes the shrinkage a sparsity penalty leaves behind.
        finetune = torch.optim.Adam([model.W_dec, model.b_pre], lr=settings.learning_rate)
        for _ in range(settings.finetune_steps):
            _step(model, finetune, _sample_batch(pool, settings.batch_size, generator), settings, 0.0)
    model.eval()
    seconds = time.perf_counter() - started
    val_mse = row_errors(model, X_val).mean().item() if settings.finetune_steps else best_mse
    variance = X_val.var(dim=0, unbiased=False).mean().item()
    l0, dead = _code_statistics(model, X_val)
    samples = (step + settings.finetune_steps) * min(settings.batch_size, pool.shape[0])  # small sets: whole pool
    report = TrainingReport(
        steps=step,
        stopped_early=stopped_early,
        train_rows_used=pool.shape[0],
        validation_mse=val_mse,
        fraction_variance_unexplained=val_mse / variance if variance > 0 else 0.0,
        l0=l0,
        dead_latent_fraction=dead,
        seconds=seconds,
        samples_per_second=samples / seconds if seconds > 0 else 0.0,
    )
    logger.info("SAE trained: %s", report)
    return report
