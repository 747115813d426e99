"""The two local Slurm sites (stack/clusters): warm ``up`` and their memory; staging 1 GB through a login node.

(a) Warm ``up`` of the sites only (``stack.manager.SiteStack``) while they run: seconds per call (every
    service must be reported as already running; the sites are never stopped). Memory: every site
    service's process tree (its pid file's process and all its descendants: slurmd's job steps and
    sshd's login sessions count), VmRSS summed, and PSS (shared pages split between their users).
    Nothing is started: if a service is not up before the first call, (a) is skipped and says why.
(b) Staging 1 GB of random data (generated once, cached under ``$FACTORY_STATE/bench/sites/``) to site A's
    ``/p/scratch`` through the project's SSH file channel (``SshFiles.stage``, what ``SlurmJobOperator``
    stages a job's folder with), next to plain ``scp`` of the same file to the login node, interleaved
    in the same run; seconds, MB/s (10^6 bytes), the ratio; both copies are checked (size, md5 in the
    first round) and removed from the site at the end, also on an error or Ctrl-C.

The status RPCs of watched jobs on both sites are ``sites_status_rpcs.py``; it uses this module's
helpers. Prints one JSON line. ``BENCH_WARM_RUNS`` (3), ``BENCH_ROUNDS`` (2), ``BENCH_SITE`` (site_a).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.slurm_polling import exit_cleanly_on_sigterm
from stack.clusters.site import SCRATCH, SITES, Site, SiteLayout
from stack.manager import SiteStack
from stack.process import family
from stack.services.sites import SiteCluster
from stack.settings import StackPaths

WARM_RUNS = int(os.environ.get("BENCH_WARM_RUNS", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
STAGE_SITE = os.environ.get("BENCH_SITE", "site_a")
DATASET_BYTES = 1_000_000_000
RATIO_GOAL = 1.2  # our staging within 1.2x of scp's time
MIB = 1024 * 1024


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- the sites
class BenchSite:
    """One site as a client of it: its info file, its node commands and the project's transport to it."""

    def __init__(self, paths: StackPaths, site: Site, control_dir: str) -> None:
        info_file = SiteLayout(paths, site).info_file
        if not info_file.exists():
            raise SystemExit(f"{site.name} is not up (no {info_file}): run ./factory stack up")
        self.site = site
        self.cluster = SiteCluster(paths, site)
        self.info = json.loads(info_file.read_text())
        self.control_dir = control_dir  # the benchmark's own SSH master, never Airflow's shared one

    @property
    def name(self) -> str:
        return self.site.name

    def transport(self, suffix: str = ""):
        """The project's transport from the site's Airflow connection (``factory_slurm_<site>``), built by
        ``SlurmHook`` as a task would; only the SSH master's socket folder is the benchmark's own."""
        from airflow.sdk import Connection  # Airflow's import is slow: only when a transport is needed

        from operators.slurm.hooks import SlurmHook

        conn_id = f"factory_slurm_{self.name}{suffix}"
        definition = self.cluster.connections()[conn_id]
        extra = {**definition["extra"], "control_dir": self.control_dir}
        hook = SlurmHook(conn_id)
        hook._connection = Connection(conn_id=conn_id, conn_type=definition["conn_type"], host=definition["host"],
                                      port=definition["port"], login=definition["login"],
                                      password=definition.get("password"), extra=json.dumps(extra))
        return hook.get_transport()

    def ssh_argv(self) -> list[str]:
        """Plain OpenSSH options to the login node (key, checked host key), no shared master."""
        login = self.info["login"]
        return ["-F", "/dev/null", "-i", login["key_file"], "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={login['known_hosts']}",
                "-o", "ConnectTimeout=10"]

    def on_ctl(self, argv: list[str], timeout_s: float = 30.0) -> str:
        result = self.cluster.run_on(self.site.ctl, argv, timeout_s=timeout_s)
        if result.returncode != 0:
            raise RuntimeError(f"{self.name} {self.site.ctl.hostname}: {shlex.join(argv)}: "
                               f"{(result.stderr or result.stdout).strip()[-500:]}")
        return result.stdout


def close_masters(control_dir: str) -> None:
    """The benchmark's own SSH masters (ControlPersist would keep them 10 minutes), then their folder."""
    for socket_file in Path(control_dir).glob("*"):
        if socket_file.is_socket():
            subprocess.run(["ssh", "-o", f"ControlPath={socket_file}", "-O", "exit", "bench"],
                           capture_output=True, timeout=10, check=False)
    subprocess.run(["rm", "-rf", control_dir], check=False)


