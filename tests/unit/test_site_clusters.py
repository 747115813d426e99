"""The two local sites (stack/clusters), checked without starting anything: their addresses, the Slurm
configuration each release gets, the network and node commands, their services and Airflow connections."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path
from typing import Any

import pytest

from operators.slurm.cli import LocalCommands, SshCommands
from operators.slurm.files import SharedFiles, SshFiles
from operators.slurm.hooks import SlurmHook
from operators.slurm.rest import RestControl
from stack.clusters import network as net
from stack.clusters import node as nodes
from stack.clusters.node import Bind
from stack.clusters.site import (
    JOB_WORKDIR,
    SITE_A,
    SITE_B,
    SITES,
    Site,
    SiteLayout,
    SiteSecrets,
    config_values,
    node_hardware,
    render_configs,
)
from stack.manager import SiteStack, Stack
from stack.services.sites import SiteCluster
from stack.settings import JOB_USER, StackPaths

SLURMD_C = ("NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105 "
            "UpTime=0-04:10:00")


@pytest.fixture
def paths(tmp_path: Path) -> StackPaths:
    return StackPaths(tmp_path / "state")


def settings(text: str) -> dict[str, list[str]]:
    """key=value lines of a Slurm config file (a key may repeat: NodeName, PartitionName)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def rendered(site: Site) -> dict[str, str]:
    return render_configs(site, config_values(site, node_hardware(SLURMD_C), "secret-password"))


# ---------------------------------------------------------------------------------------------- the sites
def test_each_site_has_a_controller_two_compute_nodes_and_a_login_node_in_its_own_subnet():
    assert [(node.hostname, str(node.address)) for node in SITE_A.nodes] == [
        ("a-ctl", "10.77.1.10"), ("a-node1", "10.77.1.11"), ("a-node2", "10.77.1.12"), ("a-login", "10.77.1.20")]
    assert [node.hostname for node in SITE_B.nodes] == ["b-ctl", "b-node1", "b-node2", "b-login"]
    assert (SITE_A.bridge, str(SITE_A.host_address), SITE_B.bridge, str(SITE_B.host_address)) == (
        "afsa0", "10.77.1.1/24", "afsb0", "10.77.2.1/24")
    assert (SITE_A.flavour.release, SITE_B.flavour.release) == ("22.05", "24.11")
    assert not SITE_A.flavour.chroot and SITE_B.flavour.chroot
    for site in SITES:
        assert all(node.address in site.subnet and ip_address(node.address).is_private for node in site.nodes)
        assert all(len(site.netns(node)) <= 15 for node in site.nodes), "kernel interface names"
    assert not SITE_A.subnet.overlaps(SITE_B.subnet)
    assert {site.cluster for site in SITES}.isdisjoint({"localfactory", "factory24"})


def test_node_hardware_keeps_the_topology_and_caps_memory():
    assert node_hardware(SLURMD_C) == ("CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 "
                                       "RealMemory=4096")
    assert node_hardware("NodeName=x CPUs=4 RealMemory=1000").endswith("RealMemory=1000")


# ---------------------------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("site", SITES, ids=lambda site: site.name)
def test_slurm_conf_names_every_node_by_its_own_address_and_hostname(site: Site):
    conf = settings(rendered(site)["slurm.conf"])
    ctl = site.ctl
    assert conf["ClusterName"] == [site.cluster]
    assert conf["SlurmctldHost"] == [f"{ctl.hostname}({ctl.address})"]
    assert conf["AccountingStorageHost"] == [ctl.hostname]
    nodes_lines = conf["NodeName"]
    assert len(nodes_lines) == 2
    for node, line in zip(site.computes, nodes_lines, strict=True):
        assert line.startswith(f"{node.hostname} NodeAddr={node.address} NodeHostname={node.hostname} CPUs=2 ")
        assert "Gres=gpu:fake:2" in line
    assert conf["PartitionName"] == [f"cpu Nodes={site.cluster[-1]}-node1,{site.cluster[-1]}-node2 Default=YES "
                                     "MaxTime=1-00:00:00 State=UP",
                                     f"gpu Nodes={site.cluster[-1]}-node1,{site.cluster[-1]}-node2 "
                                     "MaxTime=1-00:00:00 State=UP"]
    assert conf["FirstJobId"] == [str(site.first_job_id)]


