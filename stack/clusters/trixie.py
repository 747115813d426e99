"""Site B's root: a writable overlay of the trixie root that ``./factory slurm24`` builds.

The trixie root (``<state>/chroots/trixie``) belongs to the Slurm 24.11 cluster of ``./factory slurm24``;
site B must not change it nor share its daemons' files. So site B mounts an overlay: the trixie root as
the read-only lower layer, the site's own upper layer on top. What site B adds (openssh-server for its
login node, a login-able job user) lands in its upper layer only. The overlay is also a distinct root
path, so ``slurm24 down`` (which ends every process whose root is the trixie root) never touches site B.

A missing trixie root is built with ``python -m stack.slurm24 install`` (debootstrap and apt, once):
the same code as ``./factory slurm24 up``, without starting that cluster.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from stack.clusters.node import is_mount_point
from stack.clusters.site import SiteLayout
from stack.process import StackError
from stack.settings import JOB_USER, REPO

PACKAGES = ("openssh-server",)  # the login node's sshd; the Slurm packages come with the lower layer
APT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def passwd_ids(root: Path, name: str) -> tuple[int, int]:
    """uid and gid of ``name`` in the passwd file of ``root`` (the trixie root's users differ from the host's)."""
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise StackError(f"no user {name} in {root}/etc/passwd")


class TrixieRoot:
    def __init__(self, layout: SiteLayout) -> None:
        self.layout = layout
        self.lower = layout.paths.state / "chroots" / "trixie"
        self.merged = layout.root

    @property
    def _stamp(self) -> Path:
        return self.merged / ".aifactory-site-packages"

    @property
    def _wanted(self) -> str:
        return " ".join(PACKAGES) + "\n"

    def lower_ready(self) -> bool:
        return (self.lower / ".aifactory-bootstrapped").exists() and (self.lower / ".aifactory-packages").exists()

    def is_ready(self) -> bool:
        return (is_mount_point(self.merged) and self._stamp.exists() and self._stamp.read_text() == self._wanted
                and self._login_allowed())

    def ensure(self) -> None:
        """Idempotent: build the lower layer if missing, mount the overlay, add site B's packages and user."""
        if not self.lower_ready():
            self._build_lower()
        self.mount()
        if not (self._stamp.exists() and self._stamp.read_text() == self._wanted):
            self._install_packages()
        if not self._login_allowed():
            self._allow_login()

    def _build_lower(self) -> None:
        result = subprocess.run([sys.executable, "-m", "stack.slurm24", "install"], capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=1800)
        if result.returncode != 0:
            raise StackError(f"building the trixie root failed:\n{(result.stdout + result.stderr)[-3000:]}")

    def mount(self) -> None:
        if is_mount_point(self.merged):
            return
        for folder in (self.layout.root_upper, self.layout.root_work, self.merged):
            folder.mkdir(parents=True, exist_ok=True)
        options = f"lowerdir={self.lower},upperdir={self.layout.root_upper},workdir={self.layout.root_work}"
        result = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(self.merged)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"mounting site B's root overlay at {self.merged}: {result.stderr.strip()}")

    def unmount(self) -> None:
        while is_mount_point(self.merged):
            result = subprocess.run(["umount", str(self.merged)], capture_output=True, text=True)
            if result.returncode != 0:
                raise StackError(f"unmounting {self.merged}: {result.stderr.strip()}")

    def _in_root(self, command: str) -> list[str]:
        """``command`` in the overlay with /proc and /dev, in a throwaway mount namespace: no mount outlives it."""
        root = str(self.merged)
        script = (f'mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" && mount --make-rslave "$1/dev" '
                  f'&& exec chroot "$1" sh -ec {shlex.quote(command)}')
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-ec", script, "in-root", root]

    def _install_packages(self) -> None:
        shutil.copyfile("/etc/resolv.conf", self.merged / "etc" / "resolv.conf")
        command = (f"apt-get update -qq && apt-get install -y -qq --no-install-recommends {' '.join(PACKAGES)} "
                   "&& apt-get clean")
        result = subprocess.run(self._in_root(command), capture_output=True, text=True, timeout=900,
                                env={"PATH": APT_PATH, "HOME": "/root", "LANG": "C.UTF-8",
                                     "DEBIAN_FRONTEND": "noninteractive"})
        if result.returncode != 0:
            raise StackError(f"site B root: installing {' '.join(PACKAGES)} failed:\n"
                             f"{(result.stdout + result.stderr)[-3000:]}")
        self._stamp.write_text(self._wanted)

    def _shadow_entry(self) -> list[str]:
        for line in (self.merged / "etc" / "shadow").read_text().splitlines():
            if line.split(":")[0] == JOB_USER:
                return line.split(":")
        return []

    def _login_allowed(self) -> bool:
        """sshd without PAM refuses an account whose password field starts with ``!`` (locked)."""
        entry = self._shadow_entry()
        return bool(entry) and not entry[1].startswith("!")

    def _allow_login(self) -> None:
        if not self._shadow_entry():
            raise StackError(f"site B root: no user {JOB_USER} (the trixie root's users come from slurm24 install)")
        result = subprocess.run(["chroot", str(self.merged), "usermod", "-p", "*", JOB_USER], capture_output=True,
                                text=True, env={"PATH": APT_PATH})
        if result.returncode != 0:
            raise StackError(f"site B root: usermod {JOB_USER}: {result.stderr.strip()}")
