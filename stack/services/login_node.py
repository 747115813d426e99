"""The login node: OpenSSH's sshd, through which the Slurm SSH transport reaches the cluster as the job user."""

from __future__ import annotations

from pathlib import Path

from stack.services.common import Service, command_check, ensure_dir, run
from stack.settings import CLUSTER, HOST, JOB_USER, PORTS, StackPaths


def sshd_config_text(listen: str, port: int, host_key: str, authorized_keys_dir: str) -> str:
    """Key-only login for the job user at ``listen``, with room for many multiplexed sessions.

    A ControlMaster connection shared by many Airflow tasks opens one session per command, so
    MaxSessions is well above sshd's default of 10. ``PidFile none``: the stack's own pid file
    tracks sshd. UsePAM is off (no systemd or PAM session setup here), so the job user's
    password field must not start with ``!`` (install.sh sets it to ``*``).
    """
    return "\n".join([
        f"ListenAddress {listen}",
        f"Port {port}",
        f"HostKey {host_key}",
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
        f"AuthorizedKeysFile {authorized_keys_dir}/%u",
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


def ensure_key_pair(key: Path, comment: str) -> None:
    """An ed25519 key pair made once; half a pair is made again (ssh-keygen would ask before overwriting)."""
    public = Path(f"{key}.pub")
    if key.exists() and public.exists():
        return
    key.unlink(missing_ok=True)
    public.unlink(missing_ok=True)
    result = run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
    if result.returncode != 0:
        raise RuntimeError(f"ssh-keygen for {key}: {result.stderr}")


def ensure_client_key(paths: StackPaths) -> Path:
    """The job user's key the Airflow side logs in with, to the stack's login node and to the sites'."""
    ensure_dir(paths.ssh_key.parent, "root", 0o700)
    ensure_key_pair(paths.ssh_key, f"{JOB_USER}@{CLUSTER}")
    Path(f"{paths.ssh_key}.pub").chmod(0o600)  # everything under secrets/ is owner-only
    return paths.ssh_key


def login_check(host: str, port: int, key_file: Path, known_hosts: Path, command: str = "true") -> str | None:
    """None when the job user logs in with ``key_file``, the host key checked against ``known_hosts``."""
    return command_check([
        "ssh", "-F", "/dev/null", "-p", str(port), "-i", str(key_file),
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "ConnectTimeout=5",
        f"{JOB_USER}@{host}", command])


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
        return sshd_config_text(HOST, PORTS["sshd"], str(self.host_key), str(self.authorized_keys_dir))

    def _write_files(self) -> None:
        """Keys once; config, authorized_keys and known_hosts on every start (derived from the keys).

        StrictModes checks the authorized_keys file and every folder above it: all root-owned and
        not group- or world-writable, so the state folder must not sit under a folder like /tmp.
        """
        ensure_dir(self.paths.ssh, "root")
        ensure_key_pair(self.host_key, f"sshd@{CLUSTER}")
        client_key = ensure_client_key(self.paths)
        authorized = ensure_dir(self.authorized_keys_dir, "root") / JOB_USER
        authorized.write_text(Path(f"{client_key}.pub").read_text())
        authorized.chmod(0o644)
        key_type, key_text = Path(f"{self.host_key}.pub").read_text().split()[:2]
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
        return login_check(HOST, PORTS["sshd"], self.paths.ssh_key, self.paths.ssh_known_hosts)

    def service(self) -> Service:
        # sshd re-executes itself, so it must be started by its absolute path
        return Service("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.config_file)],
                       health=self.health, prepare=self.prepare,
                       url=f"ssh://{JOB_USER}@{HOST}:{PORTS['sshd']}", start_timeout_s=20, ports=(PORTS["sshd"],))