@pytest.mark.parametrize("site", SITES, ids=lambda site: site.name)
def test_slurm_conf_uses_proc_tracking_and_the_stack_s_scheduling_settings(site: Site):
    """What the namespaces facts require (no cgroups: the nodes share one kernel) and what the stack's
    own cluster measured (fast scheduling, 1 s job sampling, memory per CPU)."""
    conf = {key: values[0] for key, values in settings(rendered(site)["slurm.conf"]).items()}
    assert conf["ProctrackType"] == "proctrack/linuxproc"
    assert conf["TaskPlugin"] == "task/none"
    assert conf["SelectType"] == "select/cons_tres" and conf["SelectTypeParameters"] == "CR_Core_Memory"
    assert conf["DefMemPerCPU"] == "512"
    assert conf["JobAcctGatherType"] == "jobacct_gather/linux" and conf["JobAcctGatherFrequency"] == "task=1"
    assert conf["ReturnToService"] == "2" and conf["MinJobAge"] == "300"
    assert conf["SchedulerParameters"] == "sched_min_interval=0,batch_sched_delay=0,sched_interval=5,bf_interval=5"
    assert conf["AuthType"] == "auth/munge" and conf["AuthInfo"] == "socket=/run/munge/munge.socket.2"
    assert conf["AuthAltTypes"] == "auth/jwt" and conf["AuthAltParameters"] == "jwt_key=/etc/slurm/jwt_hs256.key"
    assert conf["SlurmdSpoolDir"] == "/var/local/slurm/d/%n" and "%n" in conf["SlurmdPidFile"]
    assert conf["AccountingStorageEnforce"] == "associations,limits,qos"


@pytest.mark.parametrize("site", SITES, ids=lambda site: site.name)
def test_every_config_file_is_complete_and_parses(site: Site):
    for name, text in rendered(site).items():
        assert not re.search(r"[{}]", text), f"{name}: a placeholder was left"
        for line in text.splitlines():
            if line.strip() and not line.startswith("#"):
                key, sign, value = line.partition("=")
                assert sign and key.strip() and value.strip(), f"{name}: {line!r} (an empty value is fatal)"
    dbd = {key: values[0] for key, values in settings(rendered(site)["slurmdbd.conf"]).items()}
    assert (dbd["DbdHost"], dbd["DbdAddr"], dbd["StorageHost"]) == (site.ctl.hostname, str(site.ctl.address),
                                                                     "localhost")
    assert dbd["StoragePass"] == "secret-password"
    gres = rendered(site)["gres.conf"]
    assert "File=/dev/zero" in gres and "File=/dev/full" in gres


def test_cgroups_are_off_in_24_11_and_unused_in_22_05():
    """slurmd 22.05 loads the cgroup plugin whatever the tracking; 24.11 can switch it off."""
    assert settings(rendered(SITE_A)["cgroup.conf"])["CgroupPlugin"] == ["cgroup/v1"]
    assert settings(rendered(SITE_B)["cgroup.conf"])["CgroupPlugin"] == ["disabled"]


# ---------------------------------------------------------------------------------------------- network
def site_network(site: Site, tmp_path: Path) -> net.SiteNetwork:
    return SiteCluster(StackPaths(tmp_path), site).network()


def test_network_commands_add_only_what_is_missing_and_never_route_or_forward(tmp_path: Path):
    network = site_network(SITE_A, tmp_path)
    fresh = net.bridge_commands(network, present=lambda _name: False)
    assert fresh[0] == ["ip", "link", "add", "afsa0", "type", "bridge"]
    assert ["ip", "addr", "replace", "10.77.1.1/24", "dev", "afsa0"] in fresh
    assert fresh[0] not in net.bridge_commands(network, present=lambda _name: True), "an existing bridge stays"
    link = network.links[0]
    created = net.link_commands(network, link, namespace_present=lambda _n: False, veth_present=lambda _n: False)
    assert created[:2] == [["ip", "netns", "add", "afsa-ctl"],
                           ["ip", "link", "add", "afsa-ctl", "type", "veth", "peer", "name", "eth0", "netns",
                            "afsa-ctl"]]
    again = net.link_commands(network, link, namespace_present=lambda _n: True, veth_present=lambda _n: True)
    assert not any(command[2] == "add" for command in again if command[:2] == ["ip", "link"])
    assert ["ip", "-n", "afsa-ctl", "addr", "replace", "10.77.1.10/24", "dev", "eth0"] in again
    words = {word for command in [*fresh, *created] for word in command}
    assert "route" not in words and not any("forward" in word for word in words)
    assert "exec" not in words, "ip netns exec remounts /sys (slurmd 22.05 then dies): nsenter --net is used"


