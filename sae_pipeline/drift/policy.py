"""The drift policy: does a scored partition ask for a `train_or_update` run, and why."""

from __future__ import annotations

from sae_pipeline.config import DriftConfig, DriftPolicyConfig


def policy_wants_training(report: dict, policy: DriftPolicyConfig | DriftConfig | None = None) -> tuple[bool, str]:
    """(True, reason) when the report meets the policy: dataset drift, or an anomaly rate above N x the target.

    ``policy`` is the config's ``drift.policy`` (the whole ``drift`` section is accepted too).
    """
    if isinstance(policy, DriftConfig):
        policy = policy.policy
    policy = policy or DriftPolicyConfig()
    reasons = []
    if policy.on_dataset_drift and report["dataset_drift"]:
        reasons.append(
            f"dataset drift in {report['partition'] or 'the partition'}: {report['n_drifted_columns']} of "
            f"{report['n_columns']} columns drifted ({100 * report['drift_share']:.0f}% >= "
            f"{100 * report['drift_share_threshold']:.0f}%: {', '.join(report['drifted_columns'][:5])})"
        )
    anomalies = report.get("anomalies")
    factor = policy.anomaly_rate_factor
    expected = anomalies["expected_rate"] if anomalies else None
    if factor is not None and expected and anomalies["observed_rate"] > factor * expected:
        reasons.append(
            f"anomaly rate {100 * anomalies['observed_rate']:.2f}% is above {factor:g} x the target "
            f"{100 * expected:.2f}%"
        )
    if reasons:
        return True, "; ".join(reasons)
    return False, "no drift policy condition met"
