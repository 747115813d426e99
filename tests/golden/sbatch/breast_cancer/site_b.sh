#!/bin/bash
#SBATCH --job-name=pipeline_breast_cancer.train
#SBATCH '--chdir=<job_workdir>/pipeline_breast_cancer/<run_id>/train.-1.try1'
#SBATCH '--output=<job_workdir>/pipeline_breast_cancer/<run_id>/train.-1.try1/slurm-%j.out'
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=00:10:00
#SBATCH --ntasks=1
#SBATCH --account=demo
#SBATCH --partition=cpu
#SBATCH '--comment=airflow:pipeline_breast_cancer/<run_id>/train/-1'
#SBATCH --signal=B:USR2@300
#SBATCH --no-requeue
set -euo pipefail
echo "job $SLURM_JOB_ID on $(hostname) as $(id -un), started $(date -Is)"
set -a; source '<job_workdir>/pipeline_breast_cancer/<run_id>/train.-1.try1/job.env'; set +a; rm -f '<job_workdir>/pipeline_breast_cancer/<run_id>/train.-1.try1/job.env'
catches() { local mask; mask=$(awk '/^SigCgt:/{print $2}' "/proc/$1/status" 2>/dev/null) || return 1; [ -n "$mask" ] && [ $(( (0x$mask >> ($(kill -l "$2") - 1)) & 1 )) -eq 1 ]; }
forward() { if [ -n "${child:-}" ] && catches "$child" "$1"; then kill -s "$1" "$child"; else echo "time-limit warning $1: the job does not handle it and runs on to its limit"; fi; }
trap 'forward USR2' USR2
run() { "$@" & child=$!; while true; do wait "$child" && status=0 || status=$?; kill -0 "$child" 2>/dev/null || break; done; child=; return "$status"; }
run '<environments>/job-runtime/bin/python' -m operators.tracking.offline init mlflow --experiment breast_cancer
run '<environments>/job-runtime/bin/python' -m operators.jobs.fetch inputs.json data
run '<environments>/job-runtime/bin/python' train.py --data-dir data --params params.json
echo "job $SLURM_JOB_ID finished $(date -Is)"