def test_teardown_deletes_the_host_veth_before_its_namespace_then_the_bridge(tmp_path: Path):
    network = site_network(SITE_B, tmp_path)
    commands = net.teardown_commands(network, namespace_present=lambda _n: True, link_present=lambda _n: True)
    assert commands[:2] == [["ip", "link", "delete", "afsb-ctl"], ["ip", "netns", "delete", "afsb-ctl"]]
    assert commands[-1] == ["ip", "link", "delete", "afsb0"]
    assert net.teardown_commands(network, namespace_present=lambda _n: False, link_present=lambda _n: False) == []


def test_a_network_with_an_address_outside_its_subnet_is_refused():
    bad = net.SiteNetwork("afsx0", net.IPv4Interface("10.77.9.1/24"),
                          (net.Link("afsx-a", net.IPv4Interface("10.77.8.5/24")),))
    with pytest.raises(net.StackError, match="outside"):
        bad.check()


# ---------------------------------------------------------------------------------------------- nodes
def script_lines(space: nodes.NodeSpace) -> list[str]:
    return nodes.setup_script(space).splitlines()


def test_a_node_of_site_a_sees_the_site_but_not_the_airflow_host_s_state(paths: StackPaths):
    cluster = SiteCluster(paths, SITE_A)
    layout = cluster.layout
    lines = script_lines(cluster.space(SITE_A.node("node1")))
    state = str(paths.state)

    def index(fragment: str) -> int:
        return next(i for i, line in enumerate(lines) if fragment in line)

    assert f"mount --bind {layout.fs} /p" in lines
    assert f"mount --bind {layout.node_local(SITE_A.node('node1'))} /var/local" in lines
    assert f"mount --bind {layout.hosts_file} /etc/hosts" in lines
    assert f"mount --bind {layout.slurm_etc} /etc/slurm" in lines
    assert f"mount --bind {layout.munge_etc} /etc/munge" in lines
    assert "mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp" in lines
    hidden = index(f"mount -t tmpfs -o mode=755 tmpfs {state}")
    assert cluster.space(SITE_A.node("node1")).hidden == (state,)
    assert index(f"mount --bind {layout.fs} /p") < hidden, "the site's folders are bound before the tmpfs covers them"
    kept, moved = f"mount --bind {state}/venvs /tmp/.kept/0", f"mount --move /tmp/.kept/0 {state}/venvs"
    assert index(kept) < hidden < index(moved)
    assert f"mount -o remount,bind,ro {state}/venvs" in lines
    assert lines[-1] == "hostname a-node1"
    assert not any(line.startswith("mount -t proc") for line in lines), "no chroot on site A"


def test_a_node_of_site_b_mounts_everything_inside_the_trixie_root(paths: StackPaths):
    cluster = SiteCluster(paths, SITE_B)
    root = str(cluster.layout.root)
    space = cluster.space(SITE_B.ctl)
    lines = script_lines(space)
    assert lines[1:6] == [f"mount -t proc proc {root}/proc", f"mount --rbind /sys {root}/sys",
                          f"mount --make-rslave {root}/sys", f"mount --rbind /dev {root}/dev",
                          f"mount --make-rslave {root}/dev"]
    targets = [line.split()[-1] for line in lines if line.startswith(("mount --bind", "mount -t tmpfs"))]
    assert targets and all(target.startswith(root + "/") for target in targets), targets
    assert f"mount --bind {cluster.layout.fs} {root}/p" in lines
    assert {"/var/lib/mysql", "/var/spool/slurm24"} <= set(space.hidden), "the trixie root's own cluster stays hidden"


