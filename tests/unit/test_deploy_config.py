"""The production deployment, checked without a container engine: airflow.cfg, the Dockerfile, the example
secrets-backend files in deploy/ and the README's "Deploy at a factory" section agree, and hold no secret."""

from __future__ import annotations

import configparser
import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from operators.provider import SLURM_CONNECTION_FIELDS
from stack.manager import Stack
from stack.services.airflow import EDGE_EXECUTOR
from stack.settings import HOST, StackPaths

REPO = Path(__file__).resolve().parents[2]
CFG_FILE = REPO / "airflow.cfg"
DOCKERFILE = REPO / "Dockerfile"
DEPLOY = REPO / "deploy"
SECRETS_DIR = "/opt/airflow/secrets"
SITES = {path.stem for path in (REPO / "sites").glob("*.yaml")}
PRIVATE_KEY = re.compile(r"BEGIN[A-Z ]*PRIVATE KEY", re.I)
SECRET_WORDS = ("password", "passwd", "token", "secret", "private")
# what runs at a factory, and the ports the README must name
COMMANDS = ("airflow api-server", "airflow scheduler", "airflow dag-processor", "airflow triggerer",
            "airflow celery worker", "airflow edge worker")
PORTS = ("8080", "8793", "8794", "5432", "6379")
# values that only make sense in the image or a factory's network: the stack must never run on them
PRODUCTION_ONLY = ("0.0.0.0", "airflow-apiserver", "@postgres:", "redis://redis:", "/opt/airflow")


def airflow_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(CFG_FILE.read_text())
    return parser


def backend_files() -> dict[str, str]:
    return json.loads(airflow_cfg()["secrets"]["backend_kwargs"])


def example_of(path: str) -> Path:
    """deploy/connections.example.yaml for /opt/airflow/secrets/connections.yaml."""
    name = Path(path)
    return DEPLOY / f"{name.stem}.example{name.suffix}"


def example_connections() -> dict:
    return yaml.safe_load(example_of(backend_files()["connections_file_path"]).read_text())


def readme_deploy_section() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("\n## Deploy at a factory\n")
    end = readme.index("\n## ", start + 1)
    assert readme.index("\n## How a real AI factory differs from the local stack\n") < start
    return readme[start:end]


def test_airflow_cfg_is_the_production_configuration():
    cfg = airflow_cfg()
    assert cfg["core"]["executor"] == "CeleryExecutor"
    database = urlsplit(cfg["database"]["sql_alchemy_conn"])
    assert database.scheme.startswith("postgresql") and database.password is None
    for key in ("broker_url", "result_backend"):
        url = urlsplit(cfg["celery"][key])
        assert url.scheme == "redis" and url.password is None, key
    assert cfg["api"]["port"] == "8080"
    assert cfg["logging"]["worker_log_server_port"] == "8793"


@pytest.mark.parametrize("path", [CFG_FILE, DOCKERFILE], ids=lambda path: path.name)
def test_no_sqlite_anywhere(path):
    assert "sqlite" not in path.read_text().lower()


def test_airflow_cfg_holds_no_secret():
    cfg = airflow_cfg()
    for section, key in (("core", "fernet_key"), ("api_auth", "jwt_secret"), ("api", "secret_key")):
        for option in (key, f"{key}_cmd", f"{key}_secret"):
            assert not cfg.has_option(section, option), f"[{section}] {option}: from the environment only"
    for section in cfg.sections():
        for key, value in cfg[section].items():
            assert not PRIVATE_KEY.search(value), f"[{section}] {key}"
            if "://" in value:
                assert urlsplit(value).password is None, f"[{section}] {key} holds a password"


def test_connections_and_variables_come_from_the_secrets_backend_and_its_examples_parse():
    from airflow.secrets.local_filesystem import load_connections_dict, load_variables

    cfg = airflow_cfg()
    assert cfg["secrets"]["backend"] == "airflow.secrets.local_filesystem.LocalFilesystemBackend"
    files = backend_files()
    assert set(files) == {"connections_file_path", "variables_file_path"}
    for path in files.values():
        assert path.startswith(f"{SECRETS_DIR}/"), path
        assert example_of(path).is_file(), example_of(path)
    # as Airflow reads them: the connections' fields are the Connection's own, the variables a mapping
    connections = load_connections_dict(str(example_of(files["connections_file_path"])))
    assert connections and set(connections) == set(example_connections())
    assert isinstance(load_variables(str(example_of(files["variables_file_path"]))), dict)


def test_the_example_files_hold_no_secret():
    files = sorted(DEPLOY.iterdir())
    assert files
    for path in files:
        text = path.read_text()
        assert not PRIVATE_KEY.search(text), path
        data = yaml.safe_load(text) or {}
        stack = [data]
        while stack:  # every key at any depth: no password, token or secret has a value
            item = stack.pop()
            if isinstance(item, dict):
                for key, value in item.items():
                    if any(word in str(key).lower() for word in SECRET_WORDS):
                        assert value in (None, ""), f"{path.name}: {key}"
                    stack.append(value)
            elif isinstance(item, list):
                stack.extend(item)


