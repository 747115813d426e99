"""The site catalogue: every file loads, requests are checked against real limits, and mistakes in a
site file name the file, the line, the field and what is allowed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from operators.sites import (
    SITES_DIR,
    Site,
    SiteError,
    account_directive,
    check_request,
    gpu_directives,
    load_catalogue,
    load_site,
    walltime_seconds,
)

REPO = Path(__file__).resolve().parents[2]
EXPECTED_SITES = {"local", "site_a", "site_b", "jupiter", "juwels_booster", "lumi", "leonardo", "marenostrum5",
                  "meluxina", "karolina", "jean_zay", "alps"}


@pytest.fixture(scope="module")
def sites() -> dict[str, Site]:
    return load_catalogue()


def test_every_catalogue_file_loads(sites: dict[str, Site]) -> None:
    assert set(sites) == EXPECTED_SITES
    assert {path.stem for path in SITES_DIR.glob("*.yaml")} == EXPECTED_SITES
    assert next(iter(sites)) == "local"
    for name, site in sites.items():
        assert site.name == name and site.apiVersion == "aifactory/v1" and site.kind == "Site"
        assert site.file == SITES_DIR / f"{name}.yaml"


def test_the_facts_that_drive_rendering(sites: dict[str, Site]) -> None:
    assert (sites["jupiter"].node.gpus, sites["jupiter"].node.gpu_model, sites["jupiter"].node.cpu_arch) == (
        4, "NVIDIA GH200", "aarch64")
    assert sites["lumi"].node.gpus == 8 and sites["lumi"].gpu_request.style == "gpus-per-node"
    assert sites["karolina"].node.gpus == 8
    assert sites["alps"].gpu_request.style == "gpus-per-task"
    assert sites["alps"].containers.runtimes == ["cscs-container-engine"]
    assert sites["alps"].network.compute_nodes_internet is True
    assert set(sites["jupiter"].submission or {}) == {"unicore", "ssh"}
    assert sites["alps"].submission and set(sites["alps"].submission) == {"firecrest"}
    local = sites["local"]
    assert set(local.partitions) == {"cpu", "gpu"} and local.default_partition() == "cpu"
    assert (local.node.gpus, local.account.default, local.slurm_version) == (2, "demo", "22.05")
    assert local.submission and {entry.connection for entry in local.submission.values()} == {
        "factory_slurm_local", "factory_slurm_cli", "factory_slurm_ssh"}
    assert sites["leonardo"].billing.per_gpu_hour == 8
    assert sites["lumi"].billing.per_node_hour == 4


def test_jupiter_refuses_eight_gpus_per_node(sites: dict[str, Site]) -> None:
    problems = check_request(sites["jupiter"], nodes=2, gpus_per_node=8, partition="booster")
    assert problems == ["JUPITER nodes have 4 GPUs (NVIDIA GH200); 8 GPUs per node requested"]
    assert check_request(sites["jupiter"], nodes=2, gpus_per_node=4, partition="booster") == []
    assert check_request(sites["lumi"], gpus_per_node=8, partition="standard-g") == []


def test_walltime_above_the_site_maximum(sites: dict[str, Site]) -> None:
    assert check_request(sites["jupiter"], time_limit="48:00:00") == [
        "JUPITER allows at most 24 h (unverified); 2 d (48:00:00) requested"]
    assert check_request(sites["jupiter"], time_limit="24:00:00") == []
    assert check_request(sites["leonardo"], time_limit="1-01:00:00") == [
        "Leonardo allows at most 24 h (seen only in public job scripts); 25 h (1-01:00:00) requested"]
    assert check_request(sites["local"], time_limit="2-00:00:00") == [
        "local cluster partition 'cpu' (the default) allows at most 24 h; 2 d (2-00:00:00) requested"]


def test_partition_and_qos_limits_come_before_the_site_maximum(sites: dict[str, Site]) -> None:
    assert check_request(sites["lumi"], gpus_per_node=8, partition="dev-g", time_limit="4:00:00") == [
        "LUMI partition 'dev-g' allows at most 3 h; 4 h (4:00:00) requested"]
    assert check_request(sites["lumi"], nodes=8, partition="small-g") == [
        "LUMI partition 'small-g' allows at most 4 nodes; 8 requested"]
    assert check_request(sites["leonardo"], partition="boost_usr_prod", qos="boost_qos_dbg", time_limit="60") == [
        "Leonardo QoS 'boost_qos_dbg' allows at most 30 min; 1 h (60) requested"]
    # a QoS whose limit is unknown does not lift the site's
    assert check_request(sites["leonardo"], qos="boost_qos_lprod", time_limit="48:00:00") == [
        "Leonardo allows at most 24 h (seen only in public job scripts); 2 d (48:00:00) requested"]


def test_unknown_partition_lists_the_known_ones(sites: dict[str, Site]) -> None:
    assert check_request(sites["lumi"], gpus_per_node=8, partition="gpu") == [
        "LUMI has no partition 'gpu' (known: dev-g, small-g, standard-g)"]


def test_unknown_qos_and_qos_patterns(sites: dict[str, Site]) -> None:
    assert check_request(sites["alps"], qos="high") == ["Alps has no QoS 'high' (known: none in the catalogue)"]
    assert check_request(sites["marenostrum5"], gpus_per_node=4, partition="acc", qos="acc_bsc88") == []
    assert check_request(sites["marenostrum5"], partition="acc", qos="gpp_bsc88") == [
        "MareNostrum 5 has no QoS 'gpp_bsc88' (known: acc_<group>, acc_debug)"]


def test_gpus_on_a_partition_without_gpus(sites: dict[str, Site]) -> None:
    expected = "local cluster partition 'cpu' has no GPUs; 1 GPU per node requested (partitions with GPUs: gpu)"
    assert check_request(sites["local"], gpus_per_node=1, partition="cpu") == [expected]
    assert check_request(sites["local"], gpus_per_node=1) == [expected.replace("'cpu'", "'cpu' (the default)")]
    assert check_request(sites["local"], gpus_per_node=2, partition="gpu", memory="1G", time_limit="00:10:00") == []


def test_other_request_problems(sites: dict[str, Site]) -> None:
    assert check_request(sites["karolina"], cpus_per_task=200) == [
        "Karolina nodes have 128 cores; 200 CPUs per task requested"]
    assert check_request(sites["local"], memory="lots") == ["memory: 'lots' must look like 512M or 4G"]
    assert check_request(sites["local"], time_limit="soon") == [
        "time limit: 'soon' is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)"]
    assert check_request(sites["local"], nodes=0, gpus_per_node=-1) == [
        "nodes: 0 must be a whole number >= 1", "GPUs per node: -1 must be a whole number >= 0"]
    assert check_request(sites["meluxina"], gpus_per_node=1, partition="gpu")[0].startswith(
        "MeluXina: how to ask for GPUs is not known")


def test_gpu_directives_follow_each_sites_syntax(sites: dict[str, Site]) -> None:
    assert gpu_directives(sites["jupiter"], 4) == ["--gres=gpu:4"]
    assert gpu_directives(sites["lumi"], 8) == ["--gpus-per-node=8"]
    assert gpu_directives(sites["alps"], 4) == ["--ntasks-per-node=4", "--gpus-per-task=1"]
    assert gpu_directives(sites["jean_zay"], 4) == ["--gres=gpu:4", "--constraint=h100", "--hint=nomultithread"]
    assert gpu_directives(sites["jupiter"], 0) == []
    with pytest.raises(SiteError, match=r"karolina\.yaml:\d+: gpu_request\.style: how to ask Karolina"):
        gpu_directives(sites["karolina"], 1)


def test_account_directive_follows_each_sites_syntax(sites: dict[str, Site]) -> None:
    assert account_directive(sites["local"]) == "--account=demo"
    assert account_directive(sites["jean_zay"], "abc") == "--account=abc@h100"
    assert account_directive(sites["lumi"], "project_465000123") == "--account=project_465000123"
    with pytest.raises(SiteError, match=r"'demo' is not shaped like Alps accounts \(must match g\[0-9\]\+"):
        account_directive(sites["alps"], "demo")
    with pytest.raises(SiteError, match="JUPITER needs an account"):
        account_directive(sites["jupiter"])
    with pytest.raises(SiteError, match="not allowed"):
        account_directive(sites["jupiter"], "p1\n#SBATCH --uid=0")


@pytest.mark.parametrize(("site", "path", "marking"), [
    ("jupiter", "partitions.booster", "observed"),          # `booster` (obs.)
    ("jupiter", "gpu_request.style", "observed"),           # `--gres=gpu:4` (obs.)
    ("jupiter", "containers.runtimes", "unverified"),       # Apptainer (?)
    ("jupiter", "max_walltime", "unverified"),              # 24 h (?)
    ("jupiter", "network.compute_nodes_internet", "unverified"),   # none (?)
    ("jupiter", "submission.unicore.endpoint", "observed"),
    ("juwels_booster", "partitions.develbooster", "unverified"),
    ("lumi", "network.compute_nodes_internet", "unverified"),      # probably yes (?)
    ("leonardo", "qos.boost_qos_lprod", "observed"),
    ("leonardo", "max_walltime", "observed"),               # 24 h (obs.)
    ("leonardo", "account.example", "observed"),            # AIFAC_* (obs.)
    ("marenostrum5", "partitions.acc", "observed"),
    ("marenostrum5", "network.compute_nodes_internet", "observed"),  # none (obs.)
    ("marenostrum5", "max_walltime", "unknown"),            # (?)
    ("meluxina", "partitions.gpu", "unverified"),           # `gpu` (?)
    ("meluxina", "gpu_request.style", "unknown"),           # (?)
    ("karolina", "containers.runtimes", "unverified"),      # Apptainer (?)
    ("jean_zay", "gpu_request.extra_directives", "observed"),      # --hint=nomultithread (obs.)
    ("jean_zay", "account.template", "observed"),           # -A <proj>@h100 (obs.)
    ("alps", "slurm_version", "unknown"),
])
def test_unverified_values_are_marked(sites: dict[str, Site], site: str, path: str, marking: str) -> None:
    assert sites[site].mark(path) == marking
    line = (SITES_DIR / f"{site}.yaml").read_text().splitlines()[sites[site].lines[path] - 1]
    comment = {"observed": "(obs.)", "unverified": "(?)", "unknown": "unknown"}[marking]
    assert comment in line, f"{site}.yaml line {sites[site].lines[path]} lacks the comment {comment}: {line!r}"


def test_documented_values_are_not_marked(sites: dict[str, Site]) -> None:
    assert sites["lumi"].mark("gpu_request.style") is None
    assert sites["alps"].mark("max_walltime") is None
    assert sites["jupiter"].mark("node.gpus") is None
    assert sites["jupiter"].mark("partitions.booster.gpus_per_node") == "observed"  # inherited from its partition


def test_every_null_is_marked_unknown(sites: dict[str, Site]) -> None:
    for site in sites.values():
        for path, marking in site.unverified.items():
            assert path in site.lines, (site.name, path)
            if marking == "unknown":
                assert re.search(r":\s*null\b", (site.file.read_text().splitlines()[site.lines[path] - 1]))


def test_walltimes_in_every_slurm_format() -> None:
    assert [walltime_seconds(text) for text in ("30", "30:15", "24:00:00", "2-00:00:00", "1-12", "1-12:30")] == [
        1800, 1815, 86400, 172800, 129600, 131400]
    with pytest.raises(ValueError, match="below 60"):
        walltime_seconds("1:75:00")


# ------------------------------------------------------------------ malformed site files

GOOD = (SITES_DIR / "lumi.yaml").read_text()


def variant(tmp_path: Path, edit: Callable[[str], str], name: str = "lumi") -> Path:
    text = edit(GOOD)
    assert text != GOOD, "the edit changed nothing"
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(("edit", "needle", "field", "message"), [
    (lambda text: text.replace("title: LUMI", "title: LUMI\ncolour: green"), "colour:", "colour",
     r"unknown field \(allowed: account, ai_factory, apiVersion, billing, centre, .*\)"),
    (lambda text: text.replace("  whole_nodes: true", "  whole_nodes: true\n    exclusive: true"), "exclusive:",
     "partitions.standard-g.exclusive", r"unknown field \(allowed: default, gpus_per_node, max_nodes, "
                                        r"max_walltime, notes, whole_nodes\)"),
    (lambda text: text.replace("  gpus: 8 ", "  gpus: eight "), "gpus: eight", "node.gpus",
     r"expected a whole number, got text 'eight'"),
    (lambda text: text.replace("whole_nodes: true", "whole_nodes: 1"), "whole_nodes: 1",
     "partitions.standard-g.whole_nodes", r"expected true or false, got a whole number 1"),
    (lambda text: text.replace("max_nodes: 4", "max_nodes: [4]"), "max_nodes: [4]",
     "partitions.small-g.max_nodes", r"expected a whole number or null, got a list"),
    (lambda text: text.replace("cpu_arch: x86_64", "cpu_arch: amd64"), "cpu_arch: amd64", "node.cpu_arch",
     r"'amd64' is not allowed \(allowed: x86_64, aarch64\)"),
    (lambda text: text.replace("style: gpus-per-node", "style: gpus"), "style: gpus", "gpu_request.style",
     r"'gpus' is not allowed \(allowed: gres, gpus-per-node, gpus-per-task\)"),
    (lambda text: text.replace("runtimes: [singularity, apptainer]", "runtimes: [docker]"), "runtimes: [docker]",
     "containers.runtimes.0", r"'docker' is not allowed \(allowed: apptainer, singularity, pyxis-enroot, "
                              r"cscs-container-engine\)"),
    (lambda text: text.replace("  ssh: {}", "  telnet: {}"), "telnet:", "submission.telnet",
     r"'telnet' is not allowed \(allowed: ssh, slurmrestd, local, unicore, firecrest\)"),
    (lambda text: text.replace("unit: gpu-hours", "unit: euros"), "unit: euros", "billing.unit",
     r"'euros' is not allowed \(allowed: core-hours, gpu-hours, node-hours, none\)"),
    (lambda text: text.replace("  network.compute_nodes_internet: unverified", "  network.compute_nodes_internet: "
                               "maybe"), "compute_nodes_internet: maybe", "unverified.network.compute_nodes_internet",
     r"'maybe' is not allowed \(allowed: observed, unverified, unknown\)"),
    (lambda text: text.replace("  gpu_model: AMD MI250X GCD\n", ""), "node:", "node.gpu_model",
     r"required field is missing \(expected text\)"),
    (lambda text: text.replace("max_walltime: 3-00:00:00            #", "#"), "apiVersion:", "max_walltime",
     r"required field is missing \(expected a Slurm time .* or null; write null and mark it unknown"),
    (lambda text: text.replace("  gpus: 8 ", "  gpus: -8 "), "gpus: -8", "node.gpus",
     r"-8 must be a whole number >= 0"),
    (lambda text: text.replace("max_nodes: 4", "max_nodes: -4"), "max_nodes: -4", "partitions.small-g.max_nodes",
     r"-4 must be a whole number >= 1"),
    (lambda text: text.replace("per_node_hour: 4 ", "per_node_hour: -0.5 "), "per_node_hour: -0.5",
     "billing.per_node_hour", r"-0.5 must be a number >= 0"),
    (lambda text: text.replace('max_walltime: "3:00:00"', "max_walltime: three hours"), "three hours",
     "partitions.dev-g.max_walltime", r"'three hours' is not a Slurm time"),
    (lambda text: text.replace("apiVersion: aifactory/v1", "apiVersion: aifactory/v2"), "apiVersion:",
     "apiVersion", r"'aifactory/v2' is not allowed \(allowed: aifactory/v1\)"),
    (lambda text: text.replace("kind: Site", "kind: Pipeline"), "kind:", "kind",
     r"'Pipeline' is not allowed \(allowed: Site\)"),
    (lambda text: text.replace("name: lumi", "name: lumi2"), "name: lumi2", "name",
     r"'lumi2' must match the file name 'lumi'"),
    (lambda text: text.replace("  cores: null ", "  cores: 64 "), "node.cores: unknown", "unverified.node.cores",
     r"'unknown' is only for null values; node.cores has a value"),
    (lambda text: text.replace("  node.cores: unknown\n", ""), "cores: null", "node.cores",
     r"null means nobody knows the value: list it in 'unverified' as `node.cores: unknown`"),
    (lambda text: text.replace("  slurm_version: unknown", "  slurm_versions: unknown"), "slurm_versions: unknown",
     "unverified.slurm_versions", r"marks a field that the file does not have"),
    (lambda text: text.replace("title: LUMI", "title: LUMI\ntitle: LUMI again"), "LUMI again", "title",
     r"given twice"),
    (lambda text: text.replace("  dev-g:", "  dev g;rm:"), "dev g;rm:", "partitions.dev g;rm",
     r"'dev g;rm' is not a valid name"),
    (lambda text: text.replace('  template: "{project}"', '  template: "{project} --uid=0"'), "--uid=0",
     "account.template", r"'\{project\} --uid=0' must contain \{project\} and otherwise only"),
    (lambda text: text.replace("  style: gpus-per-node", "  style: gpus-per-node\n  extra_directives: ['--x; id']"),
     "extra_directives", "gpu_request.extra_directives.0", r"'--x; id' must look like --option or --option=value"),
    (lambda text: text.replace("    max_walltime: 2-00:00:00\n", "    max_walltime: 2-00:00:00\n    default: true\n")
     .replace("    max_nodes: 4\n", "    max_nodes: 4\n    default: true  # second\n"), "# second",
     "partitions.small-g.default", r"only one partition can be the default"),
    (lambda text: text.replace("    max_walltime: \"3:00:00\"", "    max_walltime: \"3:00:00\"\n    gpus_per_node: 16")
     .replace("  dev-g:\n    gpus_per_node: 8\n", "  dev-g:\n"), "gpus_per_node: 16", "partitions.dev-g.gpus_per_node",
     r"16 is more than node.gpus \(8\)"),
])
def test_malformed_site_files_name_file_line_and_field(tmp_path: Path, edit: Callable[[str], str], needle: str,
                                                       field: str, message: str) -> None:
    path = variant(tmp_path, edit)
    with pytest.raises(SiteError) as caught:
        load_site(path)
    line = line_of(path.read_text(), needle)
    assert re.match(rf"{re.escape(str(path))}:{line}: {re.escape(field)}: {message}", str(caught.value)), (
        str(caught.value))


def test_qos_must_name_partitions_of_the_site(tmp_path: Path) -> None:
    path = tmp_path / "leonardo.yaml"
    path.write_text((SITES_DIR / "leonardo.yaml").read_text().replace(
        "    max_walltime: \"00:30:00\"\n    partitions: [boost_usr_prod]",
        "    max_walltime: \"00:30:00\"\n    partitions: [boost_prod]"))
    with pytest.raises(SiteError, match=r"leonardo\.yaml:\d+: qos\.boost_qos_dbg\.partitions\.0: 'boost_prod' is "
                                        r"not a partition of this site \(allowed: boost_usr_prod\)"):
        load_site(path)


@pytest.mark.parametrize(("text", "message"), [
    ("", r":1: site: the file is empty"),
    ("- a list\n", r":1: site: expected a mapping"),
    ("? [a]\n: 1\n", r":1: site: keys must be text, got 'a list or mapping'"),
    ("<<: {kind: Site}\n", r":1: site: YAML merge keys \(<<\) are not supported"),
    ("apiVersion: [unclosed\n", r": not valid YAML"),
])
def test_files_that_are_not_site_mappings(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(SiteError, match=message):
        load_site(path)


def test_unknown_site_name_lists_the_known_ones() -> None:
    with pytest.raises(SiteError, match=r"no site 'jupyter' in .* \(known: alps, jean_zay, jupiter, "):
        load_site("jupyter")


def test_catalogue_reports_every_bad_file(tmp_path: Path) -> None:
    for name in ("jupiter", "alps", "lumi"):
        (tmp_path / f"{name}.yaml").write_text((SITES_DIR / f"{name}.yaml").read_text())
    (tmp_path / "alps.yaml").write_text((tmp_path / "alps.yaml").read_text().replace("gpus: 4", "gpus: four"))
    (tmp_path / "lumi.yaml").write_text((tmp_path / "lumi.yaml").read_text().replace("kind: Site", "kind: site"))
    with pytest.raises(SiteError) as caught:
        load_catalogue(tmp_path)
    assert [message.split(": ", 2)[1] for message in caught.value.errors] == ["node.gpus", "kind"]


# ------------------------------------------------------------------ factory sites

PYTHON = "/var/lib/aifactory/venvs/orchestrator/bin/python"


def run_sites(*arguments: str) -> subprocess.CompletedProcess[str]:
    python = PYTHON if Path(PYTHON).exists() else sys.executable
    return subprocess.run([python, "-m", "operators.sites", *arguments], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=60)


def test_factory_sites_prints_a_table() -> None:
    result = run_sites()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["SITE", "GPUS/NODE", "ARCH"]
    rows = {line.split()[0]: line for line in lines[1:] if line and line.split()[0] in EXPECTED_SITES}
    assert set(rows) == EXPECTED_SITES
    assert "4 x NVIDIA GH200" in rows["jupiter"] and "aarch64" in rows["jupiter"]
    assert "--gres=gpu:N (obs.)" in rows["jupiter"] and "24 h (?)" in rows["jupiter"]
    assert "--gpus-per-node=N" in rows["lumi"] and "firecrest" in rows["alps"]
    assert "cscs-container-engine" in rows["alps"]


def test_factory_sites_json() -> None:
    result = run_sites("--json")
    assert result.returncode == 0, result.stderr
    catalogue = json.loads(result.stdout)
    assert set(catalogue) == EXPECTED_SITES
    assert catalogue["jupiter"]["node"]["gpus"] == 4
    assert catalogue["jupiter"]["unverified"]["max_walltime"] == "unverified"


def test_factory_sites_exits_1_naming_the_bad_file(tmp_path: Path) -> None:
    (tmp_path / "alps.yaml").write_text((SITES_DIR / "alps.yaml").read_text().replace("cpu_arch: aarch64",
                                                                                       "cpu_arch: arm"))
    result = run_sites("--dir", str(tmp_path))
    assert result.returncode == 1
    assert re.search(r"alps\.yaml:\d+: node\.cpu_arch: 'arm' is not allowed \(allowed: x86_64, aarch64\)",
                     result.stderr), result.stderr


def test_the_factory_entry_point_has_the_sites_command() -> None:
    result = subprocess.run([str(REPO / "factory"), "sites", "--json"], capture_output=True, text=True, timeout=60)
    if "not set up yet" in result.stderr:
        pytest.skip("the orchestrator environment is not installed")
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == EXPECTED_SITES


def test_loading_sites_imports_no_airflow_or_heavy_library() -> None:
    probe = ("import sys, operators.sites as s; s.load_catalogue(); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('airflow', 'mlflow', 'great_expectations', 'dvc', 'sklearn', 'torch')))")
    python = PYTHON if Path(PYTHON).exists() else sys.executable
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=REPO,
                            env={"PYTHONPATH": str(REPO)}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(("edit", "field", "message"), [
    (("  ssh:\n    endpoint: ssh://hpcuser@10.77.1.20:22\n",
      "  ssh:\n    edge_queue: site_a\n    endpoint: ssh://hpcuser@10.77.1.20:22\n"),
     "submission.ssh.edge_queue", "only the method 'local' has an Edge worker queue"),
    (("    connection: factory_slurm_site_a_local\n", ""), "submission.local.connection",
     "an Edge worker method needs the connection its tasks use"),
    (("    edge_queue: site_a\n", "    edge_queue: --site_a\n"), "submission.local.edge_queue",
     "is not allowed (lower-case letters, digits, _ and -)"),
])
def test_an_edge_queue_belongs_to_a_local_method_with_a_connection(tmp_path: Path, edit, field, message) -> None:
    path = tmp_path / "site_a.yaml"
    text = (SITES_DIR / "site_a.yaml").read_text()
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(SiteError, match=rf"site_a\.yaml:\d+: {re.escape(field)}: .*{re.escape(message)}"):
        load_site(path)
