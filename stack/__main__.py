"""``python -m stack up|down|status|restart|mail [--json] [--sites]``: what ``./factory stack`` runs.

``mail``: what the stack's mail sink received (pipelines' e-mail notifications), newest last.

``--sites``: the two Slurm sites of stack/clusters only, beside a stack that is already running.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from stack.manager import SiteStack, Stack, print_status
from stack.process import StackError
from stack.services.mail import MailSink
from stack.settings import PROFILES, StackPaths
from stack.startup import report_up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="factory stack", description="The local AI-factory stack.")
    parser.add_argument("action", choices=["up", "down", "status", "restart", "mail"])
    parser.add_argument("services", nargs="*", help="restart: the services to restart")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--profile", choices=sorted(PROFILES),
                        help="up: how Airflow runs, kept for later commands (" +
                             "; ".join(f"{name}: {text}" for name, text in PROFILES.items()) + ")")
    parser.add_argument("--sites", action="store_true", help="only the two Slurm sites (stack/clusters)")
    args = parser.parse_args(argv)
    if args.profile and args.action != "up":
        parser.error("--profile goes with up")
    paths = StackPaths.from_env()
    if args.profile:
        paths.choose_profile(args.profile)
    stack = SiteStack(paths) if args.sites else Stack(paths)
    began = time.monotonic()
    quiet = (lambda _line: None) if args.json else print
    if args.action in ("up", "restart"):
        try:
            outcomes = stack.restart(args.services, quiet) if args.action == "restart" else stack.up(progress=quiet)
        except StackError as error:
            print(f"factory stack up: {error}", file=sys.stderr)
            return 1
        report_up(outcomes, time.monotonic() - began, args.json, f"stack ({stack.factory.profile} profile)")
        return 0
    if args.action == "down":
        swept = stack.down(progress=quiet)
        for pid, cmdline in swept:
            print(f"  killed leftover process {pid}: {cmdline}")
        print(f"stack down in {time.monotonic() - began:.1f} s")
        return 0
    if args.action == "mail":
        return print_mail(MailSink(paths), args.json)
    rows = stack.status()
    print_status(rows, args.json)
    return 0 if all(row["state"] == "healthy" for row in rows) else 3


def print_mail(sink: MailSink, as_json: bool) -> int:
    rows = [{"date": message.get("Date", ""), "to": message.get("To", ""), "subject": message.get("Subject", "")}
            for message in sink.messages()]
    if as_json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(f"{row['date']}  {row['to']}  {row['subject']}")
        print(f"{len(rows)} message(s) in {sink.maildir} (a Maildir: mutt -f {sink.maildir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
