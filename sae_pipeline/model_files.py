"""The saved detector's file format: which files, which format versions this code reads, and its errors.

Kept apart from the detector so that code which only reads a model's `model.json` (the registry listing versions,
a run deciding whether to train) needs neither torch nor scikit-learn.
"""

from __future__ import annotations

import json

WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "model.json"
FORMAT_NAME = "sae-pipeline-detector"
FORMAT_VERSION = 4  # 4: the two-stage search's cut; 3: centroids of the kNN index; 2: kNN reference and term scales
READABLE_VERSIONS = (1, 2, 3, 4)  # 3: every row searched wide; 2: searched exactly; 1: no density term


class ModelFileError(ValueError):
    """A saved detector's file is missing, corrupt or in a format this code does not read; `file` names it."""

    def __init__(self, file: str, problem: str):
        super().__init__(f"{file}: {problem}")
        self.file = file
        self.problem = problem


def parse_manifest(payload: bytes) -> dict:
    """The saved detector's `model.json` (plus whatever metadata its saver added), checked to be a format this
    code reads; raises `ModelFileError`."""
    try:
        manifest = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(MANIFEST_FILE, f"not valid JSON (truncated or corrupt?): {error}") from error
    found = (manifest.get("format"), manifest.get("format_version")) if isinstance(manifest, dict) else None
    if found is None or found[0] != FORMAT_NAME or found[1] not in READABLE_VERSIONS:
        expected = f"{FORMAT_NAME} format_version {'/'.join(map(str, READABLE_VERSIONS))}"
        raise ModelFileError(MANIFEST_FILE, f"expected {expected}, found {found}")
    return manifest
