"""The detector's settings, declared once: each one's name, default, bounds and meaning.

`SAEDetector` takes them as constructor arguments (scikit-learn's contract: `__init__` only stores them) and
validates them with `DetectorSettings` in `fit`. The pipeline config is built from the same declarations: its
`model` section is `ModelSettings` plus `seed` (the detector's `random_state`), and `thresholds.target_fpr` is the
detector's `contamination` (see `setting_field`), so a config that loads holds settings that `fit` accepts.
`TrainingSettings` is the part the training loop reads. No torch here: the config imports this module.
"""

from __future__ import annotations

import copy
import textwrap
import types
from typing import Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

Sparsity = Literal["topk", "l1", "kl"]
#: `auto`, or a torch device type with an optional index (`cuda:1`); whether it exists is checked when fitting.
DEVICE_PATTERN = r"^(auto|(cpu|cuda|mps|xpu|hip|hpu|mtia|xla|meta)(:\d+)?)$"
#: The largest seed every seeded component accepts (faiss takes a C int).
MAX_SEED = 2**31 - 1


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingSettings(_Settings):
    """The training schedule and the strengths of the sparsity penalties (`sae_pipeline.training`)."""

    learning_rate: float = Field(1e-3, gt=0, allow_inf_nan=False, description="Adam's learning rate.")
    batch_size: int = Field(1024, ge=1, description="Rows per optimiser step.")
    max_steps: int = Field(
        300,
        ge=1,
        description="Optimiser steps (not epochs). The short default schedule is deliberate: on the ADBench sets, "
        "longer training teaches the SAE to reconstruct the anomalies too (mean AUC-ROC 0.82 at 300 steps, 0.78 at "
        "3,000, 0.75 at 10,000, batch 512; see BENCHMARKS.md).",
    )
    patience: int = Field(
        5, ge=1, description="Validation checks (one per 100 steps) without improvement before training stops early."
    )
    trim_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of worst-reconstructed training rows dropped after a third of training (robust "
        "training). Default 0: with the density term it measured better in all three benchmark protocols, "
        "contaminated ones included.",
    )
    finetune_steps: int = Field(
        0, ge=0, description="Decoder-only steps on reconstruction loss alone after the sparse training."
    )
    l1_coefficient: float = Field(1e-3, ge=0, allow_inf_nan=False, description="Strength of the `l1` penalty.")
    kl_target: float = Field(0.05, gt=0, lt=1, description="Target mean activation of the `kl` penalty.")
    kl_weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="Weight of the `kl` penalty.")