def test_a_command_on_a_node_enters_its_kept_namespaces_and_root(paths: StackPaths):
    cluster = SiteCluster(paths, SITE_B)
    space = cluster.space(SITE_B.login)
    command = nodes.on_node(space, ["sbatch", "--version"], user=(999, 995))
    assert command == ["nsenter", "--net=/run/netns/afsb-login", f"--mount={space.mnt_file}",
                       f"--uts={space.uts_file}", "--", "/usr/sbin/chroot", "--userspec=999:995", "--groups=",
                       str(cluster.layout.root), "sbatch", "--version"]
    assert nodes.create_command(space)[:5] == ["unshare", f"--mount={space.mnt_file}", f"--uts={space.uts_file}",
                                               "--propagation", "private"]
    site_a = SiteCluster(paths, SITE_A).space(SITE_A.ctl)
    assert nodes.on_node(site_a, ["true"])[5:] == ["/usr/sbin/chroot", "/", "true"]


def test_run_folders_are_made_with_their_owners(paths: StackPaths):
    space = replace(SiteCluster(paths, SITE_A).space(SITE_A.ctl), run_dirs=(nodes.RunDir("/run/mysqld", 102, 105),))
    assert "install -d -m 755 -o 102 -g 105 /run/mysqld" in script_lines(space)


