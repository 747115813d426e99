"""Stack start-up figures: stop everything, start cold, then ``up`` again warm.

"Cold" means every service is stopped but installed and initialised (packages, venvs, databases);
a first-ever start also initialises MariaDB, the Airflow database and the S3 buckets.
Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time

from stack.manager import Stack


def main() -> None:
    stack = Stack()
    quiet = lambda line: print(line, file=sys.stderr)  # noqa: E731
    began = time.monotonic()
    stack.down(progress=quiet)
    down_s = time.monotonic() - began

    began = time.monotonic()
    outcomes = stack.up(progress=quiet)
    cold_s = time.monotonic() - began

    began = time.monotonic()
    stack.up(progress=quiet)
    warm_s = time.monotonic() - began

    print(json.dumps({
        "benchmark": "stack_startup",
        "down_s": round(down_s, 2),
        "cold_up_total_s": round(cold_s, 2),
        "cold_up_per_service_s": {o.service: round(o.seconds, 2) for o in sorted(outcomes, key=lambda o: o.service)},
        "warm_up_s": round(warm_s, 2),
    }))


if __name__ == "__main__":
    main()
