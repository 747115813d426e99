"""Pipeline e-mail (operators/pipeline/notifications.py) through a real SMTP server (aiosmtpd, as in the stack)."""

from __future__ import annotations

import json
import mailbox
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox

from operators.pipeline.notifications import PipelineMailNotifier


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_port(monkeypatch: pytest.MonkeyPatch) -> int:
    port = free_port()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port,
        "extra": {"from_email": "airflow@aifactory.local", "disable_tls": True, "disable_ssl": True,
                  "retry_limit": 0, "timeout": 5}}))
    return port


@pytest.fixture
def sink(smtp_port: int, tmp_path: Path) -> Iterator[Path]:
    server = Controller(Mailbox(tmp_path / "mail"), hostname="127.0.0.1", port=smtp_port)
    server.start()
    yield tmp_path / "mail"
    server.stop()


def notifier() -> PipelineMailNotifier:
    return PipelineMailNotifier(to=["mlops@aifactory.local"], subject="[breast_cancer] train: failure",
                                html_content="Pipeline breast_cancer, task train: failure.")


def test_a_notification_is_delivered_to_the_mail_server(sink: Path) -> None:
    notifier().notify({})
    [message] = list(mailbox.Maildir(sink, create=False))
    assert message["Subject"] == "[breast_cancer] train: failure" and message["To"] == "mlops@aifactory.local"
    assert "task train: failure" in message.get_payload()[0].get_payload(decode=True).decode()


def warnings_printed(captured: pytest.CaptureFixture) -> list[str]:
    """The notifier logs through Airflow's logging (structlog, to the task log: stdout here)."""
    output = captured.readouterr()
    text = output.out + output.err
    assert "Traceback" not in text, text
    return [line for line in text.splitlines() if "warning" in line.lower() or "error" in line.lower()]


def test_a_mail_server_that_is_not_there_is_one_warning_line_not_a_traceback(
        smtp_port: int, capsys: pytest.CaptureFixture) -> None:
    notifier().notify({})  # nothing listens on the port: no exception reaches Airflow's callback runner
    [line] = warnings_printed(capsys)
    assert ("E-mail '[breast_cancer] train: failure' to mlops@aifactory.local not sent through connection "
            "'smtp_default': [Errno 111] Connection refused") in line, line


def test_an_unknown_connection_is_one_warning_line_too(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT", raising=False)
    PipelineMailNotifier(to="a@b.c", subject="s", html_content="h", smtp_conn_id="no_such_mail").notify({})
    [line] = warnings_printed(capsys)
    assert "E-mail 's' to a@b.c not sent through connection 'no_such_mail': " in line, line


def test_the_stack_s_mail_sink_as_its_service_runs_it_keeps_a_message_that_factory_stack_mail_lists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's own command line (aiosmtpd's Mailbox handler) on a free port, then ``messages()``."""
    import smtplib
    import subprocess
    import sys
    import time
    from email.message import EmailMessage

    from stack import settings
    from stack.services.mail import MailSink

    port = free_port()
    monkeypatch.setitem(settings.PORTS, "smtp", port)
    sink = MailSink(settings.StackPaths(tmp_path / "state"))
    assert sink.messages() == []  # before the sink ever ran
    sink.prepare()
    command = [sys.executable if part.endswith("/python") else part for part in sink.service().command]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while (problem := sink.health()) is not None:
            assert time.monotonic() < deadline and server.poll() is None, problem
            time.sleep(0.1)
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "airflow@aifactory.local", "a@b.c", "hello"
        message.set_content("body")
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            client.send_message(message)
        assert [(m["To"], m["Subject"]) for m in sink.messages()] == [("a@b.c", "hello")]
    finally:
        server.terminate()
        server.wait(10)
