"""The stack's mail sink: an SMTP server (aiosmtpd) that keeps what Airflow's notifiers send in a Maildir.

A factory has its own mail relay; here nothing may leave the machine, so pipelines' notifications are
delivered to ``<state>/data/mail`` (Maildir: open it with ``mutt -f``, or list it with ``./factory stack mail``)
instead of failing with an SMTP traceback on every failed run.
"""

from __future__ import annotations

import mailbox
import smtplib
from email.message import Message
from pathlib import Path

from stack.services.common import Service, ensure_dir
from stack.settings import HOST, PORTS, StackPaths

SENDER = "airflow@aifactory.local"


class MailSink:
    def __init__(self, paths: StackPaths) -> None:
        self.paths = paths

    @property
    def maildir(self) -> Path:
        return self.paths.data / "mail"

    def prepare(self) -> None:
        """A Maildir: its three folders (``mailbox.Maildir`` makes them only where the folder is new)."""
        for folder in (self.maildir, *(self.maildir / part for part in ("tmp", "new", "cur"))):
            ensure_dir(folder, mode=0o700)

    def health(self) -> str | None:
        try:
            with smtplib.SMTP(HOST, PORTS["smtp"], timeout=2) as client:
                code, _answer = client.noop()
            return None if code == 250 else f"SMTP NOOP answered {code}"
        except (OSError, smtplib.SMTPException) as error:
            return f"smtp: {error}"

    def messages(self) -> list[Message]:
        """What has been delivered, oldest first."""
        if not (self.maildir / "cur").is_dir():
            return []  # the sink never started
        box = mailbox.Maildir(self.maildir, create=False)
        return sorted(box, key=lambda message: message.get_date())

    def connection(self) -> dict[str, object]:
        """Airflow's ``smtp_default``: plain SMTP on loopback (no TLS: nothing leaves the machine)."""
        return {"conn_type": "smtp", "host": HOST, "port": PORTS["smtp"],
                "extra": {"from_email": SENDER, "disable_tls": True, "disable_ssl": True, "timeout": 10,
                          "retry_limit": 1}}

    def service(self) -> Service:
        return Service("mail", [self.paths.bin("orchestrator", "python"), "-m", "aiosmtpd", "-n",
                                "-l", f"{HOST}:{PORTS['smtp']}", "-c", "aiosmtpd.handlers.Mailbox",
                                str(self.maildir)],
                       prepare=self.prepare, health=self.health, start_timeout_s=30, ports=(PORTS["smtp"],),
                       url=f"smtp://{HOST}:{PORTS['smtp']}")
