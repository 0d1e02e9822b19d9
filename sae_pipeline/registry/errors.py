"""The error types of the model registry."""

from __future__ import annotations


class RegistryError(ValueError):
    """A registry request cannot be served: unknown version or alias, ambiguous prefix, no champion, an existing
    version, an unreadable model folder. Messages name the registry or file URI and say what to do.

    A ValueError, so the command line reports it as one `error:` line with exit status 2.
    """


class MissingChampionError(RegistryError):
    """No champion to score with: the command line adds the hint to train first."""
