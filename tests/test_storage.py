"""Tests for URI storage: small objects written whole, JSON round trips, URI joining."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from sae_pipeline.storage import LakeReadError, join_uri, read_json, write_json


def test_write_json_read_json_round_trip(tmp_path):
    uri = str(tmp_path / "runs" / "nested" / "run.json")
    payload = {"a": 1, "b": [1.5, "x", None], "c": {"d": True}}
    write_json(uri, payload)
    assert read_json(uri) == payload
    write_json(uri, {"a": 2})  # overwrite in place
    assert read_json(uri) == {"a": 2}
    assert os.listdir(tmp_path / "runs" / "nested") == ["run.json"]  # no temporary files left


def test_write_json_writes_strict_json(tmp_path):
    """No NaN or Infinity tokens, which strict parsers (JavaScript's JSON.parse, jq) refuse: null instead."""
    uri = str(tmp_path / "x.json")
    write_json(uri, {"a": float("nan"), "b": [float("inf"), -float("inf")], "c": np.float32(0.5), 7: "key"})
    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=pytest.fail) == {
        "a": None,
        "b": [None, None],
        "c": 0.5,
        "7": "key",
    }


def test_read_json_missing_raises_lake_read_error(tmp_path):
    missing = str(tmp_path / "absent.json")
    with pytest.raises(LakeReadError, match="absent.json"):
        read_json(missing)


def test_join_uri_normalises_slashes():
    assert join_uri("s3://bucket/root/", "/day=1/", "part-0.parquet") == "s3://bucket/root/day=1/part-0.parquet"
