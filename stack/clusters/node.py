"""A node: its own hostname and view of the file system, kept in persistent namespaces, and commands run on it.

A node is three namespaces: network (``ip netns``, made by ``network``), UTS and mount. The UTS and mount
namespaces are kept like ``ip netns`` keeps network ones, as bind mounts of their nsfs files
(``unshare --mount=FILE --uts=FILE``): they outlive any process, so every daemon of a node shares one
hostname and one mount table, and a restarted daemon finds the node as it was, like a real host.

A command runs on a node through ``nsenter --net --mount --uts`` and then ``chroot`` into the node's root
(the host's ``/`` or site B's trixie root). ``ip netns exec`` is not used: it remounts /sys, which hides
/sys/fs/cgroup, and slurmd 22.05 then dies ("No filesystem mounted on /sys/fs/cgroup").

The mount namespace shows the site's shared file system at ``/p``, the site's ``/etc/slurm``,
``/etc/munge``, ``/etc/hosts`` and ``/home``, the node's own disk at ``/var/local``, private ``/run``,
``/tmp`` and ``/dev/shm``, and hides the Airflow host's state under a tmpfs (the Python environments stay
visible read-only: software, like a site's module tree).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from stack.process import StackError, process_start_time

NETNS_DIR = Path("/run/netns")
CHROOT = "/usr/sbin/chroot"


@dataclass(frozen=True)
class Bind:
    source: Path  # on the host
    target: str  # inside the node
    read_only: bool = False


@dataclass(frozen=True)
class RunDir:
    """A folder in the node's private /run (emptied with the node, as at boot)."""

    path: str
    uid: int
    gid: int
    mode: int = 0o755


@dataclass(frozen=True)
class NodeSpace:
    """Everything that makes one node its own host."""

    hostname: str
    netns: str
    ns_dir: Path  # the nsfs files live here (a private mount)
    root: str  # "/" or a chroot
    binds: tuple[Bind, ...] = ()
    run_dirs: tuple[RunDir, ...] = ()
    hidden: tuple[str, ...] = ()  # host folders covered by an empty tmpfs
    kept: tuple[Bind, ...] = ()  # folders shown again (read-only) beneath a hidden one

    @property
    def mnt_file(self) -> Path:
        return self.ns_dir / f"{self.hostname}.mnt"

    @property
    def uts_file(self) -> Path:
        return self.ns_dir / f"{self.hostname}.uts"

    @property
    def ready_file(self) -> Path:
        """Written once the setup script has finished: the mount namespace's inode and the plan it was made to."""
        return self.ns_dir / f"{self.hostname}.ready"

    @property
    def plan_digest(self) -> str:
        """What the node's mounts were made from (its /run folders aside: they are the same on every start).

        A node made for another plan (the project moved, a bind was added) is made again, not reused."""
        plan = repr((self.hostname, self.root, self.binds, self.hidden, self.kept))
        return hashlib.sha256(plan.encode()).hexdigest()[:16]

    @property
    def chrooted(self) -> bool:
        return self.root != "/"

    def inside(self, path: str) -> str:
        """A node path as the setup script (still outside the chroot) must name it."""
        return path if not self.chrooted else self.root.rstrip("/") + path


# ---------------------------------------------------------------------------------------------- setup script
def _kernel_filesystems(space: NodeSpace) -> list[str]:
    """A chroot needs its own /proc, and the host's /sys and /dev (as slaves: an unmount inside stays inside)."""
    if not space.chrooted:
        return []
    proc, sys, dev = (shlex.quote(space.inside(path)) for path in ("/proc", "/sys", "/dev"))
    return [f"mount -t proc proc {proc}",
            f"mount --rbind /sys {sys}", f"mount --make-rslave {sys}",
            f"mount --rbind /dev {dev}", f"mount --make-rslave {dev}"]


