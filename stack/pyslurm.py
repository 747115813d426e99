"""pyslurm for the two local clusters, built once from the vendored tagged sources and cached as wheels.

pyslurm must match libslurm's major.minor exactly and PyPI carries it only for Slurm 25.11, so a site
builds it against its own libslurm (README "pyslurm"). The stack does the same for its clusters:

- ``host``: pyslurm 22.5.3 against bookworm's libslurm-dev (Slurm 22.05), with Cython<3 and
  setuptools<70 in a throwaway venv; installed into the orchestrator venv (~5 min to build, once);
- ``slurm24``: pyslurm 24.11.0 inside the trixie chroot with trixie's python3 and cython3 (its
  libslurmfull needs glibc >= 2.38, so it imports only there); installed into ``/opt/pyslurm-venv`` of
  the chroot (~3 min to build, once).

Sources are checked against the vendor folder's SHA256SUMS before a build. Wheels are cached under
``<state>/wheels/pyslurm`` with their checksums and the key they were built for (source checksum,
Slurm major.minor, Python, recipe); a second run verifies the cache and the installed copy and does
nothing (~0.1 s). Without the vendored sources the step is skipped, saying how to build pyslurm.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from operators.slurm.pyslurm_control import BUILD_HINT
from stack.process import StackError
from stack.settings import REPO, StackPaths
from stack.slurm24.cluster import DAEMON_PATH, Slurm24

RECIPE = 1  # bump when the build recipe changes: cached wheels are rebuilt
SOURCES_ENV = "FACTORY_PYSLURM_SOURCES"
HOST_LIBSLURM = ("/usr/include", "/usr/lib/x86_64-linux-gnu")  # SLURM_INCLUDE_DIR, SLURM_LIB_DIR (Debian)
HOST_BUILD_REQUIREMENTS = ("Cython<3", "setuptools<70", "wheel", "pip")
CHROOT_VENV = "/opt/pyslurm-venv"
CHROOT_PACKAGE_DIR = "/opt/pyslurm-venv/aifactory"  # copies of this checkout's operators package, by content
KEPT_PACKAGE_COPIES = 3
CHROOT_BUILD_DIR = "/var/tmp/pyslurm-build"
CHROOT_RUNTIME_PACKAGES = ("python3", "python3-venv")
CHROOT_BUILD_PACKAGES = ("python3-dev", "cython3", "python3-setuptools", "python3-wheel", "python3-packaging", "gcc",
                         "libc6-dev", "libslurm-dev")
# not `sinfo --version`: before the stack has written slurm.conf (a fresh machine) it fails looking for one
SLURM_PACKAGE_VERSION = ["dpkg-query", "-W", "-f=${Version}", "slurm-client"]
SMOKE_SLURM_CONF = "ClusterName=pyslurm-smoke\nSlurmctldHost=localhost\n"  # all an import needs
STAMP = ".pyslurm-wheel"  # in the venv: the sha256 of the wheel installed there


def chroot_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"PATH": DAEMON_PATH, "HOME": "/root", "LANG": "C.UTF-8", **(extra or {})}


def say(line: str) -> None:
    print(f"[pyslurm] {line}", flush=True)


def sources() -> Path:
    """The vendored pyslurm releases: ``$FACTORY_PYSLURM_SOURCES``, else ``../shared/vendor/pyslurm`` beside
    the checkout."""
    return Path(os.environ.get(SOURCES_ENV) or REPO.parent / "shared" / "vendor" / "pyslurm")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def listed_checksums(sums: Path) -> dict[str, str]:
    """``sha256sum`` output: file name -> checksum."""
    lines = sums.read_text().splitlines() if sums.exists() else []
    return {name.lstrip("*"): checksum for checksum, name in (line.split(None, 1) for line in lines if line.strip())}


def verified_tarball(release: str) -> Path:
    """The release's source tarball, once its checksum matches the vendor folder's SHA256SUMS."""
    tarball = sources() / f"pyslurm-{release}.tar.gz"
    expected = listed_checksums(sources() / "SHA256SUMS").get(tarball.name)
    if not tarball.exists() or expected is None:
        raise StackError(f"pyslurm: {tarball} or its line in {sources() / 'SHA256SUMS'} is missing")
    if sha256(tarball) != expected:
        raise StackError(f"pyslurm: {tarball} does not match its SHA256SUMS line: refusing to build it")
    return tarball


def escapes(member: tarfile.TarInfo) -> bool:
    """Whether a member (or what a link of it points to) would land outside the folder it is unpacked in."""
    if not (member.isfile() or member.isdir() or member.issym()):
        return True
    targets = [member.name]
    if member.issym():
        targets.append(os.path.join(os.path.dirname(member.name), member.linkname))
    return any(target.startswith("/") or os.path.normpath(target).startswith("..") for target in targets)


def extract(tarball: Path, into: Path) -> Path:
    """The unpacked source tree (the tarball's single top folder); no member may land outside ``into``."""
    with tarfile.open(tarball) as archive:
        if bad := [member.name for member in archive.getmembers() if escapes(member)]:
            raise StackError(f"pyslurm: {tarball} holds {bad[:3]}, outside its folder: refusing to unpack it")
        archive.extractall(into)  # members checked above: Python 3.11.2 has no extraction filter
    return into / tarball.name.removesuffix(".tar.gz")


def slurm_minor(version_text: str) -> str:
    """``22.05`` from ``slurm-wlm 22.05.8`` or ``slurm 24.11.5``."""
    found = re.search(r"(\d+)\.(\d+)\.\d+", version_text)
    if not found:
        raise StackError(f"pyslurm: cannot read a Slurm version from {version_text!r}")
    return f"{found.group(1)}.{found.group(2)}"


def run_logged(command: list[str], log: Path, what: str, env: dict[str, str] | None = None,
               timeout_s: float = 1800) -> None:
    """Run a long step with its output in ``log``; a failure names the log and shows its end."""
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=timeout_s)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise StackError(f"pyslurm: {what} failed (exit {result.returncode}, log {log}):\n{tail}")


