"""The stack's pyslurm step without building anything: sources checked against SHA256SUMS, the wheel cache
and its keys, the unpack guard, and the skip (or failure, under FACTORY_REQUIRE_PYSLURM=1) without sources."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from stack import pyslurm
from stack.process import StackError
from stack.pyslurm import WheelCache, ensure, extract, listed_checksums, slurm_minor, verified_tarball


def tarball(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return path


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "vendor"
    folder.mkdir()
    release = tarball(folder / "pyslurm-22.5.3.tar.gz", {"pyslurm-22.5.3/setup.py": b"print()\n"},
                      {"pyslurm-22.5.3/docs/logo.png": "../logo.png"})
    digest = hashlib.sha256(release.read_bytes()).hexdigest()
    (folder / "SHA256SUMS").write_text(f"{digest}  pyslurm-22.5.3.tar.gz\n")
    monkeypatch.setenv("FACTORY_PYSLURM_SOURCES", str(folder))
    return folder


def test_a_source_tarball_is_used_only_when_it_matches_sha256sums(sources: Path) -> None:
    assert verified_tarball("22.5.3") == sources / "pyslurm-22.5.3.tar.gz"
    (sources / "SHA256SUMS").write_text(f"{'0' * 64}  pyslurm-22.5.3.tar.gz\n")
    with pytest.raises(StackError, match="does not match its SHA256SUMS line: refusing to build it"):
        verified_tarball("22.5.3")
    with pytest.raises(StackError, match=r"pyslurm-24\.11\.0\.tar\.gz or its line in .*SHA256SUMS is missing"):
        verified_tarball("24.11.0")


def test_sha256sums_lines_are_read_in_both_modes(tmp_path: Path) -> None:
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("abc  text.tar.gz\ndef *binary.tar.gz\n\n")
    assert listed_checksums(sums) == {"text.tar.gz": "abc", "binary.tar.gz": "def"}


def test_unpacking_keeps_links_inside_and_refuses_members_outside(sources: Path, tmp_path: Path) -> None:
    tree = extract(sources / "pyslurm-22.5.3.tar.gz", tmp_path / "out")
    assert (tree / "setup.py").read_text() == "print()\n"
    for members, links in (({"../evil": b"x"}, None), ({}, {"pyslurm-x/link": "../../etc/passwd"})):
        bad = tarball(tmp_path / "bad.tar.gz", members, links)
        with pytest.raises(StackError, match="outside its folder: refusing to unpack it"):
            extract(bad, tmp_path / "bad")


def test_a_cached_wheel_is_used_for_its_key_only_and_while_its_checksum_holds(tmp_path: Path) -> None:
    cache = WheelCache(tmp_path / "wheels")
    built = tmp_path / "build" / "pyslurm-22.5.3-cp311-cp311-linux_x86_64.whl"
    built.parent.mkdir()
    built.write_bytes(b"wheel")
    wheel = cache.put("22.5.3", "key A", built, 317)
    assert cache.get("22.5.3", "key A") == wheel and cache.get("22.5.3", "key B") is None
    digest = hashlib.sha256(b"wheel").hexdigest()
    assert (tmp_path / "wheels" / "SHA256SUMS").read_text() == f"{digest}  {wheel.name}\n"
    wheel.write_bytes(b"corrupt")
    assert cache.get("22.5.3", "key A") is None


@pytest.mark.parametrize(("text", "minor"), [("slurm-wlm 22.05.8", "22.05"), ("slurm 24.11.5\n", "24.11")])
def test_the_slurm_release_in_a_key_is_major_minor(text: str, minor: str) -> None:
    assert slurm_minor(text) == minor


def test_without_sources_the_step_skips_saying_how_to_build_pyslurm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FACTORY_PYSLURM_SOURCES", str(tmp_path / "absent"))
    monkeypatch.delenv("FACTORY_REQUIRE_PYSLURM", raising=False)
    assert ensure("host") is None
    said = capsys.readouterr().out
    assert "skipped (host): no vendored pyslurm sources" in said and "SLURM_INCLUDE_DIR" in said
    monkeypatch.setenv("FACTORY_REQUIRE_PYSLURM", "1")
    with pytest.raises(StackError, match="FACTORY_REQUIRE_PYSLURM=1 but no vendored pyslurm sources"):
        ensure("host")


def test_both_sites_are_known() -> None:
    assert {name: site.release for name, site in pyslurm.SITES.items()} == {"host": "22.5.3", "slurm24": "24.11.0"}


def test_the_host_build_key_needs_no_configured_cluster(monkeypatch: pytest.MonkeyPatch):
    """On a fresh machine pyslurm is built before the stack writes slurm.conf: `sinfo --version` failed there
    (it looks for a configuration first), so the Slurm release comes from the installed package."""
    import shutil
    import sys

    if not shutil.which("dpkg-query") or not Path("/var/lib/dpkg/info/slurm-client.list").exists():
        pytest.skip("no Debian slurm-client package on this machine (./factory setup installs it)")
    monkeypatch.setenv("SLURM_CONF", "/nonexistent/slurm.conf")
    host = pyslurm.HostPyslurm(pyslurm.StackPaths(Path("/nonexistent-state")))
    monkeypatch.setattr(pyslurm.HostPyslurm, "python", sys.executable)
    assert host.key_facts() == f"slurm 22.05, python {sys.version_info[0]}.{sys.version_info[1]}"


def test_the_host_import_check_needs_no_configured_cluster(monkeypatch: pytest.MonkeyPatch):
    """pyslurm 22.5.3 reads slurm.conf on import; before the stack wrote one the check failed (fresh machine)."""
    import sys

    monkeypatch.setenv("SLURM_CONF", "/nonexistent/slurm.conf")
    host = pyslurm.HostPyslurm(pyslurm.StackPaths(Path("/nonexistent-state")))
    probe = "import os, pathlib; print(pathlib.Path(os.environ['SLURM_CONF']).read_text().split()[0])"
    monkeypatch.setattr(pyslurm.HostPyslurm, "python", sys.executable)
    monkeypatch.setattr(pyslurm, "checked_output", lambda command, what, env=None: subprocess.run(
        [command[0], "-c", probe], capture_output=True, text=True, env=env, check=True).stdout)
    assert host.smoke_test() == "ClusterName=pyslurm-smoke"
