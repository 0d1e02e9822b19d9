"""Batch anomaly detection for Parquet data lakes with sparse autoencoders.

The library is plain Python (no orchestration imports); Prefect flows live in the separate `flows` package.
`SAEDetector` is loaded on first use, so that code which needs only the config or the lake (the command line's
checks, for one) does not pay for importing torch and scikit-learn.
"""

__all__ = ["SAEDetector"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "SAEDetector":
        from sae_pipeline.detector import SAEDetector

        return SAEDetector
    raise AttributeError(f"module 'sae_pipeline' has no attribute {name!r}")
