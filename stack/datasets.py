"""The local dataset registry: a bare git repository whose data is tracked by DVC in the stack's S3.

Pipelines pin a dataset by git tag (``breast-cancer-v1``); the bytes live in ``s3://datasets/dvc``.
``breast-cancer-v2-corrupt`` breaks error rules of the data contract on purpose, so that validation
can be shown to stop a bad dataset before training; ``breast-cancer-v3-shifted`` breaks only warn
rules (a recalibrated scanner: mean_texture + 6), so that a data steward decides. The registry is
built once per stack, into a temporary path that is renamed at the end, so a failed build never
leaves a half-made repository.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from stack.settings import StackPaths

REGISTRY_NAME = "dataset-registry.git"
CLEAN_TAG = "breast-cancer-v1"
CORRUPT_TAG = "breast-cancer-v2-corrupt"
SHIFTED_TAG = "breast-cancer-v3-shifted"
TAGS = (CLEAN_TAG, CORRUPT_TAG, SHIFTED_TAG)
DVC_REMOTE = ("storage", "s3://datasets/dvc")
DATASET_DIR = "breast_cancer"

# A fixed identity and date: a rebuilt registry gets the same commit shas, so pins stay valid.
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "AI Factory datasets",
    "GIT_AUTHOR_EMAIL": "datasets@aifactory.local",
    "GIT_COMMITTER_NAME": "AI Factory datasets",
    "GIT_COMMITTER_EMAIL": "datasets@aifactory.local",
    "GIT_AUTHOR_DATE": "2025-01-01T00:00:00+00:00",
    "GIT_COMMITTER_DATE": "2025-01-01T00:00:00+00:00",
    "GIT_CONFIG_GLOBAL": "/dev/null",  # a user's signing or hook settings must not change the build
    "GIT_CONFIG_NOSYSTEM": "1",
}

# Runs with the job-runtime python (the environment that owns scikit-learn); argv: clean, corrupt, shifted dirs.
MAKE_CSVS = """
import sys
from pathlib import Path

from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

clean, corrupt, shifted = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
frame = load_breast_cancer(as_frame=True).frame
frame.columns = [name.strip().lower().replace(" ", "_") for name in frame.columns]
frame = frame.rename(columns={"target": "diagnosis"})
train, test = train_test_split(frame, test_size=0.2, random_state=42, stratify=frame["diagnosis"])
train.to_csv(clean / "train.csv", index=False)
test.to_csv(clean / "test.csv", index=False)

broken = train.reset_index(drop=True)
broken.loc[[0, 60, 120, 180, 240], "mean_radius"] = -1.0  # a radius cannot be negative
broken.loc[[30, 150, 300], "diagnosis"] = 7  # only 0 (malignant) and 1 (benign) exist
broken.to_csv(corrupt / "train.csv", index=False)

