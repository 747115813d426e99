"""The roots of the platform's exceptions, one per domain, so a caller can catch a whole domain.

``FactoryError`` is every error the platform raises on purpose (with a message for people); below it:
``ConfigError`` (reviewed files and run parameters, ``operators.typed_yaml``), ``RefusedInput`` (a value
refused because it could change a command, a path or a pattern's meaning), ``SlurmError`` (clusters,
``operators.slurm.model``), ``DatasetError`` (registries, pins, shards, fetches), ``ServingError``
(inference endpoints and rollouts) and ``TrackingError`` (MLflow replays). Each domain root also keeps the
built-in base its callers already catch (``ValueError`` or ``RuntimeError``). Standard library only.
"""

from __future__ import annotations


class FactoryError(Exception):
    """An error the platform raises on purpose, with a message meant for people."""


class RefusedInput(FactoryError, ValueError):
    """A value refused because it could change a command line, a path or a pattern's meaning."""


class DatasetError(FactoryError, RuntimeError):
    """A dataset registry, revision, shard or fetch that cannot be used; the message names which."""


class ServingError(FactoryError, RuntimeError):
    """An inference endpoint, a smoke or latency check, or a rollout step that failed."""


class TrackingError(FactoryError, RuntimeError):
    """MLflow bookkeeping that could not be done (an offline store that cannot be replayed)."""
