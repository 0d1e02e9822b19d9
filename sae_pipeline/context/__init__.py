"""Judging each row in its context: its group's baseline, its hour and weekday, its entity's recent history.

One model serves the whole fleet. Context enters as conditioning computed before the model sees a row: numeric
values are expressed relative to what is normal for the row's group (and hour, with a calendar), with the group
statistics learned at training and stored with the model (`baselines`); the calendar adds cyclic time features
(`calendar`); history adds each value's distance from the entity's recent median (`history`, which reads the end of
the previous partition so that a partition scores the same however runs batch it).
"""

from sae_pipeline.context.baselines import (
    BASELINE_FEW_ROWS,
    BASELINE_NEW_GROUP,
    BASELINE_OWN,
    GroupBaselines,
)
from sae_pipeline.context.history import RECENT_SUFFIX, partition_tail, with_history, with_recent_means

__all__ = [
    "BASELINE_FEW_ROWS",
    "BASELINE_NEW_GROUP",
    "BASELINE_OWN",
    "RECENT_SUFFIX",
    "GroupBaselines",
    "partition_tail",
    "with_history",
    "with_recent_means",
]
