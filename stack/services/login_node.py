"""The login node: OpenSSH's sshd, through which the Slurm SSH transport reaches the cluster as the job user."""

from __future__ import annotations

from pathlib import Path

from stack.services.common import Service, command_check, ensure_dir, run
from stack.settings import CLUSTER, HOST, JOB_USER, PORTS, StackPaths


class LoginNode:
    def __init__(self, paths: StackPaths) -> None:
        self.paths = paths

    @property
    def host_key(self) -> Path:
        return self.paths.ssh / "ssh_host_ed25519_key"

    @property
    def config_file(self) -> Path:
        return self.paths.ssh / "sshd_config"

    @property
    def authorized_keys_dir(self) -> Path:
        return self.paths.ssh / "authorized_keys"

    def sshd_config(self) -> str:
        """Key-only login for the job user on loopback, with room for many multiplexed sessions.

        A ControlMaster connection shared by many Airflow tasks opens one session per command, so
        MaxSessions is well above sshd's default of 10. ``PidFile none``: the stack's own pid file
        tracks sshd. UsePAM is off (no systemd or PAM session setup here), so the job user's
        password field must not start with ``!`` (install.sh sets it to ``*``).
        """
        return "\n".join([
            f"ListenAddress {HOST}",
            f"Port {PORTS['sshd']}",
            f"HostKey {self.host_key}",
            "PidFile none",
            "UsePAM no",
            "PubkeyAuthentication yes",
            "AuthenticationMethods publickey",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitEmptyPasswords no",
            "HostbasedAuthentication no",
            "GSSAPIAuthentication no",
            "KerberosAuthentication no",
            "PermitRootLogin no",
            f"AllowUsers {JOB_USER}",
            f"AuthorizedKeysFile {self.authorized_keys_dir}/%u",
            "StrictModes yes",
            "MaxSessions 64",
            "MaxStartups 64:30:128",
            "LoginGraceTime 30",
            "ClientAliveInterval 30",
            "ClientAliveCountMax 4",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "PermitUserEnvironment no",
            "X11Forwarding no",
            "AllowAgentForwarding no",
            "AllowTcpForwarding no",
            "AllowStreamLocalForwarding no",
            "PermitTunnel no",
            "Subsystem sftp internal-sftp",
            "",
        ])

    def _write_files(self) -> None:
        """Keys once; config, authorized_keys and known_hosts on every start (derived from the keys).

        StrictModes checks the authorized_keys file and every folder above it: all root-owned and
        not group- or world-writable, so the state folder must not sit under a folder like /tmp.
        """
        ensure_dir(self.paths.ssh, "root")
        ensure_dir(self.paths.ssh_key.parent, "root", 0o700)
        host_key, client_key = self.host_key, self.paths.ssh_key
        for key, comment in ((host_key, f"sshd@{CLUSTER}"), (client_key, f"{JOB_USER}@{CLUSTER}")):
            public = Path(f"{key}.pub")
            if key.exists() and public.exists():
                continue
            key.unlink(missing_ok=True)  # half a key pair: ssh-keygen would ask before overwriting
            public.unlink(missing_ok=True)
            result = run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
            if result.returncode != 0:
                raise RuntimeError(f"ssh-keygen for {key}: {result.stderr}")
        Path(f"{client_key}.pub").chmod(0o600)  # everything under secrets/ is owner-only
        authorized = ensure_dir(self.authorized_keys_dir, "root") / JOB_USER
        authorized.write_text(Path(f"{client_key}.pub").read_text())
        authorized.chmod(0o644)
        key_type, key_text = Path(f"{host_key}.pub").read_text().split()[:2]
        self.paths.ssh_known_hosts.write_text(f"[{HOST}]:{PORTS['sshd']} {key_type} {key_text}\n")
        self.paths.ssh_known_hosts.chmod(0o644)
        self.config_file.write_text(self.sshd_config())

    def prepare(self) -> None:
        ensure_dir(Path("/run/sshd"), "root")  # sshd's privilege-separation folder; /run is emptied at boot
        self._write_files()

    def health(self) -> str | None:
        """Healthy only when the job user really logs in with the stack's key and known_hosts.

        No separate port probe: a bare TCP connect shows up in sshd's log as a failed key exchange,
        and ssh's own error already names the port when nothing listens.
        """
        return command_check([
            "ssh", "-F", "/dev/null", "-p", str(PORTS["sshd"]), "-i", str(self.paths.ssh_key),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.paths.ssh_known_hosts}", "-o", "ConnectTimeout=5",
            f"{JOB_USER}@{HOST}", "true"])

    def service(self) -> Service:
        # sshd re-executes itself, so it must be started by its absolute path
        return Service("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.config_file)],
                       health=self.health, prepare=self.prepare,
                       url=f"ssh://{JOB_USER}@{HOST}:{PORTS['sshd']}", start_timeout_s=20, ports=(PORTS["sshd"],))