@contextlib.contextmanager
def private_control_dir() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="bench-sites-ssh-")
    try:
        yield folder
    finally:
        close_masters(folder)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """A second Ctrl-C must not skip a cleanup."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def sdiag_rpcs(site: BenchSite) -> dict[str, int]:
    """slurmctld's RPC counts by message type (``sdiag`` on the site's controller node)."""
    return site.cluster.rpc_counts()


# ---------------------------------------------------------------------------------------------- (a) warm up, memory
def status_value_kib(pid: int, path: str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0  # gone meanwhile, or a kernel thread without memory


def service_memory(stack: SiteStack) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per running service: processes in its tree, VmRSS and PSS sums (MiB); the services not running."""
    found: dict[str, dict[str, Any]] = {}
    missing = []
    for name, service in sorted(stack.services.items()):
        if service.oneshot:
            continue
        pid = stack.supervised(name).pid()
        if pid is None:
            missing.append(name)
            continue
        tree = family(pid)
        found[name] = {
            "processes": len(tree),
            "rss_mib": round(sum(status_value_kib(p, "status", "VmRSS") for p in tree) / 1024, 1),
            "pss_mib": round(sum(status_value_kib(p, "smaps_rollup", "Pss") for p in tree) / 1024, 1),
        }
    return found, missing


def site_totals(per_service: dict[str, dict[str, Any]], prefix: str) -> dict[str, Any]:
    rows = [row for name, row in per_service.items() if name.startswith(prefix)]
    return {"daemons": len(rows), "processes": sum(row["processes"] for row in rows),
            "rss_mib": round(sum(row["rss_mib"] for row in rows), 1),
            "pss_mib": round(sum(row["pss_mib"] for row in rows), 1)}


def warm_up_and_memory(paths: StackPaths) -> dict[str, Any]:
    stack = SiteStack(paths)
    daemons = [name for name, service in stack.services.items() if not service.oneshot]
    problems = {name: problem for name in daemons if (problem := stack.problem(stack.services[name]))}
    if problems:  # up would start or replace them: this benchmark starts nothing
        return {"skipped": "services not up, up would (re)start them", "problems": problems}
    memory, missing = service_memory(stack)
    runs: list[float] = []
    started: list[str] = []
    for _ in range(WARM_RUNS):
        began = time.monotonic()
        outcomes = SiteStack(paths).up(progress=say)
        runs.append(time.monotonic() - began)
        started += [outcome.service for outcome in outcomes if outcome.started]
        reported = {outcome.service for outcome in outcomes if not outcome.started}
        if reported != set(daemons):
            say(f"warm up reported as already running: {sorted(reported)}; expected {sorted(daemons)}")
    return {
        "services": len(daemons),
        "warm_up_s": [round(seconds, 2) for seconds in runs],
        "warm_up_median_s": round(statistics.median(runs), 2),
        "all_reported_running": not started and len(runs) == WARM_RUNS,
        "started_by_up": sorted(set(started)),
        "not_running": missing,
        "memory": {site.name: site_totals(memory, f"{site.name}-") for site in SITES},
        "memory_total": site_totals(memory, "site_"),
        "memory_per_service": memory,
    }


