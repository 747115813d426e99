"""A node kept in namespaces is reused only while it is what the stack would make now.

Real namespaces and bind mounts (root needed; CI runs as root): a node made for another plan, or one whose
bound folder was deleted and made again on the host (a checkout cloned again at the same path: the CI's
login node then showed an empty folder where the project should be), is made again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.clusters import node as nodes
from stack.clusters.node import Bind, NodeSpace

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="making mount namespaces needs root")


@pytest.fixture
def folder() -> Iterator[Path]:
    """Outside /tmp: a node has a /tmp of its own."""
    made = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="node-lifecycle-"))
    yield made
    shutil.rmtree(made, ignore_errors=True)


@pytest.fixture
def space(folder: Path) -> Iterator[NodeSpace]:
    tmp_path = folder
    project = tmp_path / "project"
    project.mkdir()
    (project / "marker").write_text("first\n")
    made = NodeSpace(hostname="lifecycle-test", netns="lifecycle-test-none", ns_dir=tmp_path / "ns", root="/",
                     binds=(Bind(project, str(tmp_path / "seen"), read_only=True),))
    yield made
    nodes.release(made)
    while nodes.is_mount_point(made.ns_dir):
        nodes._checked(["umount", str(made.ns_dir)])


def seen_marker(space: NodeSpace) -> str:
    """The marker file as the node sees it (its mount namespace only: the test node has no network)."""
    result = subprocess.run(["nsenter", f"--mount={space.mnt_file}", "--", "cat", f"{space.binds[0].target}/marker"],
                            capture_output=True, text=True, timeout=30)
    return result.stdout.strip() or result.stderr.strip()


def test_a_node_made_for_the_current_plan_is_reused(space: NodeSpace):
    nodes.create(space)
    inode = nodes.namespace_inode(space.mnt_file)
    assert nodes.is_ready(space) and nodes.deleted_sources(space) == []
    nodes.create(space)
    assert nodes.namespace_inode(space.mnt_file) == inode
    assert seen_marker(space) == "first"


def test_a_node_made_for_another_plan_is_made_again(space: NodeSpace, folder: Path):
    nodes.create(space)
    other = folder / "other"
    other.mkdir()
    (other / "marker").write_text("other\n")
    moved = NodeSpace(**{**space.__dict__, "binds": (Bind(other, space.binds[0].target, read_only=True),)})
    assert moved.plan_digest != space.plan_digest
    assert not nodes.is_ready(moved)
    nodes.create(moved)
    assert nodes.is_ready(moved) and seen_marker(moved) == "other"


def test_a_node_whose_bound_folder_was_deleted_and_made_again_is_made_again(space: NodeSpace):
    nodes.create(space)
    project = space.binds[0].source
    (project / "marker").unlink()
    project.rmdir()
    project.mkdir()
    (project / "marker").write_text("second\n")
    assert nodes.deleted_sources(space) == [space.binds[0].target]
    assert not nodes.is_ready(space)
    nodes.create(space)
    assert nodes.is_ready(space) and seen_marker(space) == "second"


def test_a_node_marked_ready_by_an_older_stack_is_not_taken_as_ready(space: NodeSpace):
    nodes.create(space)
    space.ready_file.write_text(f"{nodes.namespace_inode(space.mnt_file)}\n")  # the mark without a plan
    assert not nodes.is_ready(space)
