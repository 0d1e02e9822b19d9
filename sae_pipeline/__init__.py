"""Batch anomaly detection for Parquet data lakes with sparse autoencoders.

The library is plain Python (no orchestration imports); Prefect flows live in the separate `flows` package.
"""

from sae_pipeline.detector import SAEDetector

__all__ = ["SAEDetector"]
__version__ = "0.1.0"
