"""The detection benchmark's protocols split labelled rows as documented (benchmarks/detection.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import benchmark_module

detection = benchmark_module("detection")


def labelled_pool(n_normal: int = 1000, n_anomalies: int = 100):
    """Rows identified by their first column; labels 1 for the last n_anomalies rows."""
    ids = np.arange(n_normal + n_anomalies, dtype=float)
    X = np.column_stack([ids, np.random.default_rng(0).normal(size=ids.size)])
    return X, np.r_[np.zeros(n_normal, int), np.ones(n_anomalies, int)]


def test_clean_trains_on_half_the_normal_rows_and_tests_on_the_rest():
    X, y = labelled_pool()
    split = detection.split_labelled(X, y, seed=0, protocol=detection.Protocol("clean"))
    train_ids, test_ids = set(split.X_train[:, 0]), set(split.X_test[:, 0])
    assert not train_ids & test_ids and len(train_ids | test_ids) == len(y)
    assert all(y[int(i)] == 0 for i in train_ids) and len(train_ids) == 500
    assert split.y_test.sum() == 100 and split.train_anomaly_rate == 0.0
    np.testing.assert_array_equal(split.y_test, y[split.X_test[:, 0].astype(int)])


@pytest.mark.parametrize("contamination", [0.02, 0.1])
def test_lake_adds_anomalies_from_one_half_and_tests_on_the_other(contamination):
    X, y = labelled_pool()
    split = detection.split_labelled(X, y, seed=1, protocol=detection.Protocol("lake", contamination))
    train_ids, test_ids = split.X_train[:, 0].astype(int), split.X_test[:, 0].astype(int)
    assert not set(train_ids) & set(test_ids)
    train_anomalies = y[train_ids].sum()
    assert train_anomalies == min(50, round(contamination * 500 / (1 - contamination)))  # 10 or 50 (half runs out)
    assert split.train_anomaly_rate == pytest.approx(train_anomalies / train_ids.size)
    assert split.y_test.sum() == 50 and (split.y_test == 0).sum() == 500


def test_splits_are_seeded_and_differ_between_seeds():
    X, y = labelled_pool()
    protocol = detection.Protocol("lake")
    first, again = (detection.split_labelled(X, y, 3, protocol) for _ in range(2))
    np.testing.assert_array_equal(first.X_train, again.X_train)
    assert not np.array_equal(first.X_train, detection.split_labelled(X, y, 4, protocol).X_train)


def test_test_row_cap_keeps_the_anomaly_rate():
    X, y = labelled_pool(9000, 1000)
    split = detection.split_labelled(X, y, 0, detection.Protocol("clean"))  # 4,500 normal + 1,000 anomalies
    capped = detection.cap_rows(split, max_rows=1000, seed=0, max_test_rows=2000)
    assert capped.X_train.shape[0] == 1000 and capped.capped_from == 4500
    assert capped.X_test.shape[0] == pytest.approx(2000, abs=2) and capped.test_capped_from == 5500
    assert capped.y_test.mean() == pytest.approx(split.y_test.mean(), abs=0.002)


def test_selection_section_reports_held_out_numbers_for_every_protocol():
    names = [f"set{i}" for i in range(6)] + ["smd/machine-1-1", "smd/machine-1-2"]
    groups = {name: "smd" if name.startswith("smd") else "adbench" for name in names}
    methods = ["SAE", "IForest", "kNN", detection.candidate_name("wide")]
    payloads = {}
    for protocol, shift in (("clean", 0.0), ("contaminated", -0.1)):
        values = {"SAE": 0.9 + shift, "IForest": 0.8, "kNN": 0.85, detection.candidate_name("wide"): 0.7}
        payloads[protocol] = {
            "meta": {
                "date": "today",
                "command": "python benchmarks/detection.py",
                "methods": methods,
                "sae_params": {},
            },
            "datasets": [{"name": name, "group": groups[name]} for name in names],
            "summary": {"per_dataset": {name: {m: {"auc_roc": v} for m, v in values.items()} for name in names}},
        }
    payload = detection.selection_payload(
        payloads, {"wide": {"n_latents": 64}}, halvings=8, planted_gate=lambda params: {"1%": 1.0, "8%": 0.995}
    )
    assert payload["selection"]["chosen"] == {"SAE": 8} and payload["admissible"] == ["SAE", "SAE[wide]"]
    text = detection.render_selection(payload)
    assert "| clean | **0.900** | 0.800 | 0.850 | +0.050 | 100% |" in text
    assert "| contaminated | **0.800** | 0.800 | 0.850 | -0.050 | 0% |" in text
    assert '`SAE[wide]` | `{"n_latents": 64}`' in text