class ModelSettings(TrainingSettings):
    """Every hyperparameter of the model: what the pipeline config's `model` section holds besides `seed`."""

    sparsity: Sparsity = Field("topk", description="How the code is made sparse (see `sae_pipeline.model`).")
    n_latents: int | None = Field(
        None,
        ge=1,
        description="Width of the code; None: 2 x n_features, clipped to [16, 1024] (4x detected no better and "
        "trained a third slower; see BENCHMARKS.md).",
    )
    k: int | None = Field(
        None, ge=1, description="Active latents per row for `topk`; None: n_features // 4, clipped to [1, 32]."
    )
    validation_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of rows held out for early stopping and for calibrating `threshold_` and p-values.",
    )
    code_cap_quantile: float | None = Field(
        0.99,
        ge=0.5,
        le=1,
        description="After training, cap each latent's activation at this quantile of its training activations, "
        "so that a normal pattern scaled far beyond the training range cannot be reconstructed (None: no cap).",
    )
    density_weight: float = Field(
        3.0,
        ge=0,
        allow_inf_nan=False,
        description="Weight of the neighbour-gap (kNN density) term against the reconstruction term (see "
        "`sae_pipeline.detector`); 0 scores by reconstruction alone, the fastest scoring. With `n_neighbors`, "
        "chosen on the three benchmark protocols: more weight and fewer neighbours help clean training data and "
        "hurt contaminated data (BENCHMARKS.md).",
    )
    n_neighbors: int = Field(
        3,
        ge=1,
        description="The gaps are averaged over the n_neighbors nearest reference rows (as PyOD's KNN with "
        'method="mean").',
    )
    reference_rows: int = Field(
        10_000,
        ge=2,
        description="At most this many training rows (a seeded subsample) are kept as the kNN reference; they are "
        "saved with the model.",
    )
    isolation_trim: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="Share of training rows that an isolation forest (100 trees, fitted on the scaled training "
        "rows) isolates most easily, left out of training and of the kNN reference: anomalies in the history, "
        "clustered ones included, then look unusual to both terms. Scoring costs nothing more. Chosen "
        "leave-sets-out with the other defaults (BENCHMARKS.md).",
    )
    exact_neighbours: bool = Field(
        False,
        description="Compare each row with every reference row. By default, on a CPU, references of 4,096 rows or "
        "more are searched through an index of k-means cells (`sae_pipeline.neighbours`), each row in its nearest "
        "cell and the rows that score near the threshold again in its nearest twenty-fourth of the cells: 5-11x "
        "faster on the benchmark sets, with the flags of the wider search. On an accelerator the search is always "
        "exact.",
    )
    device: str = Field(
        "auto", pattern=DEVICE_PATTERN, description='"auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:1", ...'
    )


class DetectorSettings(ModelSettings):
    """Every parameter of `SAEDetector`, with its default, bounds and meaning."""

    contamination: float = Field(
        0.01,
        gt=0,
        lt=0.5,
        description="Expected anomaly share; `threshold_` flags about this share of rows like the validation rows "
        "(split-conformal: the k-th largest validation score, k = floor(contamination x (n + 1))).",
    )
    random_state: int = Field(
        0, ge=0, le=MAX_SEED, description="Seeds the split, the initialisation, the batches and the kNN index."
    )
    verbose: bool = Field(False, description="Show a training progress bar.")

    @classmethod
    def of(cls, params: dict) -> DetectorSettings:
        """Validated settings from `SAEDetector.get_params()`; a ValueError names every invalid parameter."""
        try:
            return cls.model_validate(params)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, problem['loc']))}={problem.get('input')!r}: {problem['msg']}"
                for problem in error.errors()
            )
            raise ValueError(f"invalid SAEDetector parameter(s): {problems}") from None


def setting_field(name: str) -> FieldInfo:
    """A copy of the declaration of the detector setting `name`, for a config field that feeds it."""
    return copy.deepcopy(DetectorSettings.model_fields[name])


def _type_name(annotation) -> str:
    if get_origin(annotation) is Literal:
        return "{" + ", ".join(map(repr, get_args(annotation))) + "}"
    if get_origin(annotation) in (Union, types.UnionType):
        return " or ".join(_type_name(argument) for argument in get_args(annotation))
    return "None" if annotation is type(None) else annotation.__name__


def _bounds(field: FieldInfo) -> str:
    symbols = {Gt: (">", "gt"), Ge: (">=", "ge"), Lt: ("<", "lt"), Le: ("<=", "le")}
    bounds = [
        f"{symbols[type(item)][0]} {getattr(item, symbols[type(item)][1])}"
        for item in field.metadata
        if type(item) in symbols
    ]
    return f", {' and '.join(bounds)}" if bounds else ""


def numpydoc_parameters(settings: type[BaseModel]) -> str:
    """The numpydoc `Parameters` entries of `settings`' fields: name, type, default, bounds and description."""
    lines = []
    for name, field in settings.model_fields.items():
        lines.append(f"    {name} : {_type_name(field.annotation)}, default {field.default!r}{_bounds(field)}")
        lines.append(textwrap.fill(field.description, 116, initial_indent=" " * 8, subsequent_indent=" " * 8))
    return "\n".join(lines)
