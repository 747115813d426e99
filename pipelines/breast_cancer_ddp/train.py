"""Train the breast-cancer MLP with PyTorch DistributedDataParallel inside a Slurm job (torch-runtime Python).

Runs under torchrun, one process per rank (gloo backend, CPU), e.g.::

    srun python -m torch.distributed.run --nnodes=2 --nproc-per-node=1 --rdzv-endpoint=HEAD:PORT ... train.py \
        --data-dir DIR --params PARAMS_JSON_FILE

Without torchrun it trains as a single rank. Every rank reads ``DIR/train.csv`` (features and the
``diagnosis`` label, 0 malignant, 1 benign), standardises with the training statistics and trains on
its shard of each epoch (``DistributedSampler``); DDP averages the gradients. Seeded, one thread per
rank and deterministic algorithms: a re-run with the same data, params and world size gives the same
metrics. Rank 0 alone logs into the MLflow run the orchestrator created (``MLFLOW_RUN_ID``): params,
train metrics and the model, as a numpy-only pyfunc (``mlp_model.py``, which must sit next to this
file) because the inference server has no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import mlflow
import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from mlflow.entities import Metric
from mlflow.models import infer_signature
from mlp_model import WEIGHTS, MLPClassifier, save_weights
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

TARGET = "diagnosis"
DEFAULTS: dict[str, Any] = {"hidden": [32, 16], "epochs": 60, "lr": 0.005, "batch_size": 32, "weight_decay": 0.0001,
                            "seed": 42}
MODEL_CODE = Path(__file__).resolve().parent / "mlp_model.py"
BACKEND = "gloo"


def usage_error(message: str) -> NoReturn:
    """Exit 2, like argparse: the job's inputs are wrong, retrying will not help."""
    print(f"--params: {message}", file=sys.stderr)
    sys.exit(2)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_params(path: Path) -> dict[str, Any]:
    """Defaults overlaid with the file's values; a typo in a key is an error, not a silent default.

    ``hidden``: the hidden layers' widths (a list, or one integer for one layer); ``batch_size`` is
    per rank, so an optimizer step sees ``batch_size * world_size`` rows.
    """
    given = json.loads(path.read_text())
    if not isinstance(given, dict):
        usage_error(f"expected a JSON object, got {type(given).__name__}")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        usage_error(f"unknown keys {unknown}; valid keys are {sorted(DEFAULTS)}")
    params = {**DEFAULTS, **given}
    if is_int(params["hidden"]):
        params["hidden"] = [params["hidden"]]
    if not isinstance(params["hidden"], list) or not all(is_int(width) and width > 0 for width in params["hidden"]):
        usage_error(f"hidden must be a positive integer or a list of them, got {params['hidden']!r}")
    for name in ("epochs", "batch_size", "seed"):
        if not is_int(params[name]) or (name != "seed" and params[name] < 1):
            usage_error(f"{name} must be {'an' if name == 'seed' else 'a positive'} integer, got {params[name]!r}")
    for name in ("lr", "weight_decay"):
        if isinstance(params[name], bool) or not isinstance(params[name], int | float) or params[name] < 0:
            usage_error(f"{name} must be a non-negative number, got {params[name]!r}")
        params[name] = float(params[name])
    if params["lr"] == 0:
        usage_error("lr must be positive")
    return params


def init_distributed() -> tuple[int, int]:
    """Rank and world size: from torchrun's environment, or a lone rank when started without it."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        # env:// takes MASTER_ADDR/MASTER_PORT from torchrun; a lost peer fails the job after the timeout
        dist.init_process_group(BACKEND, timeout=timedelta(minutes=5))
    else:
        dist.init_process_group(BACKEND, store=dist.HashStore(), rank=0, world_size=1)
    return dist.get_rank(), dist.get_world_size()


def rank_hosts(rank: int, world_size: int) -> list[str]:
    """Every rank's host, known to every rank: each says where it runs, and the run records where it trained."""
    hosts: list[Any] = [None] * world_size
    dist.all_gather_object(hosts, socket.gethostname())
    print(f"rank {rank} of {world_size} on {hosts[rank]}", flush=True)
    return hosts


def build_model(n_features: int, hidden: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, 1))  # one logit: P(label 1) = sigmoid(logit)
    return nn.Sequential(*layers)


