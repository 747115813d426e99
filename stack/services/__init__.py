"""The services of the local AI-factory stack: how each starts, when it is healthy, what it needs.

Each is a real daemon from Debian's packages or from the stack's Python environments, bound to
127.0.0.1. ``prepare`` writes configuration and initialises data before a start; ``bootstrap``
runs once the service is healthy (accounts, buckets, users), and is idempotent. One module per
service family; ``LocalFactory`` puts them together and ``stack.manager`` supervises them.
"""

from stack.services.common import (
    Check,
    Service,
    basic_auth,
    command_check,
    ensure_dir,
    http_check,
    http_get,
    port_check,
    run,
)
from stack.services.factory import LocalFactory
from stack.services.slurm import slurm_node_health

__all__ = [
    "Check",
    "LocalFactory",
    "Service",
    "basic_auth",
    "command_check",
    "ensure_dir",
    "http_check",
    "http_get",
    "port_check",
    "run",
    "slurm_node_health",
]
