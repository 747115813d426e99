"""E-mail on a pipeline's events: Airflow's SMTP notifier, with a delivery that fails told in one line.

Airflow logs a notifier's exception as a traceback in the task log, after the task's own failure: a mail
server that is down or unknown then reads like a second bug. Here it is one warning that names the
recipients, the connection and what the server (or the network) said; the task's outcome is unchanged.
"""

from __future__ import annotations

import smtplib
from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk.exceptions import AirflowException

UNDELIVERABLE = (OSError, smtplib.SMTPException, AirflowException)


class PipelineMailNotifier(SmtpNotifier):
    def notify(self, context: Any) -> None:
        try:
            super().notify(context)
        except UNDELIVERABLE as error:
            recipients = ", ".join([self.to] if isinstance(self.to, str) else self.to)
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            self.log.warning("E-mail %r to %s not sent through connection %r: %s", self.subject, recipients,
                             self.smtp_conn_id, reason)