def _private_scratch(space: NodeSpace) -> list[str]:
    lines = []
    for path, mode in (("/tmp", "1777"), ("/dev/shm", "1777"), ("/run", "755")):
        lines.append(f"mount -t tmpfs -o mode={mode},nosuid,nodev tmpfs {shlex.quote(space.inside(path))}")
    for run_dir in space.run_dirs:
        lines.append(f"install -d -m {run_dir.mode:o} -o {run_dir.uid} -g {run_dir.gid} "
                     f"{shlex.quote(space.inside(run_dir.path))}")
    return lines


def _stage(index: int, space: NodeSpace) -> str:
    return space.inside(f"/tmp/.kept/{index}")


def _stage_kept(space: NodeSpace) -> list[str]:
    """Folders to show again under a hidden one are bound aside first: the tmpfs will cover their source."""
    lines = []
    for index, kept in enumerate(space.kept):
        stage = shlex.quote(_stage(index, space))
        lines += [f"mkdir -p {stage}", f"mount --bind {shlex.quote(str(kept.source))} {stage}"]
    return lines


def _bind(bind: Bind, target: str) -> list[str]:
    source, quoted = shlex.quote(str(bind.source)), shlex.quote(target)
    make = f"[ -e {quoted} ] || {{ if [ -d {source} ]; then mkdir -p {quoted}; else touch {quoted}; fi; }}"
    lines = [make, f"mount --bind {source} {quoted}"]
    if bind.read_only:
        lines.append(f"mount -o remount,bind,ro {quoted}")
    return lines


def _binds(space: NodeSpace) -> list[str]:
    return [line for bind in space.binds for line in _bind(bind, space.inside(bind.target))]


def _hide(space: NodeSpace) -> list[str]:
    lines = [f"mkdir -p {shlex.quote(space.inside(path))} && "
             f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(space.inside(path))}" for path in space.hidden]
    for index, kept in enumerate(space.kept):
        target = shlex.quote(space.inside(kept.target))
        lines += [f"mkdir -p {target}", f"mount --move {shlex.quote(_stage(index, space))} {target}"]
        if kept.read_only:
            lines.append(f"mount -o remount,bind,ro {target}")
    if space.kept:
        lines.append(f"rm -rf {shlex.quote(space.inside('/tmp/.kept'))}")
    return lines


def setup_script(space: NodeSpace) -> str:
    """The shell run once in the node's new mount and UTS namespaces."""
    lines = ["set -e", *_kernel_filesystems(space), *_private_scratch(space), *_stage_kept(space),
             *_binds(space), *_hide(space), f"hostname {shlex.quote(space.hostname)}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- commands
def create_command(space: NodeSpace) -> list[str]:
    return ["unshare", f"--mount={space.mnt_file}", f"--uts={space.uts_file}", "--propagation", "private",
            "--", "sh", "-ec", setup_script(space)]


def on_node(space: NodeSpace, command: list[str], user: tuple[int, int] | None = None) -> list[str]:
    """``command`` run on the node, as root or as ``user`` (uid, gid; no supplementary groups)."""
    as_user = [f"--userspec={user[0]}:{user[1]}", "--groups="] if user else []
    return ["nsenter", f"--net={NETNS_DIR / space.netns}", f"--mount={space.mnt_file}", f"--uts={space.uts_file}",
            "--", CHROOT, *as_user, space.root, *command]


def run_on(space: NodeSpace, command: list[str], *, user: tuple[int, int] | None = None,
           input_text: str | None = None, timeout_s: float = 60.0,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
            "LANG": "C.UTF-8"}
    return subprocess.run(on_node(space, command, user), input=input_text, capture_output=True, text=True,
                          timeout=timeout_s, env={**base, **(env or {})})


# ---------------------------------------------------------------------------------------------- lifecycle
def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, file system type) of this mount namespace."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, after = line.split(" - ", 1)
        point = before.split()[4].replace("\\040", " ").replace("\\134", "\\")
        found.append((point, after.split()[0]))
    return found


def is_mount_point(path: Path) -> bool:
    return any(point == str(path) for point, _ in _mountinfo())