def checked_output(command: list[str], what: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    if result.returncode != 0:
        raise StackError(f"pyslurm: {what} failed: {(result.stdout + result.stderr).strip()[-2000:]}")
    return result.stdout


class WheelCache:
    """Built wheels with their checksums (``SHA256SUMS``) and the key each was built for (``builds.json``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = folder / "builds.json"

    def _builds(self) -> dict[str, dict[str, str]]:
        return json.loads(self.manifest.read_text()) if self.manifest.exists() else {}

    def get(self, release: str, key: str) -> Path | None:
        """The cached wheel for this key, if its checksum still matches."""
        entry = self._builds().get(release)
        if entry is None or entry["key"] != key:
            return None
        wheel = self.folder / entry["wheel"]
        return wheel if wheel.exists() and sha256(wheel) == entry["sha256"] else None

    def put(self, release: str, key: str, built: Path, seconds: float) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        wheel = self.folder / built.name
        shutil.copyfile(built, wheel)
        wheel.chmod(0o644)
        builds = self._builds()
        builds[release] = {"wheel": wheel.name, "sha256": sha256(wheel), "key": key,
                           "build_s": f"{seconds:.0f}", "built": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.manifest.write_text(json.dumps(builds, indent=2) + "\n")
        (self.folder / "SHA256SUMS").write_text(
            "".join(f"{entry['sha256']}  {entry['wheel']}\n" for entry in builds.values()))
        return wheel

    def entries(self) -> dict[str, dict[str, str]]:
        return self._builds()


@contextlib.contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """One build or install per site at a time (CI and a developer may both run setup)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class Installation:
    site: str
    release: str
    wheel: Path
    built_s: float | None  # None: taken from the cache
    installed: bool  # False: already installed


class PyslurmSite(ABC):
    """One cluster's pyslurm: which release, how to build it, where it is installed."""

    name: str
    release: str

    def __init__(self, paths: StackPaths) -> None:
        self.paths = paths
        self.log = paths.logs / "pyslurm" / f"build-{self.release}.log"

    @abstractmethod
    def prepare(self) -> None:
        """What installing and running a wheel needs (the chroot's python3)."""

    @abstractmethod
    def prepare_build(self) -> None:
        """What building needs: libslurm's headers, a compiler, Cython."""

    @abstractmethod
    def key_facts(self) -> str:
        """The Slurm major.minor and Python the wheel is for."""

    @abstractmethod
    def workdir(self) -> Path:
        """A fresh folder to build in, as the host sees it (removed after the build)."""

    @abstractmethod
    def build(self, tarball: Path, work: Path) -> Path:
        """Build the wheel in ``work``; its path."""

    @property
    @abstractmethod
    def venv(self) -> Path:
        """The venv pyslurm is installed into, as the host sees it."""

    @abstractmethod
    def install(self, wheel: Path) -> None: ...

    @abstractmethod
    def smoke_test(self) -> str:
        """Import pyslurm where it is installed; the version it reports."""

    def key(self, tarball_sha: str) -> str:
        return f"source {tarball_sha[:16]}, {self.key_facts()}, recipe {RECIPE}"

    def installed_wheel(self) -> str | None:
        """The sha256 of the wheel installed in the venv, if it is still installed there (``uv pip sync``
        of a changed lock removes it)."""
        stamp = self.venv / STAMP
        present = list(self.venv.glob(f"lib/python3*/site-packages/pyslurm-{self.release}.dist-info"))
        return stamp.read_text().strip() if stamp.exists() and present else None

    def ensure(self, cache: WheelCache, progress: Callable[[str], None] = say) -> Installation:
        """Build (once) and install (when not installed); idempotent, one run at a time per site."""
        tarball = verified_tarball(self.release)
        with locked(cache.folder / f".{self.name}.lock"):
            self.prepare()
            key = self.key(sha256(tarball))
            wheel, built_s = cache.get(self.release, key), None
            if wheel is None:
                wheel, built_s = self.build_into(cache, tarball, key, progress)
            digest = sha256(wheel)
            if self.installed_wheel() == digest:
                return Installation(self.name, self.release, wheel, built_s, False)
            self.install(wheel)
            version = self.smoke_test()
            (self.venv / STAMP).write_text(digest + "\n")
            progress(f"{self.name}: pyslurm {version} installed into {self.venv}")
            return Installation(self.name, self.release, wheel, built_s, True)

    def build_into(self, cache: WheelCache, tarball: Path, key: str,
                   progress: Callable[[str], None]) -> tuple[Path, float]:
        """Build the wheel and cache it; the cached wheel and the seconds it took."""
        progress(f"{self.name}: building pyslurm {self.release} ({key}); log {self.log}")
        began = time.monotonic()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        self.prepare_build()
        work = self.workdir()
        try:
            built = self.build(tarball, work)
            seconds = time.monotonic() - began
            wheel = cache.put(self.release, key, built, seconds)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        progress(f"{self.name}: built {wheel.name} in {seconds:.0f} s")
        return wheel, seconds


class HostPyslurm(PyslurmSite):
    """22.5.3 for the host's Slurm 22.05, in the orchestrator venv."""

    name = "host"
    release = "22.5.3"

    @property
    def venv(self) -> Path:
        return self.paths.venv("orchestrator")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def uv(self) -> str:
        return str(self.paths.state / "tools" / "bin" / "uv")

    def prepare(self) -> None:
        if not Path(self.python).exists():
            raise StackError(f"pyslurm: no orchestrator venv at {self.venv}: run ./factory setup")

    def prepare_build(self) -> None:
        include = Path(HOST_LIBSLURM[0]) / "slurm" / "slurm_version.h"
        if include.exists():
            return
        say("apt-get install libslurm-dev (host: libslurm's headers)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "libslurm-dev"]
        if subprocess.run(install, capture_output=True, env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
            checked_output(install, "apt-get install libslurm-dev", env)

    def key_facts(self) -> str:
        slurm = slurm_minor(checked_output(SLURM_PACKAGE_VERSION, "the slurm-client package's version"))
        python = checked_output([self.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                "the orchestrator's python").strip()
        return f"slurm {slurm}, python {python}"

    def workdir(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="pyslurm-build-"))

    def build(self, tarball: Path, work: Path) -> Path:
        builder = work / "venv"
        run_logged([self.uv, "venv", "-q", "--python", self.python, str(builder)], self.log, "the build venv")
        run_logged([self.uv, "pip", "install", "-q", "--python", str(builder / "bin" / "python"),
                    *HOST_BUILD_REQUIREMENTS], self.log, "installing Cython<3 and setuptools<70")
        source = extract(tarball, work)
        env = {**os.environ, "SLURM_INCLUDE_DIR": HOST_LIBSLURM[0], "SLURM_LIB_DIR": HOST_LIBSLURM[1]}
        run_logged([str(builder / "bin" / "python"), "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
                    "--disable-pip-version-check", "-w", str(work / "out"), str(source)], self.log,
                   f"building pyslurm {self.release}", env)
        return single_wheel(work / "out")

    def install(self, wheel: Path) -> None:
        checked_output([self.uv, "pip", "install", "-q", "--python", self.python, "--no-deps", "--reinstall",
                        "--compile-bytecode", str(wheel)], f"installing {wheel.name} into {self.venv}")

    def smoke_test(self) -> str:
        """pyslurm 22.5.3 reads a slurm.conf on import: on a fresh machine the stack has not written the
        local cluster's yet, so the import is checked against a minimal one of its own."""
        with tempfile.TemporaryDirectory(prefix="pyslurm-smoke-") as folder:
            config = Path(folder) / "slurm.conf"
            config.write_text(SMOKE_SLURM_CONF)
            env = {**os.environ, "SLURM_CONF": str(config)}
            return checked_output([self.python, "-c", "import pyslurm; print(pyslurm.version())"],
                                  f"importing pyslurm in {self.venv}", env).strip()


class ChrootPyslurm(PyslurmSite):
    """24.11.0 for the chroot's Slurm 24.11, in ``/opt/pyslurm-venv`` there (trixie's glibc and Python)."""

    name = "slurm24"
    release = "24.11.0"

    def __init__(self, paths: StackPaths, cluster: Slurm24 | None = None) -> None:
        super().__init__(paths)
        self.cluster = cluster or Slurm24(paths)

    @property
    def venv(self) -> Path:
        return self.cluster.inside(CHROOT_VENV)

    @property
    def python(self) -> str:
        """The venv's interpreter as the chroot sees it."""
        return f"{CHROOT_VENV}/bin/python"

    def _apt(self, packages: tuple[str, ...], stamp_name: str) -> None:
        stamp = self.cluster.inside(f"/.aifactory-{stamp_name}")
        wanted = " ".join(packages) + "\n"
        if stamp.exists() and stamp.read_text() == wanted:
            return
        say(f"apt-get install {' '.join(packages)} (in the chroot, once)")
        env = chroot_env({"DEBIAN_FRONTEND": "noninteractive"})
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
                        ["apt-get", "clean"]):
            checked_output(self.cluster.chroot(command), f"{' '.join(command[:2])} in the chroot", env)
        stamp.write_text(wanted)

    def prepare(self) -> None:
        if not self.cluster.installed:
            raise StackError("pyslurm: the Slurm 24.11 chroot is not installed: run ./factory slurm24 up")
        self.cluster.mount()  # apt and the compiler need /proc and /dev
        self._apt(CHROOT_RUNTIME_PACKAGES, "pyslurm-runtime")

    def prepare_build(self) -> None:
        self._apt(CHROOT_BUILD_PACKAGES, "pyslurm-build")

    def _in_chroot(self, command: list[str], what: str, env: dict[str, str] | None = None) -> str:
        return checked_output(self.cluster.chroot(command), what, chroot_env(env))

    def key_facts(self) -> str:
        slurm = slurm_minor(self._in_chroot(SLURM_PACKAGE_VERSION, "the chroot's slurm-client package version"))
        python = self._in_chroot(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 "the chroot's python3").strip()
        return f"slurm {slurm}, python {python}"

    def workdir(self) -> Path:
        work = self.cluster.inside(CHROOT_BUILD_DIR)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        return work

    def build(self, tarball: Path, work: Path) -> Path:
        source = "/" + str(extract(tarball, work).relative_to(self.cluster.root))
        builder = f"{CHROOT_BUILD_DIR}/venv"
        env = chroot_env({"SLURM_INCLUDE_DIR": "/usr/include", "SLURM_LIB_DIR": "/usr/lib/x86_64-linux-gnu",
                          "PYSLURM_BUILD_JOBS": str(os.cpu_count() or 1)})
        run_logged(self.cluster.chroot(["python3", "-m", "venv", "--system-site-packages", builder]), self.log,
                   "the build venv in the chroot", env)
        run_logged(self.cluster.chroot([f"{builder}/bin/python", "-m", "pip", "wheel", "--no-build-isolation",
                                        "--no-deps", "--no-index", "--disable-pip-version-check", "-w",
                                        f"{CHROOT_BUILD_DIR}/out", source]), self.log,
                   f"building pyslurm {self.release} in the chroot", env)
        return single_wheel(work / "out")

    def install(self, wheel: Path) -> None:
        shutil.rmtree(self.venv, ignore_errors=True)
        self._in_chroot(["python3", "-m", "venv", CHROOT_VENV], f"python3 -m venv {CHROOT_VENV} in the chroot")
        inbox = self.cluster.inside(CHROOT_BUILD_DIR)
        inbox.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wheel, inbox / wheel.name)
        try:
            self._in_chroot([f"{CHROOT_VENV}/bin/pip", "install", "-q", "--no-deps", "--no-index",
                             "--disable-pip-version-check", f"{CHROOT_BUILD_DIR}/{wheel.name}"],
                            f"installing {wheel.name} into {CHROOT_VENV} in the chroot")
        finally:
            shutil.rmtree(inbox, ignore_errors=True)

    def smoke_test(self) -> str:
        return self._in_chroot([self.python, "-c", "import pyslurm.version as v; print(v.__version__)"],
                               f"importing pyslurm in the chroot's {CHROOT_VENV}").strip()

    def package_copy(self) -> str:
        """This checkout's ``operators`` package inside the chroot (its Python files, in a folder named by
        their content); the chroot path to put on PYTHONPATH."""
        files = sorted(path for path in (REPO / "operators").rglob("*.py") if "__pycache__" not in path.parts)
        digest = hashlib.sha256(b"".join(path.relative_to(REPO).as_posix().encode() + path.read_bytes()
                                         for path in files)).hexdigest()[:16]
        folder = f"{CHROOT_PACKAGE_DIR}/{digest}"
        target = self.cluster.inside(folder)
        if not target.exists():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            for path in files:
                copy = partial / path.relative_to(REPO)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, copy)
            partial.chmod(0o755)
            partial.rename(target)
            prune_copies(target.parent, keep=KEPT_PACKAGE_COPIES)
        return folder

    def call_command(self, user: str) -> list[str]:
        """The command that runs one ``operators.slurm.pyslurm_call`` request in the chroot as ``user``."""
        if self.installed_wheel() is None:
            raise StackError(f"pyslurm {self.release} is not installed in the chroot: run ./factory slurm24 up")
        home = pwd.getpwnam(user).pw_dir
        environment = [f"PYTHONPATH={self.package_copy()}", "PYTHONDONTWRITEBYTECODE=1", f"HOME={home}",
                       "LANG=C.UTF-8", "PATH=/usr/bin:/bin"]
        return self.cluster.chroot(["/usr/bin/env", "-i", *environment, self.python, "-m",
                                    "operators.slurm.pyslurm_call"], user)


