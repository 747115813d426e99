# Orchestrator image for a real deployment: the official Airflow image plus this project,
# installed from the same lock file the local stack uses. Keep FROM in step with
# requirements/orchestrator.lock (a unit test checks it). No container engine is reachable where
# this project is developed, so CI does not build it.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:0 requirements/orchestrator.lock /opt/aifactory/requirements/orchestrator.lock
RUN uv pip install --no-cache --compile-bytecode -r /opt/aifactory/requirements/orchestrator.lock

COPY --chown=airflow:0 pyproject.toml README.md /opt/aifactory/
COPY --chown=airflow:0 operators /opt/aifactory/operators
RUN uv pip install --no-cache --no-deps --compile-bytecode /opt/aifactory

COPY --chown=airflow:0 airflow.cfg /opt/airflow/airflow.cfg
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
COPY --chown=airflow:0 pipelines /opt/airflow/pipelines
COPY --chown=airflow:0 data_contracts /opt/airflow/data_contracts
COPY --chown=airflow:0 sites /opt/airflow/sites
ENV AIRFLOW_CONFIG=/opt/airflow/airflow.cfg
