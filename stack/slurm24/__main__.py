"""``python -m stack.slurm24 up|down|status|purge|install [--json]``: what ``./factory slurm24`` runs.

``install`` builds the trixie root (debootstrap, apt) without starting the cluster: site B of the stack
(stack/clusters) runs on an overlay of it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from stack.process import StackError
from stack.slurm24.cluster import Slurm24
from stack.startup import report_up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="factory slurm24",
                                     description="The second local Slurm cluster: 24.11 in a Debian trixie chroot.")
    parser.add_argument("action", choices=["up", "down", "status", "purge", "install"],
                        help="purge: down, then remove the chroot (the next up is a cold one); "
                             "install: build the chroot only")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    cluster = Slurm24()
    began = time.monotonic()
    quiet = (lambda _line: None) if args.json else print
    try:
        if args.action == "up":
            report_up(cluster.up(progress=quiet), time.monotonic() - began, args.json, "slurm24",
                      f"; clients: {cluster.info_file}")
            return 0
        if args.action == "install":
            cluster.install_only()
            print(f"slurm24 install in {time.monotonic() - began:.1f} s")
            return 0
        if args.action in ("down", "purge"):
            stray = cluster.purge() if args.action == "purge" else cluster.down(progress=quiet)
            for pid in stray or []:
                print(f"  ended leftover process {pid} in the chroot")
            print(f"slurm24 {args.action} in {time.monotonic() - began:.1f} s")
            return 0
    except StackError as error:
        print(f"factory slurm24 {args.action}: {error}", file=sys.stderr)
        return 1
    rows = cluster.status()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['service']:<12} {row['state']:<10} {row['pid'] or '-':>7}  {row['url'] or row['log']}")
    return 0 if all(row["state"] == "healthy" for row in rows) else 3


if __name__ == "__main__":
    sys.exit(main())
