import numpy as np

from sae_pipeline.incidents import alerts_at_budget, incidents_surfaced, label_incidents, share_surfaced


def test_incidents_are_runs_of_one_entity_across_partition_boundaries():
    # Two partitions of two interleaved hosts, rows in time order. Host a's run spans the boundary between the
    # partitions: one incident. Host b's anomalous rows are interleaved with a's but consecutive for b: one incident.
    first = {"entity": ["a", "b", "a", "b", "a", "b"], "label": [0, 1, 0, 1, 1, 0]}
    second = {"entity": ["a", "b", "a", "b"], "label": [1, 0, 0, 1]}
    entities = np.array(first["entity"] + second["entity"])
    labels = np.array(first["label"] + second["label"])

    incidents = label_incidents(labels, entities)

    assert incidents.tolist() == [-1, 1, -1, 1, 0, -1, 0, -1, -1, 2]
    assert label_incidents(labels).max() + 1 == 4  # as one sequence, the runs split differently


def test_incidents_surfaced_counts_incidents_with_one_flagged_row():
    entities = np.array(["a"] * 100 + ["b"] * 100)
    labels = np.zeros(200, dtype=bool)
    labels[[10, 11, 12, 50, 150, 151]] = True  # a: rows 10-12 and row 50; b: rows 150-151
    scores = np.zeros(200)
    scores[11] = 5.0  # the first incident's middle row ranks first
    scores[120] = 4.0  # a normal row of b ranks second
    scores[151] = 3.0

    assert incidents_surfaced(labels, scores, entities, budget=0.01) == 1 / 3  # two rows flagged
    assert incidents_surfaced(labels, scores, entities, budget=0.015) == 2 / 3  # three rows
    assert incidents_surfaced(np.zeros(5), np.arange(5.0)) is None
    # Under that one budget, each entity's own share: a's second incident (row 50) has no alert.
    incidents, alerts = label_incidents(labels, entities), alerts_at_budget(scores, 0.015)
    assert alerts.sum() == 3
    assert share_surfaced(incidents[:100], alerts[:100]) == 1 / 2
    assert share_surfaced(incidents[100:], alerts[100:]) == 1.0
