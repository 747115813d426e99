"""A site's network: a bridge on the host and a veth pair into each node's network namespace.

Only the site's /24 exists: the host's end of the bridge has the first address, each node one address
in its own namespace and the loopback. No IP forwarding is switched on and no route beyond the /24 is
added, so nothing leaves the machine and the two sites cannot reach each other. IPv6 is off on every
link the stack creates (no link-local addresses besides the IPv4 ones). ``create`` is idempotent:
it adds only what is missing; ``teardown`` removes the namespaces (their veth ends go with them) and
the bridge.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path

from stack.clusters.node import NETNS_DIR, is_nsfs
from stack.process import StackError

Runner = Callable[[list[str]], None]


@dataclass(frozen=True)
class Link:
    namespace: str  # also the name of the veth end on the bridge
    address: IPv4Interface  # inside the namespace, on its eth0


@dataclass(frozen=True)
class SiteNetwork:
    bridge: str
    host_address: IPv4Interface
    links: tuple[Link, ...]

    def check(self) -> None:
        """Every address in the one /24, and names the kernel accepts (15 characters at most)."""
        network = self.host_address.network
        for link in self.links:
            if link.address.network != network:
                raise StackError(f"{link.namespace}: {link.address} is outside the site's {network}")
        for name in (self.bridge, *(link.namespace for link in self.links)):
            if len(name) > 15:
                raise StackError(f"interface name {name!r} is longer than 15 characters")


def run_ip(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise StackError(f"{' '.join(command)}: {result.stderr.strip() or result.stdout.strip()}")


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_exists(name: str) -> bool:
    """A kept namespace, not just a file: where /run survives a reboot (on this machine it is on disk), the
    file of a namespace from before stays behind, empty, and ``ip netns add`` would refuse the name."""
    return is_nsfs(NETNS_DIR / name)


def remove_stale_netns(name: str) -> None:
    path = NETNS_DIR / name
    if path.exists() and not is_nsfs(path):
        path.unlink()


def in_namespace(namespace: str, command: list[str]) -> list[str]:
    """``nsenter --net`` rather than ``ip netns exec``: that one remounts /sys (see docs of node.py)."""
    return ["nsenter", f"--net={NETNS_DIR / namespace}", "--", *command]


def no_ipv6(device: str) -> list[str]:
    return ["sysctl", "-q", "-w", f"net.ipv6.conf.{device}.disable_ipv6=1"]


def bridge_commands(network: SiteNetwork, present: Callable[[str], bool] = link_exists) -> list[list[str]]:
    bridge = network.bridge
    commands = [] if present(bridge) else [["ip", "link", "add", bridge, "type", "bridge"]]
    return [*commands, no_ipv6(bridge),
            ["ip", "addr", "replace", str(network.host_address), "dev", bridge],
            ["ip", "link", "set", bridge, "up"]]


def link_commands(network: SiteNetwork, link: Link, namespace_present: Callable[[str], bool] = netns_exists,
                  veth_present: Callable[[str], bool] = link_exists) -> list[list[str]]:
    """What makes one node's cable: its namespace, the veth pair, the address, the loopback."""
    name = link.namespace
    commands = [] if namespace_present(name) else [["ip", "netns", "add", name]]
    if not veth_present(name):
        commands.append(["ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name])
    return [*commands, no_ipv6(name),
            in_namespace(name, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]),
            ["ip", "link", "set", name, "master", network.bridge, "up"],
            ["ip", "-n", name, "addr", "replace", str(link.address), "dev", "eth0"],
            ["ip", "-n", name, "link", "set", "eth0", "up"],
            ["ip", "-n", name, "link", "set", "lo", "up"]]


def create(network: SiteNetwork, run: Runner = run_ip) -> None:
    network.check()
    for command in bridge_commands(network):
        run(command)
    for link in network.links:
        remove_stale_netns(link.namespace)
        for command in link_commands(network, link):
            run(command)


def is_up(network: SiteNetwork) -> bool:
    """The bridge carries the host's address and every namespace its veth."""
    if not link_exists(network.bridge):
        return False
    addresses = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", network.bridge], capture_output=True,
                               text=True).stdout
    if str(network.host_address) not in addresses:
        return False
    return all(netns_exists(link.namespace) and link_exists(link.namespace) for link in network.links)


def teardown_commands(network: SiteNetwork, namespace_present: Callable[[str], bool] = netns_exists,
                      link_present: Callable[[str], bool] = link_exists) -> list[list[str]]:
    """The host's veth end first: deleting it removes the pair at once, whereas deleting a namespace frees
    its veth only later, asynchronously (a delete right after it finds the device gone or not yet gone)."""
    commands = []
    for link in network.links:
        if link_present(link.namespace):
            commands.append(["ip", "link", "delete", link.namespace])
        if namespace_present(link.namespace):
            commands.append(["ip", "netns", "delete", link.namespace])
    if link_present(network.bridge):
        commands.append(["ip", "link", "delete", network.bridge])
    return commands


def teardown(network: SiteNetwork, run: Runner = run_ip) -> None:
    """Once no process is left in the namespaces: veth pairs, namespaces, then the bridge."""
    for command in teardown_commands(network):
        run(command)