recalibrated = train.reset_index(drop=True)
recalibrated["mean_texture"] += 6.0  # still in range, but its mean and distribution moved
recalibrated.to_csv(shifted / "train.csv", index=False)
"""


def registry_is_complete(repo: Path) -> bool:
    """One cheap git call: both tags present means the registry is complete."""
    if not (repo / "HEAD").is_file():
        return False
    result = subprocess.run(
        ["git", f"--git-dir={repo}", "show-ref", "--verify", "--quiet", *(f"refs/tags/{tag}" for tag in TAGS)],
        capture_output=True, env={**os.environ, **GIT_IDENTITY}, check=False)
    return result.returncode == 0


def _run(step: str, command: list[str], cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"dataset registry: {step} failed ({Path(command[0]).name} exited "
                           f"{result.returncode}):\n{(result.stderr or result.stdout).strip()}")


def ensure_dataset_registry(paths: StackPaths, s3_endpoint: str, access_key: str, secret_key: str) -> Path:
    """The registry's bare repository, built and pushed to S3 on first call; cheap once it exists."""
    registry = paths.data / REGISTRY_NAME
    if registry_is_complete(registry):
        return registry
    paths.data.mkdir(parents=True, exist_ok=True)
    with (paths.data / f".{REGISTRY_NAME}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two callers at once: the second waits and finds it built
        if not registry_is_complete(registry):
            _build(paths, registry, s3_endpoint, access_key, secret_key)
    return registry


def _build(paths: StackPaths, registry: Path, s3_endpoint: str, access_key: str, secret_key: str) -> None:
    site_cache = paths.state / "dvc" / "site-cache"
    site_cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **GIT_IDENTITY, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(site_cache)}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    # credentials reach only the push, by environment: never a command line or a committed file
    push_env = {**env, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
                "AWS_DEFAULT_REGION": "us-east-1"}
    dvc = str(paths.venv("orchestrator") / "bin" / "dvc")
    python = str(paths.venv("job-runtime") / "bin" / "python")
    train, test = f"{DATASET_DIR}/train.csv", f"{DATASET_DIR}/test.csv"

    bare = Path(tempfile.mkdtemp(prefix=f".{REGISTRY_NAME}.building-", dir=paths.data))
    try:
        with tempfile.TemporaryDirectory(prefix="dataset-registry-work-", dir=paths.data) as scratch:
            work, corrupt, shifted = Path(scratch) / "work", Path(scratch) / "corrupt", Path(scratch) / "shifted"
            (work / DATASET_DIR).mkdir(parents=True)
            corrupt.mkdir()
            shifted.mkdir()
            _run("generate the CSVs", [python, "-c", MAKE_CSVS, str(work / DATASET_DIR), str(corrupt), str(shifted)],
                 work, env)

            _run("git init", ["git", "-c", "init.defaultBranch=main", "init", "-q"], work, env)
            _run("dvc init", [dvc, "init", "-q"], work, env)
            _run("dvc remote add", [dvc, "remote", "add", "-d", *DVC_REMOTE], work, env)
            _run("dvc remote endpoint", [dvc, "remote", "modify", DVC_REMOTE[0], "endpointurl", s3_endpoint],
                 work, env)
            _run("dvc add train.csv", [dvc, "add", train], work, env)
            _run("dvc add test.csv", [dvc, "add", test], work, env)
            _run("git add", ["git", "add", "-A"], work, env)
            _run("git commit v1", ["git", "commit", "-q", "-m", "Breast cancer dataset: stratified 80/20 split"],
                 work, env)
            _run(f"git tag {CLEAN_TAG}", ["git", "tag", CLEAN_TAG], work, env)
            _run("dvc push v1", [dvc, "push"], work, push_env)

            for source, tag, message in (
                    (corrupt, CORRUPT_TAG, "Contract-breaking train split: negative mean_radius, diagnosis 7"),
                    (shifted, SHIFTED_TAG, "Train split after a scanner recalibration: mean_texture + 6")):
                shutil.copyfile(source / "train.csv", work / train)
                _run(f"dvc add {tag} train.csv", [dvc, "add", train], work, env)
                _run("git add", ["git", "add", "-A"], work, env)
                _run(f"git commit {tag}", ["git", "commit", "-q", "-m", message], work, env)
                _run(f"git tag {tag}", ["git", "tag", tag], work, env)
                _run(f"dvc push {tag}", [dvc, "push"], work, push_env)

            _run("git init --bare", ["git", "-c", "init.defaultBranch=main", "init", "-q", "--bare", str(bare)],
                 work, env)
            _run("git push", ["git", "push", "-q", str(bare), "main", *(f"refs/tags/{tag}" for tag in TAGS)],
                 work, env)
        bare.chmod(0o755)  # mkdtemp made it private; jobs and readers run as other users
        if registry.exists():  # an incomplete registry from elsewhere: replace it
            shutil.rmtree(registry)
        bare.rename(registry)
    finally:
        shutil.rmtree(bare, ignore_errors=True)
