"""Every control channel and file channel there is, and how a connection's settings compose them.

The one module that imports the implementations: the interfaces (``operators.slurm.transport``) import
none of them. ``transport`` names the control channel and ``files`` the file channel. ``local`` and
``ssh`` imply theirs (local commands run where the cluster's file system is; one SSH login reaches both).
``rest`` and ``pyslurm`` must say: nothing about slurmrestd or libslurm tells where job files live, and
assuming the worker shares the cluster's file system is what the next site, sharing nothing, would break.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from operators.slurm.cli import LocalCommands, SshCommands, SshRunner
from operators.slurm.files import SharedFiles, SshFiles
from operators.slurm.model import SlurmError
from operators.slurm.pyslurm_control import PyslurmControl
from operators.slurm.rest import RestControl
from operators.slurm.transport import ControlChannel, FileChannel, SlurmTransport

CONTROL_CHANNELS: dict[str, type[ControlChannel]] = {
    channel.kind: channel for channel in (LocalCommands, SshCommands, RestControl, PyslurmControl)}
IMPLIED_FILES = {"local": "shared", "ssh": "ssh"}


class NoFileChannel(SlurmError):
    """The connection does not say how job files reach the cluster, and its transport cannot tell."""


def shared_files(control: ControlChannel, settings: Mapping[str, Any]) -> FileChannel:
    return SharedFiles()


def ssh_files(control: ControlChannel, settings: Mapping[str, Any]) -> FileChannel:
    """Through the ``ssh`` control channel's own master when no other login node is named: one login for both."""
    if isinstance(control, SshCommands) and not settings.get("ssh_host"):
        return SshFiles(control.runner)
    return SshFiles(files_login_node(settings))


def files_login_node(settings: Mapping[str, Any]) -> SshRunner:
    """The login node job files go through for a control channel that is not SSH itself."""
    if not settings.get("ssh_host"):
        raise SlurmError("files: ssh needs ssh_host, the login node job files go through "
                         "(with ssh_port, ssh_user, key_file, known_hosts as for the ssh transport)")
    return SshRunner(settings["ssh_host"], settings.get("ssh_user") or settings.get("user") or "",
                     settings.get("ssh_port") or 22, settings.get("key_file"), settings.get("known_hosts"),
                     settings.get("control_dir"), timeout_s=float(settings.get("timeout_s", 60.0)))


class FileChannelKind(NamedTuple):
    meaning: str
    build: Callable[[ControlChannel, Mapping[str, Any]], FileChannel]


# An S3 channel for clusters that share only an object store goes here.
FILE_CHANNELS: dict[str, FileChannelKind] = {
    "shared": FileChannelKind("the Airflow workers see the cluster's file system at the same paths "
                              "(a login node, the local factory)", shared_files),
    "ssh": FileChannelKind("job files go through an SSH login node: ssh_host (ssh_port, ssh_user, key_file, "
                           "known_hosts as for the ssh transport)", ssh_files),
}


def missing_files_message(kind: str) -> str:
    choices = "\n".join(f"  files: {name} - {channel.meaning}" for name, channel in FILE_CHANNELS.items())
    return (f"the {kind} transport reaches the Slurm controller, not the cluster's files: add the extra field "
            f"'files' to say how job files reach the cluster, one of:\n{choices}")


def control_channel(kind: str) -> type[ControlChannel]:
    if kind not in CONTROL_CHANNELS:
        raise SlurmError(f"unknown Slurm transport {kind!r}: choose one of {', '.join(sorted(CONTROL_CHANNELS))}")
    return CONTROL_CHANNELS[kind]


def file_channel(kind: str, files: str | None) -> FileChannelKind:
    """The channel ``files`` names, or the one ``kind`` implies; a transport that implies none must be told."""
    name = files or IMPLIED_FILES.get(kind)
    if name is None:
        raise NoFileChannel(missing_files_message(kind))
    if name not in FILE_CHANNELS:
        raise SlurmError(f"unknown file channel files: {name!r}: choose one of {', '.join(FILE_CHANNELS)}")
    return FILE_CHANNELS[name]


def make_transport(kind: str, files: str | None = None, **settings: Any) -> SlurmTransport:
    """The transport a connection names: ``kind``'s control channel, and the file channel ``files`` names
    (or ``kind`` implies). Each channel takes the settings it knows and ignores the rest."""
    control_class, files_kind = control_channel(kind), file_channel(kind, files)
    control = control_class(**settings)
    return SlurmTransport(control, files_kind.build(control, settings))
