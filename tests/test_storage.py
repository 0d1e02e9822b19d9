"""Tests for URI storage: small objects written whole, JSON round trips, URI joining."""

from __future__ import annotations

import os

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


def test_write_json_rejects_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(str(tmp_path / "x.json"), {"a": float("nan")})


def test_read_json_missing_raises_lake_read_error(tmp_path):
    missing = str(tmp_path / "absent.json")
    with pytest.raises(LakeReadError, match="absent.json"):
        read_json(missing)


def test_join_uri_normalises_slashes():
    assert join_uri("s3://bucket/root/", "/day=1/", "part-0.parquet") == "s3://bucket/root/day=1/part-0.parquet"