# ---------------------------------------------------------------------------------------------- services
def test_the_stack_runs_both_sites_unless_told_not_to(paths: StackPaths, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FACTORY_WITH_SITES", raising=False)
    stack = Stack(paths)
    paths.ensure()
    stack.factory.secrets.ensure_slurm_jwt_key(os.getuid(), os.getgid())
    names = set(stack.services)
    for site in ("site_a", "site_b"):
        assert {f"{site}-{what}" for what in ("hosts", "munged", "mariadb", "slurmdbd", "slurmctld", "slurmd-node1",
                                               "slurmd-node2", "slurmrestd", "sshd")} <= names
    assert {"factory_slurm_site_a", "factory_slurm_site_b_rest"} <= set(stack.factory.airflow.connections())
    monkeypatch.setenv("FACTORY_WITH_SITES", "0")
    without = Stack(paths)
    assert not any(name.startswith("site_") for name in without.services)
    assert not any("site_" in name for name in without.factory.airflow.connections())
    assert set(SiteStack(paths).services) == names - set(without.services), "--sites: the sites and nothing else"


def test_the_jobs_reach_s3_through_a_relay_on_the_host_s_end_of_the_site_s_bridge_only(paths: StackPaths):
    """Not 0.0.0.0: the relay listens where only the site's nodes (and the host) can connect."""
    for site in SITES:
        cluster = SiteCluster(paths, site)
        relay = next(s for s in cluster.services() if s.name == f"{site.name}-s3-relay")
        assert relay.command[1] == f"TCP-LISTEN:{cluster.s3_relay_port},bind={site.host_address.ip},fork,reuseaddr"
        assert relay.command[2] == "TCP:127.0.0.1:8333" and relay.user == "nobody"
        assert relay.ports == (cluster.s3_relay_port,)
        for connection in cluster.connections().values():
            assert connection["extra"]["job_s3_endpoint"] == f"http://{site.host_address.ip}:{cluster.s3_relay_port}"
    assert len({SiteCluster(paths, site).s3_relay_port for site in SITES}) == len(SITES)


def addresses_in(arguments: list[str]) -> set[IPv4Address]:
    return {IPv4Address(found) for argument in arguments
            for found in re.findall(r"\b(\d+\.\d+\.\d+\.\d+)\b", argument)}


def test_site_daemons_listen_only_on_their_node_s_address(paths: StackPaths):
    for site in SITES:
        cluster = SiteCluster(paths, site)
        for service in cluster.services():
            if service.name.endswith("s3-relay"):
                continue
            assert addresses_in(service.command) <= {site.ctl.address}, service.name
            assert service.command == [] or service.command[0] == "nsenter", f"{service.name} runs on a node"
        restd = next(s for s in cluster.services() if s.name.endswith("slurmrestd"))
        assert restd.command[-1] == f"{site.ctl.address}:6820"
        assert restd.env["SLURM_JWT"] == "daemon"


def test_the_site_services_depend_on_their_own_site_only(paths: StackPaths):
    for site in SITES:
        for service in SiteCluster(paths, site).services():
            assert all(need.startswith(f"{site.name}-") for need in service.needs), service.name


def test_accounting_makes_the_cluster_both_accounts_and_the_job_user(paths: StackPaths):
    steps = SiteCluster(paths, SITE_A).accounting_steps()
    assert [(entity, name) for entity, name, _ in steps] == [("cluster", "site_a"), ("account", "demo"),
                                                             ("account", "tight"), ("user", JOB_USER)]
    tight = steps[2][2]
    assert "GrpTRESMins=cpu=60" in tight
    assert "Account=demo,tight" in steps[3][2] and "DefaultAccount=demo" in steps[3][2]


# ---------------------------------------------------------------------------------------------- connections
@dataclass
class FakeConnection:
    """What ``SlurmHook`` reads of an Airflow connection."""

    extra: dict[str, Any]
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = None
    schema: str | None = None

    @property
    def extra_dejson(self) -> dict[str, Any]:
        return self.extra


def hook(conn_id: str, definition: dict[str, Any]) -> SlurmHook:
    made = SlurmHook(conn_id)
    fields = {key: definition.get(key) for key in ("host", "port", "login", "password", "schema")}
    made._connection = FakeConnection(definition["extra"], **fields)
    return made


@pytest.mark.parametrize("site", SITES, ids=lambda site: site.name)
def test_each_site_s_connections_reach_it_through_its_login_node(site: Site, paths: StackPaths):
    cluster = SiteCluster(paths, site)
    connections = cluster.connections()
    edge = {f"factory_slurm_{site.name}_local"} if site.edge_queue else set()
    assert set(connections) == {f"factory_slurm_{site.name}", f"factory_slurm_{site.name}_rest", *edge}
    ssh = connections[f"factory_slurm_{site.name}"]
    assert (ssh["host"], ssh["port"], ssh["login"]) == (str(site.login.address), 22, JOB_USER)
    assert ssh["extra"]["job_workdir"] == JOB_WORKDIR == "/p/scratch/airflow-jobs"
    assert ssh["extra"]["known_hosts"] == str(cluster.layout.known_hosts)
    assert ssh["extra"]["cluster"] == site.cluster
    transport = hook(f"factory_slurm_{site.name}", ssh).get_transport()
    assert isinstance(transport.control, SshCommands) and isinstance(transport.files, SshFiles)
    rest = connections[f"factory_slurm_{site.name}_rest"]
    assert (rest["host"], rest["port"], rest["extra"]["files"], rest["extra"]["ssh_host"]) == (
        str(site.ctl.address), 6820, "ssh", str(site.login.address))
    transport = hook(f"factory_slurm_{site.name}_rest", rest).get_transport()
    assert isinstance(transport.control, RestControl) and isinstance(transport.files, SshFiles)
    if site.edge_queue:  # the Edge worker on the login node: the Slurm commands and /p are where it runs
        local = connections[f"factory_slurm_{site.name}_local"]
        assert (local["login"], local["extra"]["job_workdir"]) == (JOB_USER, JOB_WORKDIR)
        transport = hook(f"factory_slurm_{site.name}_local", local).get_transport()
        assert type(transport.control) is LocalCommands and isinstance(transport.files, SharedFiles)


def test_the_rest_token_is_the_site_s_own_and_stays_the_same(paths: StackPaths):
    import base64
    import hashlib
    import hmac

    secrets_a = SiteSecrets(SiteLayout(paths, SITE_A))
    token = secrets_a.stable_token()
    assert secrets_a.stable_token() == token, "a changed connection would re-import all of them"
    header, claims, signature = token.split(".")
    key = SiteLayout(paths, SITE_A).jwt_key.read_bytes()
    expected = hmac.new(key, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "==") == expected
    assert SiteSecrets(SiteLayout(paths, SITE_B)).stable_token() != token
    assert SiteLayout(paths, SITE_B).jwt_key.read_bytes() != key


def test_the_two_subnets_sit_in_one_private_range_away_from_the_loopback():
    for site in SITES:
        assert site.subnet.subnet_of(IPv4Network("10.77.0.0/16"))


def test_site_b_nodes_see_the_interpreter_of_the_shared_venvs(tmp_path: Path):
    """Site B's trixie root has Python 3.13: the read-only venvs its jobs run only work with the 3.11 they
    were made from, bound read-only at its own path (binary and standard library, nothing else of /usr)."""
    from stack.services.sites import host_python_binds

    venvs = tmp_path / "venvs"
    (venvs / "job-runtime").mkdir(parents=True)
    assert host_python_binds(venvs) == ()  # no venv yet: nothing to show
    (venvs / "job-runtime" / "pyvenv.cfg").write_text(
        "home = /usr/bin\nimplementation = CPython\nversion_info = 3.11.2\n")
    if not Path("/usr/bin/python3.11").is_file():
        pytest.skip("no /usr/bin/python3.11 on this machine (Debian bookworm's python3.11 package)")
    expected = [(os.path.realpath("/usr/bin/python3.11"), True), ("/usr/lib/python3.11", True)]
    assert [(bind.target, bind.read_only) for bind in host_python_binds(venvs)] == expected
    paths = StackPaths(state=tmp_path)
    site_b = SiteCluster(paths, SITE_B).space(SITE_B.nodes[1])
    site_a = SiteCluster(paths, SITE_A).space(SITE_A.nodes[1])
    assert [(bind.target, bind.read_only) for bind in site_b.binds][:2] == expected
    assert not any(bind.target.startswith("/usr/") for bind in site_a.binds)


@pytest.mark.parametrize("profile", ["local", "production"])
def test_an_edge_worker_runs_on_site_a_s_login_node_in_the_production_profile_only(paths: StackPaths, profile):
    stack = Stack(paths, profile)
    edge = {name for name in stack.services if "edge-worker" in name or "airflow-relay" in name}
    if profile == "local":  # no EdgeExecutor there: the sites' steps go through SSH
        assert edge == set()
        return
    assert edge == {"site_a-edge-worker", "site_a-airflow-relay"}  # site B has no Edge queue
    worker, relay = stack.services["site_a-edge-worker"], stack.services["site_a-airflow-relay"]
    space = SiteCluster(paths, SITE_A).space(SITE_A.login)
    assert worker.command[:4] == ["nsenter", f"--net=/run/netns/{space.netns}", f"--mount={space.mnt_file}",
                                  f"--uts={space.uts_file}"]
    [user] = [argument for argument in worker.command if argument.startswith("--userspec=")]
    assert not user.startswith("--userspec=0:")  # the job user, not root
    assert worker.command[-10:-6] == ["edge", "worker", "--queues", "site_a"]
    assert set(worker.needs) == {"site_a-sshd", "site_a-airflow-relay", "airflow-api"}
    env = worker.env
    api = f"http://{SITE_A.host_address.ip}:18081"
    assert env["AIRFLOW__EDGE__API_URL"] == f"{api}/edge_worker/v1/rpcapi"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"{api}/execution/"
    # what the login node must not hold: the database, the broker, the fernet key, the API's session key
    assert not {"AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CELERY__BROKER_URL"} & set(env)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:////home/")
    assert relay.command[:3] == ["socat", f"TCP-LISTEN:18081,bind={SITE_A.host_address.ip},fork,reuseaddr",
                                 "TCP:127.0.0.1:8080"]
    assert relay.user == "nobody" and relay.ports == (18081,)


def test_chroot_sites_see_the_project_read_only_on_their_login_node_only(paths: StackPaths):
    from stack.settings import REPO

    for site in SITES:
        cluster = SiteCluster(paths, site)
        for node in site.nodes:
            project = [bind for bind in cluster.space(node).binds if bind.target == str(REPO)]
            expected = site.flavour.chroot and node.role == "login"  # a host-flavour node has the host's root
            assert project == ([Bind(REPO, str(REPO), read_only=True)] if expected else []), (site.name, node)


def test_the_sites_alone_take_their_edge_worker_along_without_the_rest_of_the_stack(paths: StackPaths):
    """``python -m stack down --sites`` must not leave the relay on a bridge it removes, nor a worker in a node."""
    paths.choose_profile("production")
    sites = SiteStack(paths)
    assert {"site_a-edge-worker", "site_a-airflow-relay"} <= set(sites.services)
    assert sites.services["site_a-edge-worker"].needs == ("site_a-sshd", "site_a-airflow-relay")
    for service in sites.services.values():
        assert set(service.needs) <= set(sites.services), service.name
