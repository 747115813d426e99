"""The Slurm validation job: ``python -m operators.contracts.job PINNED_JSON CONTRACT_YAML --dag-id D --run-id R``.

Runs the same ``validate_pinned`` as the Airflow worker, next to the data on the cluster, for files above
the contract's ``validation.cluster_above``. The summary goes to S3 (``summary.json``, read back by the
pipeline's ``apply_contract`` task) and to ``validation.json`` in the job folder. Exits 0 whenever the data
was checked, whatever the verdict: the policy is the pipeline's. Credentials come from AWS_* variables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m operators.contracts.job")
    parser.add_argument("pinned", type=Path, help="the pinned dataset version (pin_dataset's result) as JSON")
    parser.add_argument("contract", type=Path, help="the data contract file")
    parser.add_argument("--dag-id", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--bucket", default="reports")
    args = parser.parse_args(argv)

    import boto3

    from operators.contracts.contract import ContractError, load_contract
    from operators.contracts.validate import validate_pinned

    try:
        contract = load_contract(args.contract)
    except ContractError as error:
        print(error, file=sys.stderr)
        return 1
    where = f"slurm job {os.environ.get('SLURM_JOB_ID', '?')} on {os.environ.get('SLURMD_NODENAME', '?')}"
    summary = validate_pinned(json.loads(args.pinned.read_text()), contract, boto3.client("s3"), args.bucket,
                              dag_id=args.dag_id, run_id=args.run_id, where_run=where)
    Path("validation.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"{summary['status']}: {summary.get('rows', 0)} rows, {len(summary['failed'])} rule(s) broken; "
          f"report s3://{args.bucket}/{summary['report']['index']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