def prune_copies(folder: Path, keep: int) -> None:
    """The newest ``keep`` package copies stay (checkouts testing at the same time each have theirs)."""
    copies = sorted((path for path in folder.iterdir() if path.is_dir()), key=lambda path: path.stat().st_mtime)
    for stale in copies[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)


def single_wheel(folder: Path) -> Path:
    wheels = sorted(folder.glob("pyslurm-*.whl"))
    if len(wheels) != 1:
        raise StackError(f"pyslurm: expected one wheel in {folder}, found {[w.name for w in wheels]}")
    return wheels[0]


SITES: dict[str, type[PyslurmSite]] = {"host": HostPyslurm, "slurm24": ChrootPyslurm}


def missing_sources_message() -> str:
    return (f"no vendored pyslurm sources at {sources()} (or set {SOURCES_ENV} to a folder with the tagged "
            f"releases and their SHA256SUMS), so pyslurm is not built here. {BUILD_HINT}")


def ensure(site: str, paths: StackPaths | None = None) -> Installation | None:
    """Build and install pyslurm for ``site``; None (and a message) when the sources are not here."""
    if not sources().is_dir():
        if os.environ.get("FACTORY_REQUIRE_PYSLURM") == "1":
            raise StackError(f"FACTORY_REQUIRE_PYSLURM=1 but {missing_sources_message()}")
        say(f"skipped ({site}): {missing_sources_message()} The pyslurm transport's tests skip.")
        return None
    paths = paths or StackPaths.from_env()
    return SITES[site](paths).ensure(WheelCache(paths.state / "wheels" / "pyslurm"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.pyslurm",
                                     description="Build (once, cached) and install pyslurm for a local cluster.")
    parser.add_argument("site", choices=[*SITES, "status"],
                        help="host: 22.5.3 into the orchestrator venv; slurm24: 24.11.0 into the trixie chroot")
    args = parser.parse_args(argv)
    if args.site == "status":
        paths = StackPaths.from_env()
        print(json.dumps(WheelCache(paths.state / "wheels" / "pyslurm").entries(), indent=2))
        return 0
    try:
        ensure(args.site)
    except StackError as error:
        print(f"[pyslurm] {args.site} failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