def train_rank(features: np.ndarray, labels: np.ndarray, params: dict[str, Any],
               rank: int, world_size: int) -> tuple[nn.Sequential, list[float]]:
    """This rank's part of the training; returns the (identical on every rank) model and the epoch losses."""
    torch.manual_seed(params["seed"])  # the same initial weights everywhere (DDP broadcasts rank 0's anyway)
    model = build_model(features.shape[1], params["hidden"])
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    data = TensorDataset(torch.from_numpy(features).float(), torch.from_numpy(labels).float())
    sampler = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=True, seed=params["seed"])
    loader = DataLoader(data, batch_size=params["batch_size"], sampler=sampler)
    losses = []
    for epoch in range(params["epochs"]):
        sampler.set_epoch(epoch)  # a different, still seeded, shuffle per epoch
        ddp.train()
        total = torch.zeros(2, dtype=torch.float64)  # summed loss, rows
        for batch, target in loader:
            optimizer.zero_grad()
            loss = loss_fn(ddp(batch).squeeze(1), target)
            (loss / len(target)).backward()
            optimizer.step()
            total += torch.tensor([loss.item(), len(target)], dtype=torch.float64)
        dist.all_reduce(total)  # the epoch's mean loss over all ranks' rows
        losses.append(float(total[0] / total[1]))
    return model, losses


def log_to_mlflow(model: nn.Sequential, columns: list[str], mean: np.ndarray, scale: np.ndarray,
                  train: pd.DataFrame, params: dict[str, Any], losses: list[float], world_size: int,
                  train_seconds: float, hosts: list[str]) -> None:
    """Rank 0: params, metrics and the numpy pyfunc model, into the run the orchestrator created."""
    linear = [layer for layer in model if isinstance(layer, nn.Linear)]
    layers = [(layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()) for layer in linear]
    features, labels = train[columns], train[TARGET].to_numpy()
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "weights.npz"
        save_weights(weights, columns, mean, scale, layers)
        served = MLPClassifier().load(weights)  # train metrics from what will be served, not from torch
        probabilities = served.predict_proba(features)[:, 1]
        predicted = (probabilities >= 0.5).astype(np.int64)
        metrics = {"train_accuracy": float((predicted == labels).mean()),
                   "train_roc_auc": float(roc_auc_score(labels, probabilities)),
                   "train_loss": losses[-1], "train_seconds": train_seconds}
        with mlflow.start_run() as run:  # MLFLOW_RUN_ID: the run the orchestrator created
            mlflow.log_params({**params, "n_train_rows": len(train), "n_features": len(columns),
                               "world_size": world_size, "hosts": ",".join(hosts), "backend": BACKEND,
                               "torch_version": torch.__version__})
            mlflow.log_metrics(metrics)
            now = int(time.time() * 1000)
            history = [Metric("epoch_loss", loss, now, epoch) for epoch, loss in enumerate(losses)]
            for start in range(0, len(history), 1000):  # MLflow takes at most 1000 metrics per batch
                mlflow.MlflowClient().log_batch(run.info.run_id, metrics=history[start:start + 1000])
            mlflow.pyfunc.log_model(
                name="model", python_model=str(MODEL_CODE), artifacts={WEIGHTS: str(weights)},
                signature=infer_signature(features, predicted), input_example=features.iloc[:2],
                # explicit requirements: what the pyfunc imports (no torch); inferring them would be slow
                pip_requirements=[f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}",
                                  f"pandas=={pd.__version__}"],
            )
    print(f"trained model: run_id={run.info.run_id} world_size={world_size} "
          f"train_accuracy={metrics['train_accuracy']:.4f} train_roc_auc={metrics['train_roc_auc']:.4f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder holding train.csv")
    parser.add_argument("--params", type=Path, required=True,
                        help="JSON file: hidden, epochs, lr, batch_size, weight_decay, seed (all optional)")
    args = parser.parse_args(argv)

    params = load_params(args.params)  # before joining the group: a usage error ends every rank at once
    train = pd.read_csv(args.data_dir / "train.csv")
    if TARGET not in train.columns:
        sys.exit(f"{args.data_dir / 'train.csv'}: no {TARGET!r} column")
    if not train[TARGET].isin([0, 1]).all():
        sys.exit(f"{args.data_dir / 'train.csv'}: {TARGET!r} must be 0 or 1")
    columns = [name for name in train.columns if name != TARGET]
    values = train[columns].to_numpy(dtype=np.float64)
    mean, scale = values.mean(axis=0), values.std(axis=0)
    scale[scale == 0] = 1.0  # a constant column stays 0 after standardising
    features = ((values - mean) / scale).astype(np.float32)
    labels = train[TARGET].to_numpy(dtype=np.float32)

    torch.set_num_threads(1)  # one core per rank; also keeps float sums in the same order on every run
    torch.use_deterministic_algorithms(True)
    rank, world_size = init_distributed()
    try:
        hosts = rank_hosts(rank, world_size)
        started = time.monotonic()
        model, losses = train_rank(features, labels, params, rank, world_size)
        train_seconds = time.monotonic() - started
        if rank == 0:
            log_to_mlflow(model, columns, mean, scale, train, params, losses, world_size, train_seconds, hosts)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
