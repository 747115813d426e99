"""MLflow tracking from compute nodes: online into the central server, or offline into a per-job store
that the orchestrator replays afterwards (for sites whose compute nodes have no outbound network)."""
