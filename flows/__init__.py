"""Prefect flows that wire the `sae_pipeline` library steps together (the library never imports Prefect)."""
