#!/bin/bash
#SBATCH --job-name=pipeline_breast_cancer_ddp.train
#SBATCH '--chdir=<job_workdir>/pipeline_breast_cancer_ddp/<run_id>/train.-1.try1'
#SBATCH '--output=<job_workdir>/pipeline_breast_cancer_ddp/<run_id>/train.-1.try1/slurm-%j.out'
#SBATCH --cpus-per-task=1
#SBATCH --mem=2G
#SBATCH --time=00:15:00
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH '--account=AIFAC_<name>'
#SBATCH '--comment=airflow:pipeline_breast_cancer_ddp/<run_id>/train/-1'
#SBATCH --signal=B:USR2@300
#SBATCH --no-requeue
set -euo pipefail
echo "job $SLURM_JOB_ID on $(hostname) as $(id -un), started $(date -Is)"
set -a; source '<job_workdir>/pipeline_breast_cancer_ddp/<run_id>/train.-1.try1/job.env'; set +a; rm -f '<job_workdir>/pipeline_breast_cancer_ddp/<run_id>/train.-1.try1/job.env'
catches() { local mask; mask=$(awk '/^SigCgt:/{print $2}' "/proc/$1/status" 2>/dev/null) || return 1; [ -n "$mask" ] && [ $(( (0x$mask >> ($(kill -l "$2") - 1)) & 1 )) -eq 1 ]; }
forward() { if [ -n "${child:-}" ] && catches "$child" "$1"; then kill -s "$1" "$child"; else echo "time-limit warning $1: the job does not handle it and runs on to its limit"; fi; }
trap 'forward USR2' USR2
run() { "$@" & child=$!; while true; do wait "$child" && status=0 || status=$?; kill -0 "$child" 2>/dev/null || break; done; child=; return "$status"; }
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
head_addr=$(scontrol show node "$head_node" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')
rdzv_port=$((29500 + SLURM_JOB_ID % 1000))
run '<environments>/torch-runtime/bin/python' -m operators.tracking.offline init mlflow --experiment breast_cancer_ddp
run '<environments>/torch-runtime/bin/python' -m operators.jobs.fetch inputs.json data
run srun --kill-on-bad-exit=1 --nodes=2 --ntasks-per-node=1 --cpus-per-task=1 '<environments>/torch-runtime/bin/python' -m torch.distributed.run --nnodes=2 --nproc-per-node=1 --rdzv-backend=c10d --rdzv-id="$SLURM_JOB_ID" --rdzv-endpoint="${head_addr:-$head_node}:$rdzv_port" train.py --data-dir data --params params.json
echo "job $SLURM_JOB_ID finished $(date -Is)"
