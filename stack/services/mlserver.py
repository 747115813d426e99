"""MLServer: serves the models promoted into the stack's model repository."""

from __future__ import annotations

import json

from stack.services.common import Service, ensure_dir, http_check
from stack.settings import HOST, PORTS, StackPaths

MLSERVER_URL = f"http://{HOST}:{PORTS['mlserver_http']}"


class MLServer:
    def __init__(self, paths: StackPaths) -> None:
        self.paths = paths

    def prepare(self) -> None:
        """Its ports and loopback address live in the repository's settings.json, not on its command line."""
        repository = ensure_dir(self.paths.model_repository)
        (repository / "settings.json").write_text(json.dumps({
            "host": HOST,
            "http_port": PORTS["mlserver_http"],
            "grpc_port": PORTS["mlserver_grpc"],
            "metrics_port": PORTS["mlserver_metrics"],
            "parallel_workers": 0,
            "load_models_at_startup": True,
        }, indent=2))

    def service(self) -> Service:
        return Service("mlserver", [self.paths.bin("serving", "mlserver"), "start", str(self.paths.model_repository)],
                       prepare=self.prepare, health=lambda: http_check(f"{MLSERVER_URL}/v2/health/ready"),
                       url=MLSERVER_URL, start_timeout_s=90,
                       ports=(PORTS["mlserver_http"], PORTS["mlserver_grpc"], PORTS["mlserver_metrics"]))