def is_nsfs(path: Path) -> bool:
    return any(point == str(path) and kind == "nsfs" for point, kind in _mountinfo())


def ensure_private_folder(folder: Path) -> None:
    """nsfs files of mount namespaces can only be kept on a mount that does not propagate (the namespace
    would otherwise hold a copy of itself): bind the folder onto itself and make it private, as ``ip netns``
    does for /run/netns."""
    folder.mkdir(parents=True, exist_ok=True)
    if not is_mount_point(folder):
        _checked(["mount", "--bind", str(folder), str(folder)])
    _checked(["mount", "--make-private", str(folder)])


def _checked(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise StackError(f"{' '.join(command[:6])}: {(result.stderr or result.stdout).strip()[-2000:]}")


def namespace_inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _ready_mark(space: NodeSpace) -> str:
    return f"{namespace_inode(space.mnt_file)} {space.plan_digest}"


def deleted_sources(space: NodeSpace) -> list[str]:
    """The node's bind mounts whose source was deleted on the host after the node was made (a checkout
    removed and cloned again at the same path): the node shows an empty, orphaned folder there."""
    result = subprocess.run(["nsenter", f"--mount={space.mnt_file}", "--", "cat", "/proc/self/mountinfo"],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        return [f"(cannot read the node's mounts: {result.stderr.strip()[-200:]})"]
    ours = {space.inside(bind.target) for bind in (*space.binds, *space.kept)}
    return [fields[4] for fields in map(str.split, result.stdout.splitlines())
            if fields[4] in ours and fields[3].endswith("//deleted")]


def is_ready(space: NodeSpace) -> bool:
    """Both namespaces kept, the setup script completed in this very mount namespace for the current plan,
    and every bound folder still the one on the host."""
    if not (is_nsfs(space.mnt_file) and is_nsfs(space.uts_file) and space.ready_file.exists()):
        return False
    return space.ready_file.read_text().strip() == _ready_mark(space) and not deleted_sources(space)


def create(space: NodeSpace) -> None:
    """Idempotent: a node that is ready is left alone (its daemons keep running in it). A node made for
    another plan is ended (its daemons too: they would go on seeing the old mounts) and made again."""
    if is_ready(space):
        return
    if is_nsfs(space.mnt_file):
        end_processes(space)
    release(space)
    ensure_private_folder(space.ns_dir)
    for file in (space.mnt_file, space.uts_file):
        file.touch()
    result = subprocess.run(create_command(space), capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        release(space)
        raise StackError(f"node {space.hostname}: setting up its namespaces failed:\n"
                         f"{(result.stderr or result.stdout).strip()[-2000:]}")
    space.ready_file.write_text(f"{_ready_mark(space)}\n")


def processes_in(space: NodeSpace) -> list[int]:
    """Processes living in the node (its mount or network namespace): daemons, job steps, SSH sessions."""
    wanted = {("mnt", namespace_inode(space.mnt_file)), ("net", namespace_inode(NETNS_DIR / space.netns))}
    wanted = {(kind, inode) for kind, inode in wanted if inode is not None}
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for kind, inode in wanted:
            if namespace_inode(Path(entry.path, "ns", kind)) == inode and process_start_time(int(entry.name)):
                found.append(int(entry.name))
                break
    return found


def end_processes(space: NodeSpace, grace_s: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, to whatever still lives in the node; the pids that were found."""
    first = processes_in(space)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in processes_in(space):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while processes_in(space) and time.monotonic() < deadline:
            time.sleep(0.1)
    return first


def release(space: NodeSpace) -> None:
    """Drop the kept namespaces: the node's mounts vanish with the last reference to them."""
    for file in (space.mnt_file, space.uts_file):
        while is_mount_point(file):
            if subprocess.run(["umount", str(file)], capture_output=True).returncode != 0:
                raise StackError(f"node {space.hostname}: cannot unmount {file}")
        file.unlink(missing_ok=True)
    space.ready_file.unlink(missing_ok=True)
