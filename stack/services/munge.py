"""MUNGE: the credential daemon through which every Slurm daemon and command authenticates."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from stack.services.common import Service, command_check, ensure_dir, run

KEY = Path("/etc/munge/munge.key")


class Munge:
    def prepare(self) -> None:
        """munged refuses to start unless its folders and key belong to munge and are private."""
        ensure_dir(Path("/run/munge"), "munge", 0o755)
        ensure_dir(Path("/var/lib/munge"), "munge", 0o700)
        ensure_dir(Path("/var/log/munge"), "munge", 0o700)
        if not KEY.exists():
            run(["mungekey", "--create", "--keyfile", str(KEY)])
        munge = pwd.getpwnam("munge")
        os.chown(KEY, munge.pw_uid, munge.pw_gid)
        KEY.chmod(0o400)

    def service(self) -> Service:
        return Service("munge", ["/usr/sbin/munged", "--foreground", "--force"],
                       health=lambda: command_check(["sh", "-c", "munge -n | unmunge"]),
                       user="munge", prepare=self.prepare, start_timeout_s=15)
