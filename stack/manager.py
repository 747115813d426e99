"""``up``, ``down`` and ``status`` for the local stack.

``up`` starts every service whose dependencies are healthy, concurrently, and waits for each
health check with its own timeout; services already running and healthy are left alone, so a
second ``up`` returns in seconds. A failure names the service and prints its log tail.
``down`` cancels Slurm jobs, stops services dependents-first, then sweeps for anything left.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from stack.ports import describe_foreign, foreign_holders
from stack.process import StackError, Supervised, family, log_tail, process_start_time, processes_in_group
from stack.services import LocalFactory, Service, run
from stack.settings import JOB_USER, PROFILES, StackPaths
from stack.slurm24.cluster import Slurm24
from stack.startup import Outcome, wait_healthy

BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ")
DAEMON_NAMES = {"slurmstepd", "slurmctld", "slurmd", "slurmdbd", "slurmrestd", "munged", "mariadbd"}


def user_id(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def own_ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


class Stack:
    def __init__(self, paths: StackPaths | None = None, profile: str | None = None) -> None:
        self.paths = paths or StackPaths.from_env()
        self.factory = LocalFactory(self.paths, profile)
        self.services = {service.name: service for service in self.factory.services()}

    def supervised(self, name: str) -> Supervised:
        return Supervised(name, self.paths.run, self.paths.logs)

    def stop(self, name: str) -> bool:
        """Stop one service the way it shuts down cleanly; True when it had been running."""
        service = self.services.get(name)
        return self.supervised(name).stop(first=service.stop_signal if service else signal.SIGTERM)

    def _env(self, service: Service) -> dict[str, str]:
        base = {key: os.environ[key] for key in BASE_ENV_KEYS if key in os.environ}
        base.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        base["HOME"] = str(self.paths.state)
        return {**base, **service.env}

    # ------------------------------------------------------------------ up
    def _wait_healthy(self, service: Service, process: Supervised | None) -> None:
        wait_healthy(service, process, self.supervised(service.name).log_file)

    def _run_oneshot(self, service: Service) -> None:
        log = self.supervised(service.name).log_file
        with log.open("ab") as handle:
            handle.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} running {service.name}\n".encode())
            handle.flush()
            result = subprocess.run(service.command, stdout=handle, stderr=subprocess.STDOUT,
                                    env=self._env(service), timeout=service.start_timeout_s, check=False)
        if result.returncode != 0:
            raise StackError(f"{service.name} failed with exit code {result.returncode}\n"
                             f"--- last lines of {log} ---\n{log_tail(log)}")

    def _bring_up(self, service: Service) -> Outcome:
        began = time.monotonic()
        process = self.supervised(service.name)
        if service.prepare:
            service.prepare()
        if service.oneshot:
            if service.command:
                self._run_oneshot(service)
        else:
            stopped = self.stop(service.name)  # ours but unhealthy, or started otherwise: a second copy would fight
            if stopped:
                self._note(service, "stopped the copy started before (unhealthy, or started with other settings)")
            foreign = self._foreign_after_stop(service, settle_s=5.0 if stopped else 0.0)
            if foreign:
                raise StackError(describe_foreign(service.name, foreign))
            process.start(service.command, self._env(service), cwd=self.paths.state, user=service.user,
                          fingerprint=service.fingerprint())
            self._wait_healthy(service, process)
        if service.bootstrap:
            service.bootstrap()
        return Outcome(service.name, time.monotonic() - began, True)

    @staticmethod
    def _foreign_after_stop(service: Service, settle_s: float) -> dict:
        """Who else listens on the service's ports; a copy just stopped gets ``settle_s`` to let go of them."""
        deadline = time.monotonic() + settle_s
        while (foreign := foreign_holders(service.ports, set())) and time.monotonic() < deadline:
            time.sleep(0.2)
        return foreign

    def _note(self, service: Service, text: str) -> None:
        with self.supervised(service.name).log_file.open("a") as log:
            log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def problem(self, service: Service) -> str | None:
        """Why the service is not up as started by us (None when it is): not running, not healthy, or its
        ports answered by a process we did not start."""
        process = self.supervised(service.name)
        pid = process.pid()
        foreign = foreign_holders(service.ports, family(pid) if pid else set())
        if foreign:
            return describe_foreign(service.name, foreign)
        if pid is None:
            return "not running"
        if process.fingerprint() != service.fingerprint():
            return f"started with other settings (profile {self.factory.profile} wants another command or environment)"
        return service.health()

    def _is_up(self, service: Service) -> bool:
        return not service.oneshot and self.problem(service) is None

    @contextlib.contextmanager
    def _exclusive(self):
        """One up/restart/down at a time across processes: two overlapping ups started services twice."""
        self.paths.ensure()
        with open(self.paths.run / "stack.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _dependents(self, names: set[str]) -> set[str]:
        """Every service that needs one of ``names``, directly or through others."""
        found: set[str] = set()
        frontier = set(names)
        while frontier:
            frontier = {name for name, service in self.services.items()
                        if name not in found and frontier.intersection(service.needs)}
            found |= frontier
        return found

    def _top_down(self, names: set[str]) -> list[str]:
        """``names`` with every service before those it needs (the order to stop them in)."""
        def depth(name: str) -> int:
            needs = [need for need in self.services[name].needs if need in self.services]
            return 1 + max(map(depth, needs), default=0)
        return sorted(names, key=depth, reverse=True)

    def up(self, progress=print) -> list[Outcome]:
        with self._exclusive():
            return self._up(progress)

    def _prepare(self, progress=print) -> None:
        self.factory.prepare_common()
        self._stop_undefined(progress)

    def _after_up(self) -> None:
        self.factory.write_info_file()

    def _up(self, progress=print) -> list[Outcome]:
        self._prepare(progress)
        already = {name for name, service in self.services.items() if self._is_up(service)}
        needed = {name for name in self.services if name not in already}
        # a one-shot step runs when something that needs it starts, or when its inputs changed
        needed -= {name for name, service in self.services.items() if service.oneshot and service.is_current()
                   and not any(name in self.services[other].needs for other in needed)}
        restarted = self._dependents({name for name in needed if self.services[name].restarts_dependents})
        for name in self._top_down(restarted):
            if self.stop(name):
                self._note(self.services[name], "stopped: what it runs on is being made again")
        already -= restarted
        needed |= restarted
        outcomes = [Outcome(name, 0.0, False) for name in already]
        done = {name: threading.Event() for name in self.services}
        for name in already:
            done[name].set()
        failures: list[str] = []

        def start(service: Service) -> None:
            try:
                for dependency in service.needs:
                    done[dependency].wait()
                if failures:
                    return  # something failed: do not start on top of it
                outcome = self._bring_up(service)
                outcomes.append(outcome)
                progress(f"  {service.name:<24} up in {outcome.seconds:5.1f} s")
            except Exception as error:
                failures.append(f"{service.name}: {error}" if not isinstance(error, StackError) else str(error))
            finally:
                done[service.name].set()

        with ThreadPoolExecutor(max_workers=len(needed) or 1) as pool:
            for name in needed:
                pool.submit(start, self.services[name])
        self._after_up()
        if failures:
            raise StackError("\n\n".join(failures))
        return outcomes

    def restart(self, names: list[str], progress=print) -> list[Outcome]:
        """Stop the named services and bring them (and anything else down) back: fault tests and code reloads."""
        unknown = sorted(set(names) - set(self.services))
        if unknown:
            raise StackError(f"unknown service(s) {', '.join(unknown)}; services: {', '.join(self.services)}")
        with self._exclusive():
            for name in names:
                self.stop(name)
            return self._up(progress)

    def _stop_undefined(self, progress) -> None:
        """Services of another profile (its Celery workers, say) do not run on untracked after a switch."""
        others = {service.name for profile in PROFILES if profile != self.factory.profile
                  for service in LocalFactory(self.paths, profile).services()} - set(self.services)
        for name in sorted(others):
            if self.supervised(name).stop():
                progress(f"  {name:<24} stopped (not part of profile {self.factory.profile})")

    # ------------------------------------------------------------------ down
    def _cancel_slurm_jobs(self) -> None:
        if self.supervised("slurmctld").pid() is None:
            return
        run(["scancel", "--full", f"--user={JOB_USER}"], timeout_s=15)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and run(["squeue", "-h", "-t", "running,completing"]).stdout.strip():
            time.sleep(0.5)

    def _stop_order(self) -> list[list[str]]:
        """Levels of services: each level only needs services in later levels."""
        remaining = [name for name, service in self.services.items() if not service.oneshot]
        levels: list[list[str]] = []
        while remaining:
            level = [name for name in remaining
                     if not any(name in self.services[other].needs for other in remaining)]
            levels.append(level)
            remaining = [name for name in remaining if name not in level]
        return levels

    def leftovers(self) -> list[tuple[int, str]]:
        """Processes of the stack still alive: its daemons and job steps, or anything whose working
        folder is the stack's state folder (every service starts there, and its children inherit it)."""
        found = []
        state = str(self.paths.state)
        spared = own_ancestors()
        job_uid = user_id(JOB_USER)  # the stack's own login user: its SSH sessions live on after sshd stops
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in spared:
                continue
            if process_start_time(int(entry.name)) is None:
                continue  # a zombie: already dead, waiting for PID 1 to reap it
            try:
                comm = Path(entry.path, "comm").read_text().strip()
                cwd = os.readlink(Path(entry.path, "cwd"))
                cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            owner = entry.stat().st_uid
            if comm in DAEMON_NAMES or cwd == state or cwd.startswith(state + "/") or owner == job_uid:
                found.append((int(entry.name), cmdline.strip()[:120]))
        return found

    def down(self, progress=print) -> list[tuple[int, str]]:
        with self._exclusive():
            return self._down(progress)

    def _stop_services(self, progress) -> None:
        for level in self._stop_order():
            with ThreadPoolExecutor(max_workers=len(level)) as pool:
                stopped = dict(zip(level, pool.map(self.stop, level),
                                   strict=True))
            for name in level:
                if stopped[name]:
                    progress(f"  {name:<24} stopped")

    def _pid_of(self, name: str) -> int | None:
        return self.supervised(name).pid()

    def _down(self, progress=print) -> list[tuple[int, str]]:
        self._cancel_slurm_jobs()
        self.factory.cancel_site_jobs(self._pid_of)
        self._stop_undefined(progress)
        self._stop_services(progress)
        self._down_slurm24(progress)
        self._down_sites(progress)
        swept = self.leftovers()
        for pid, _ in swept:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return swept

    def _down_slurm24(self, progress) -> None:
        """The second cluster (``./factory slurm24``) lives under the same state folder: stop it properly
        (jobs, daemons, its chroot's mounts) rather than leave its daemons to the sweep."""
        try:
            Slurm24(self.paths).down(progress=lambda line: progress(f"  slurm24 {line.strip()}"))
        except StackError as error:
            progress(f"  {error}")

    def _down_sites(self, progress) -> None:
        """The sites' nodes, network and mounts (stack/clusters) go whether the sites were part of this up or not."""
        try:
            self.factory.teardown_sites(progress)
        except StackError as error:
            progress(f"  {error}")

    # ------------------------------------------------------------------ status
    def status(self) -> list[dict[str, object]]:
        rows = []
        for name, service in self.services.items():
            if service.oneshot:
                continue
            process = self.supervised(name)
            pid = process.pid()
            problem = self.problem(service)
            if problem and "did not start" in problem:
                state = "foreign"  # its port answers, but not from the process we started
            elif pid is None:
                state = "dead" if process.exited_early() else "stopped"
            else:
                state = "healthy" if problem is None else "unhealthy"
            rows.append({"service": name, "state": state, "pid": pid, "url": service.url,
                         "log": str(process.log_file), "problem": None if state == "stopped" else problem,
                         "processes": len(processes_in_group(pid)) if pid else 0})
        return rows


class SiteStack(Stack):
    """The two sites only (``python -m stack up --sites``): beside a running stack, without touching its
    services, its Airflow connections or its info file; ``down`` stops the sites and nothing else."""

    def __init__(self, paths: StackPaths | None = None) -> None:
        super().__init__(paths)
        # the Edge worker and its relay live in a site's login node and on its bridge: they go and come with it;
        # what they need of the rest of the stack (the API server) is running beside
        services = [*self.factory.site_services(), *self.factory.edge_services()]
        names = {service.name for service in services}
        self.services = {service.name: replace(service, needs=tuple(need for need in service.needs if need in names))
                         for service in services}

    def _prepare(self, progress=print) -> None:
        self.factory.prepare_sites()

    def _after_up(self) -> None:
        pass

    def _down(self, progress=print) -> list[tuple[int, str]]:
        self.factory.cancel_site_jobs(self._pid_of)
        self._stop_services(progress)
        self._down_sites(progress)
        return []


def print_status(rows: list[dict[str, object]], as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'SERVICE':<24} {'STATE':<10} {'PID':>7}  {'URL / LOG'}")
    for row in rows:
        where = row["url"] or row["log"]
        print(f"{row['service']:<24} {row['state']:<10} {row['pid'] or '-':>7}  {where}")
        if row["state"] in ("foreign", "unhealthy", "dead") and row.get("problem"):
            print(f"{'':<24} {row['problem']}")
