"""Shared fixtures. Integration tests talk to the running local stack (``./factory stack up``).

``./factory test`` brings the stack up first and sets ``FACTORY_REQUIRE_STACK=1``: then a missing
stack is an error, never a silent skip. Run directly without a stack, integration tests skip and
say why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stack.settings import StackPaths

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kind = "integration" if "/integration/" in str(item.fspath) else "unit"
        item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture(scope="session")
def stack_info() -> dict:
    info_file = StackPaths.from_env().info_file
    if not info_file.exists():
        message = f"the local stack is not up (no {info_file}): run ./factory stack up"
        if os.environ.get("FACTORY_REQUIRE_STACK") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return json.loads(info_file.read_text())
