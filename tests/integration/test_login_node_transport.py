"""The core transport suite on each site's login node, with the site's local commands (``local@site_a``).

An Edge worker on a login node submits with the Slurm commands there and reads the job folders on the
site's file system directly (transport ``local``, files ``shared``). This runs the same core suite as
``test_slurm_transports.py`` runs through SSH and slurmrestd, in a pytest started inside each site's login
node (its network, mount and UTS namespaces: it sees the site, not the Airflow host's state), as root there
so that the commands run as the job user through ``runuser``, as on the Airflow host's local cluster.
"""

from __future__ import annotations

import inspect
import re

import pytest

from stack.clusters import node as nodes
from stack.clusters.site import SITES, Site, SiteLayout
from stack.services.sites import SiteCluster
from stack.settings import REPO, StackPaths
from tests.integration import test_slurm_transports as suite

SUITE = REPO / "tests" / "integration" / "test_slurm_transports.py"
# the suite's cases that take a transport: each runs once here, on the login node
CASES = sorted(name for name, test in vars(suite).items()
               if name.startswith("test_") and "cluster" in inspect.signature(test).parameters)
SKIPPED_ON_SITES = {"test_a_job_over_its_memory_limit_ends_out_of_memory"}  # no cgroups on the sites' nodes


@pytest.mark.parametrize("site", SITES, ids=lambda site: site.name)
def test_the_core_transport_suite_passes_on_the_login_node_with_its_local_commands(site: Site):
    paths = StackPaths.from_env()
    if not SiteLayout(paths, site).info_file.exists():
        pytest.fail(f"{site.name} is not up: ./factory stack up")
    cluster = SiteCluster(paths, site)
    python = str(paths.venv("orchestrator") / "bin" / "python")
    env = {"PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "FACTORY_TEST_ON_LOGIN_NODE": site.name}
    result = nodes.run_on(cluster.space(site.login), [
        python, "-m", "pytest", *(f"{SUITE}::{case}" for case in CASES), "-p", "no:cacheprovider", "-q", "-rs",
        "-W", "ignore", "--rootdir", str(REPO)], env=env, timeout_s=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    summary = output.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    skipped = int(match.group(1)) if (match := re.search(r"(\d+) skipped", summary)) else 0
    assert (passed, skipped) == (len(CASES) - len(SKIPPED_ON_SITES), len(SKIPPED_ON_SITES)), output[-3000:]
    assert "failed" not in summary and "error" not in summary, summary
    assert "namespaced hosts without cgroups" in output  # the one skip is the memory-limit case, for its reason