# ---------------------------------------------------------------------------------------------- (b) staging 1 GB
def dataset(paths: StackPaths) -> tuple[Path, str]:
    """1 GB of random bytes and its md5, made once (md5 in a file beside it)."""
    folder = paths.state / "bench" / "sites"
    folder.mkdir(parents=True, exist_ok=True)
    data, digest_file = folder / "random-1GB.bin", folder / "random-1GB.bin.md5"
    if data.exists() and data.stat().st_size == DATASET_BYTES and digest_file.exists():
        return data, digest_file.read_text().strip()
    say(f"making {data} (1 GB of random bytes, once)")
    digest = hashlib.md5()
    staging = data.with_suffix(".partial")
    with staging.open("wb") as handle:
        for _ in range(DATASET_BYTES // (8 * MIB)):
            chunk = os.urandom(8 * MIB)
            digest.update(chunk)
            handle.write(chunk)
        rest = os.urandom(DATASET_BYTES % (8 * MIB))
        digest.update(rest)
        handle.write(rest)
    staging.replace(data)
    digest_file.write_text(digest.hexdigest() + "\n")
    return data, digest.hexdigest()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_through(source: Path) -> None:
    with source.open("rb") as handle:
        while handle.read(8 * MIB):
            pass


def stage_ours(transport, source: Path, workdir: str, owner: str) -> tuple[float, float]:
    """What the operator does with a file it stages: read it, then ``transport.stage`` (one tar stream over
    the connection's SSH master). Seconds, and the peak RSS this process reached (MiB)."""
    began = time.monotonic()
    files = {source.name: source.read_bytes()}
    transport.stage(workdir, files, owner)
    seconds = time.monotonic() - began
    del files
    return seconds, peak_rss_mib()


def copy_scp(site: BenchSite, source: Path, target: str) -> float:
    login = site.info["login"]
    began = time.monotonic()
    subprocess.run(["scp", "-q", "-P", str(login["port"]), *site.ssh_argv(), str(source),
                    f"{login['user']}@{login['host']}:{target}"], check=True, capture_output=True, timeout=600)
    return time.monotonic() - began


def plain_login_s(site: BenchSite) -> float:
    """One plain ``ssh true``: the login (key exchange, authentication) every scp pays and a master saves."""
    login = site.info["login"]
    began = time.monotonic()
    subprocess.run(["ssh", "-p", str(login["port"]), *site.ssh_argv(), f"{login['user']}@{login['host']}", "true"],
                   check=True, capture_output=True, timeout=30)
    return time.monotonic() - began


def remote_check(runner, path: str, with_md5: bool) -> tuple[int, str | None]:
    command = 'stat -c %s -- "$1"' + (' && md5sum -- "$1"' if with_md5 else "")
    output = runner.run(["sh", "-c", command, "check", path]).split()
    return int(output[0]), (output[1] if with_md5 else None)


@contextlib.contextmanager
def removed_from_site(site: BenchSite, runner, folder: str) -> Iterator[dict[str, Any]]:
    """``folder`` goes at the end whatever happens: through the login node, else on the node itself."""
    outcome: dict[str, Any] = {}
    try:
        yield outcome
    finally:
        with uninterrupted():
            try:
                runner.run(["rm", "-rf", "--", folder])
            except Exception as error:  # the login link may be down (fault tests): remove it on the node
                say(f"rm through the login node failed ({error}); removing on {site.site.login.hostname}")
                site.cluster.run_on(site.site.login, ["rm", "-rf", "--", folder], timeout_s=120)
            left = site.cluster.run_on(site.site.login, ["test", "-e", folder]).returncode == 0
            outcome["left_on_site"] = left
            if left:
                say(f"WARNING: {folder} is still on {site.name}")


def staging(paths: StackPaths, site: BenchSite) -> dict[str, Any]:
    source, digest = dataset(paths)
    transport = site.transport()
    runner = transport.files.runner
    owner = site.info["job_user"]
    folder = f"{SCRATCH}/bench-sites-{os.getpid()}"
    stage_dir, scp_file = f"{folder}/stage", f"{folder}/scp/{source.name}"
    ours: list[float] = []
    plain: list[float] = []
    peak = 0.0
    checks: list[tuple[str, int, str | None]] = []
    with removed_from_site(site, runner, folder) as outcome:
        runner.run(["mkdir", "-p", "--", f"{folder}/scp"])  # also opens the SSH master, as a task finds it open
        read_through(source)  # both sides read the file from the page cache
        rss_before = peak_rss_mib()
        for round_number in range(ROUNDS):
            order = ("ours", "scp") if round_number % 2 == 0 else ("scp", "ours")
            for side in order:
                if side == "ours":
                    seconds, peak = stage_ours(transport, source, stage_dir, owner)
                    ours.append(seconds)
                    checks.append(("ours", *remote_check(runner, f"{stage_dir}/{source.name}", round_number == 0)))
                    runner.run(["rm", "-rf", "--", stage_dir])
                else:
                    plain.append(copy_scp(site, source, scp_file))
                    checks.append(("scp", *remote_check(runner, scp_file, round_number == 0)))
                    runner.run(["rm", "-f", "--", scp_file])
                say(f"round {round_number + 1} {side}: {(ours if side == 'ours' else plain)[-1]:.2f} s")
        login_s = plain_login_s(site)
    for side, size, md5 in checks:
        if size != DATASET_BYTES or md5 not in (None, digest):
            raise RuntimeError(f"{side}: the copy on the site has {size} bytes, md5 {md5}; expected "
                               f"{DATASET_BYTES}, {digest}")
    ours_s, scp_s = statistics.median(ours), statistics.median(plain)
    ratio = ours_s / scp_s
    return {
        "site": site.name, "bytes": DATASET_BYTES, "rounds": ROUNDS, "target": f"{SCRATCH}/bench-sites-<pid>",
        "ours_stage_s": [round(s, 2) for s in ours], "scp_s": [round(s, 2) for s in plain],
        "ours_median_s": round(ours_s, 2), "scp_median_s": round(scp_s, 2),
        "ours_mb_s": round(DATASET_BYTES / 1e6 / ours_s, 1), "scp_mb_s": round(DATASET_BYTES / 1e6 / scp_s, 1),
        "ratio_ours_to_scp": round(ratio, 2), "goal": f"ours <= {RATIO_GOAL}x scp", "goal_met": ratio <= RATIO_GOAL,
        "ours_peak_rss_mib": round(peak, 1), "peak_rss_before_staging_mib": round(rss_before, 1),
        "copies_verified": f"{len(checks)} (size; md5 in round 1)", "plain_ssh_login_s": round(login_s, 2),
        "left_on_site": outcome.get("left_on_site"),
    }


def main() -> None:
    exit_cleanly_on_sigterm()
    paths = StackPaths.from_env()
    began = time.monotonic()
    say("(a) warm up of the sites and their memory")
    warm = warm_up_and_memory(paths)
    say(f"warm: { {key: value for key, value in warm.items() if key != 'memory_per_service'} }")
    site = next(site for site in SITES if site.name == STAGE_SITE)
    say(f"(b) staging 1 GB to {site.name}: ours vs scp, {ROUNDS} rounds")
    with private_control_dir() as control_dir:
        staged = staging(paths, BenchSite(paths, site, control_dir))
    say(f"staging: {staged}")
    print(json.dumps({"benchmark": "sites", "warm_up": warm, "staging": staged,
                      "total_s": round(time.monotonic() - began, 1)}))


if __name__ == "__main__":
    main()