def test_each_example_connection_is_a_slurm_site_of_the_catalogue():
    from airflow.secrets.local_filesystem import load_connections_dict

    from operators.slurm.hooks import SlurmHook

    path = example_of(backend_files()["connections_file_path"])
    for conn_id, connection in load_connections_dict(str(path)).items():
        match = re.fullmatch(r"factory_slurm_(\w+)", conn_id)
        assert match and match.group(1) in SITES, f"{conn_id}: factory_slurm_<site> for a file of sites/"
        assert connection.conn_type == "slurm"
        assert not connection.password
        assert set(connection.extra_dejson) <= set(SLURM_CONNECTION_FIELDS), conn_id
        assert connection.extra_dejson["transport"] == "ssh"
        for key in ("key_file", "known_hosts"):  # files mounted beside the connections, named by path
            assert connection.extra_dejson[key].startswith(f"{SECRETS_DIR}/"), (conn_id, key)
        hook = SlurmHook(conn_id)
        hook._connection = connection
        assert hook.get_transport(), conn_id  # the project's hook accepts it (no connection is opened)


def test_the_reconciler_watches_the_example_s_sites():
    watched = airflow_cfg()["factory"]["slurm_reconcile_connections"].split(",")
    assert watched and set(watched) <= set(example_connections())


def test_the_dockerfile_copies_the_configuration_exposes_the_ports_and_bakes_in_no_secret():
    text = DOCKERFILE.read_text()
    assert re.search(r"^COPY\b.*\sairflow\.cfg\s+/opt/airflow/airflow\.cfg$", text, re.M)
    assert re.search(r"^ENV\s+AIRFLOW_CONFIG=/opt/airflow/airflow\.cfg$", text, re.M)
    exposed = {port for line in re.findall(r"^EXPOSE\s+(.+)$", text, re.M) for port in line.split()}
    assert {"8080", "8793"} <= exposed
    assert re.search(r"^RUN uv pip install .*-r /opt/aifactory/requirements/orchestrator\.lock$", text, re.M)
    for line in re.findall(r"^(?:ENV|ARG)\s.*$", text, re.M):
        assert not re.search(r"FERNET|JWT|SECRET|PASSWORD|SQL_ALCHEMY_CONN|BROKER_URL|RESULT_BACKEND", line, re.I)
    assert not re.search(r"^COPY\b.*\b(secrets|deploy)\b", text, re.M), "secrets are mounted at run time"


def test_the_lock_has_the_executors_the_deployment_uses():
    lock = (REPO / "requirements/orchestrator.lock").read_text()
    for package in ("apache-airflow-providers-celery", "apache-airflow-providers-edge3",
                    "apache-airflow-providers-postgres", "psycopg2-binary", "redis"):
        assert re.search(rf"^{package}==", lock, re.M), package


def test_the_readme_says_which_process_runs_where_and_on_which_port():
    section = readme_deploy_section()
    for command in COMMANDS:
        assert f"`{command}`" in section, command
    for port in PORTS:
        assert re.search(rf"\b{port}\b", section), port
    for word in ("PostgreSQL", "Redis", "Kubernetes", "login node", "HTTPS", "deploy/connections.example.yaml",
                 "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "_CMD", "_SECRET",
                 "factory_slurm_<site>", "LocalFilesystemBackend"):
        assert word in section, word


@pytest.mark.parametrize("profile", ["local", "production"])
def test_the_local_stack_overrides_every_production_only_value(tmp_path, profile):
    """The stack runs this airflow.cfg on one machine: whatever names the image's paths or a factory's hosts
    is replaced by an AIRFLOW__ variable, the API stays on loopback and no secrets backend file is read."""
    airflow = Stack(StackPaths(tmp_path / "state"), profile).factory.airflow
    env = airflow.env()
    assert env["AIRFLOW_CONFIG"] == str(CFG_FILE)
    assert env["AIRFLOW__API__HOST"] == HOST
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith(f"http://{HOST}:")
    assert env["AIRFLOW__SECRETS__BACKEND"] == ""
    airflow.paths.ensure()
    airflow.secrets.ensure_slurm_jwt_key(os.getuid(), os.getgid())
    watched = set(env["AIRFLOW__FACTORY__SLURM_RECONCILE_CONNECTIONS"].split(","))
    assert watched <= set(airflow.connections()), "the reconciler watches the stack's own clusters"
    cfg = airflow_cfg()
    executors = env["AIRFLOW__CORE__EXECUTOR"].split(",")
    celery = executors[0] == "CeleryExecutor"
    assert celery == (profile == "production")
    if profile == "production":  # Edge workers on login nodes take their sites' queues; Celery all others
        assert executors[1:] == [EDGE_EXECUTOR] and env["AIRFLOW__EDGE__API_ENABLED"] == "True"
        assert "EdgeDBManager" in env["AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS"]
    for section in cfg.sections():
        if section == "celery" and not celery:
            continue
        for key, value in cfg[section].items():
            if (section, key) == ("secrets", "backend_kwargs") or not any(mark in value for mark in PRODUCTION_ONLY):
                continue
            assert f"AIRFLOW__{section.upper()}__{key.upper()}" in env, f"[{section}] {key} = {value}"


def test_the_image_carries_the_report_assets_where_airflow_cfg_serves_them():
    text, served = DOCKERFILE.read_text(), airflow_cfg()["factory"]["report_assets"]
    assert re.search(rf"^COPY --from=report-assets\b.*\s{re.escape(served)}$", text, re.M)
    assert re.search(r"^COPY plugins/report_assets/package\.json plugins/report_assets/package-lock\.json", text, re.M)
    assert re.search(r"npm ci --ignore-scripts", text)
