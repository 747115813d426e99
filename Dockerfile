# The production orchestrator image (README "Deploy at a factory"): the official Airflow image plus
# this project, installed from the same lock file the local stack uses, configured by airflow.cfg
# (CeleryExecutor, PostgreSQL, Redis, connections from a secrets backend). One image for every
# Airflow process; the command picks which. Nothing secret is baked in: the database and broker URLs,
# the fernet key, the JWT and API secret keys come from the environment at run time, the connections
# from files mounted at /opt/airflow/secrets (deploy/connections.example.yaml) or Vault.
# Keep FROM in step with requirements/orchestrator.lock (a unit test checks it). No container engine
# is reachable where this project is developed, so CI does not build it: tests/unit/test_deploy_config.py
# checks this file, airflow.cfg and the example connections instead.

# GX Data Docs' CDN files, pinned by plugins/report_assets/package-lock.json: the reports render offline
FROM node:20-bookworm-slim AS report-assets
COPY plugins/report_assets/package.json plugins/report_assets/package-lock.json plugins/report_assets/.npmrc /assets/
RUN cd /assets && npm ci --ignore-scripts --no-audit --no-fund

FROM apache/airflow:3.3.2-python3.11

# the project's folder, writable by airflow for the editable install below
USER root
RUN mkdir -p /opt/aifactory && chown airflow:0 /opt/aifactory
USER airflow

# Airflow 3.3.2 with the celery, edge3, postgres, amazon, ssh providers, psycopg2, asyncpg, redis, ...
COPY --chown=airflow:0 requirements/orchestrator.lock /opt/aifactory/requirements/orchestrator.lock
RUN uv pip install --no-cache --compile-bytecode -r /opt/aifactory/requirements/orchestrator.lock

# Editable, as in the local stack: the package finds the pipeline specs, the site catalogue and the data
# contracts beside itself (operators/spec.py, operators/sites/catalogue.py, operators/contracts/contract.py)
COPY --chown=airflow:0 pyproject.toml README.md /opt/aifactory/
COPY --chown=airflow:0 operators /opt/aifactory/operators
COPY --chown=airflow:0 pipelines /opt/aifactory/pipelines
COPY --chown=airflow:0 data_contracts /opt/aifactory/data_contracts
COPY --chown=airflow:0 sites /opt/aifactory/sites
RUN uv pip install --no-cache --no-deps --compile-bytecode -e /opt/aifactory

COPY --chown=airflow:0 airflow.cfg /opt/airflow/airflow.cfg
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
COPY --from=report-assets --chown=airflow:0 /assets/node_modules /opt/aifactory/report-assets/node_modules
ENV AIRFLOW_CONFIG=/opt/airflow/airflow.cfg

# 8080: API server (UI, REST, task execution API, Edge worker API); 8793: a Celery worker's log
# server; 8794: a triggerer's log server. Health is per process (README), so no HEALTHCHECK here.
EXPOSE 8080 8793 8794
