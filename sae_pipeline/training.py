"""Training loop for `SparseAutoencoder`: Adam on reconstruction + sparsity, early stopping on a validation split.

Training length is counted in optimiser steps, not passes over the data, so a 600k-row set costs the same as a
60k-row one. Robust training: after a third of the steps the rows the model reconstructs worst (the likely
anomalies in contaminated data) are dropped from the training pool, so the model stops learning to reproduce
them. Every run reports the numbers SAE trainers always log: fraction of variance unexplained (FVU), L0 (active
latents per row) and the dead-latent fraction.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from sae_pipeline.model import SparseAutoencoder

logger = logging.getLogger(__name__)

_EVAL_CHUNK = 65_536


@dataclass(frozen=True)
class TrainingSettings:
    learning_rate: float = 1e-3
    batch_size: int = 512
    max_steps: int = 3000
    eval_every: int = 100
    patience: int = 5
    trim_fraction: float = 0.1
    finetune_steps: int = 0
    l1_coefficient: float = 1e-3
    kl_target: float = 0.05
    kl_weight: float = 1.0
    seed: int = 0


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


def _optimise(
    model: SparseAutoencoder,
    parameters: list[torch.nn.Parameter],
    pool: torch.Tensor,
    steps: int,
    settings: TrainingSettings,
    with_sparsity: bool,
    generator: torch.Generator,
    on_step,
) -> None:
    """Run `steps` Adam steps on random batches of `pool`; `on_step(step)` may return a new pool or stop."""
    optimiser = torch.optim.Adam(parameters, lr=settings.learning_rate)
    warmup_steps = max(1, steps // 20)  # the L1 coefficient ramps up over the first 5% of steps
    for step in range(1, steps + 1):
        rows = torch.randint(pool.shape[0], (min(settings.batch_size, pool.shape[0]),), generator=generator)
        batch = pool[rows.to(pool.device)]
        reconstruction, code = model(batch)
        loss = (reconstruction - batch).square().mean()
        if with_sparsity:
            ramp = min(1.0, step / warmup_steps) if model.sparsity == "l1" else 1.0
            loss = loss + ramp * model.sparsity_penalty(
                code, settings.l1_coefficient, settings.kl_target, settings.kl_weight
            )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        model.remove_parallel_decoder_gradient()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        model.normalize_decoder()
        outcome = on_step(step)
        if outcome is StopIteration:
            return
        if outcome is not None:
            pool = outcome


def train_sae(
    model: SparseAutoencoder,
    X_train: torch.Tensor,
    X_val: torch.Tensor,
    settings: TrainingSettings,
    progress: bool = False,
) -> TrainingReport:
    """Train in place and leave the model at its best validation checkpoint."""
    generator = torch.Generator().manual_seed(settings.seed)
    started = time.perf_counter()
    best = {"mse": float("inf"), "state": copy.deepcopy(model.state_dict()), "since": 0}
    trim_at = settings.max_steps // 3 if settings.trim_fraction > 0 else -1
    state = {"steps": 0, "stopped_early": False, "pool_rows": X_train.shape[0]}
    bar = tqdm(total=settings.max_steps, desc="training SAE", unit="step", disable=None if progress else True, leave=False)

    def validation_mse() -> float:
        return row_errors(model, X_val).mean().item()

    def on_step(step: int):
        state["steps"] = step
        bar.update(1)
        new_pool = None
        if step == trim_at:
            errors = row_errors(model, X_train).mean(dim=1)
            keep = errors <= torch.quantile(errors, 1 - settings.trim_fraction)
            new_pool = X_train[keep]
            state["pool_rows"] = new_pool.shape[0]
        if step % settings.eval_every == 0 or step == settings.max_steps:
            mse = validation_mse()
            bar.set_postfix(val_mse=f"{mse:.4g}")
            if mse < best["mse"] - 1e-7:
                best.update(mse=mse, state=copy.deepcopy(model.state_dict()), since=0)
            else:
                best["since"] += 1
                if best["since"] >= settings.patience and step > trim_at:
                    state["stopped_early"] = True
                    return StopIteration
        return new_pool

    model.train()
    _optimise(model, list(model.parameters()), X_train, settings.max_steps, settings, True, generator, on_step)
    bar.close()
    model.load_state_dict(best["state"])
    if settings.finetune_steps:
        # Decoder-only refit on reconstruction alone: removes the shrinkage a sparsity penalty leaves behind.
        _optimise(
            model, [model.W_dec, model.b_pre], X_train, settings.finetune_steps, settings, False, generator,
            lambda step: None,
        )
    model.eval()
    seconds = time.perf_counter() - started
    val_mse = validation_mse()
    variance = X_val.var(dim=0, unbiased=False).mean().item()
    l0, dead = _code_statistics(model, X_val)
    samples = (state["steps"] + settings.finetune_steps) * settings.batch_size
    report = TrainingReport(
        steps=state["steps"],
        stopped_early=state["stopped_early"],
        train_rows_used=state["pool_rows"],
        validation_mse=val_mse,
        fraction_variance_unexplained=val_mse / variance if variance > 0 else 0.0,
        l0=l0,
        dead_latent_fraction=dead,
        seconds=seconds,
        samples_per_second=samples / seconds if seconds > 0 else 0.0,
    )
    logger.info("SAE trained: %s", report)
    return report
