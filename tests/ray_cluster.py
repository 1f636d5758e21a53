"""A private Ray cluster on 127.0.0.1 for the cluster tests (never another cluster)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import pytest

from orchestration.ray_launcher import RAY_ENV


@contextlib.contextmanager
def private_cluster(workers: int = 3, worker_cpus: float = 1):  # type: ignore[no-untyped-def]
    """A head with no CPU (it places nothing) and ``workers`` worker nodes of ``worker_cpus``
    CPUs and a small object store each, all on 127.0.0.1 in a private temporary directory; the
    test process is its driver. Shut down, and the environment restored, on exit."""
    saved = {k: os.environ.get(k) for k in (*RAY_ENV, "RAY_ADDRESS")}
    os.environ.update(RAY_ENV)  # read when Ray is imported (and by its processes)
    os.environ.pop("RAY_ADDRESS", None)  # never another cluster
    ray = pytest.importorskip("ray")
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized()
    # the same, should Ray have been imported before: 127.0.0.1 stays 127.0.0.1 (else Ray
    # rewrites a local address to the host's)
    enable_cluster = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    temp = tempfile.mkdtemp(prefix="mdiqkd-rt-", dir="/tmp")  # short: Ray's socket paths
    common = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 << 20,
              "temp_dir": temp}
    # Cluster writes its address to /tmp/ray/ray_current_cluster for ``ray.init("auto")``
    # elsewhere on the machine to find: not this one's
    original = ray._private.utils.write_ray_address
    ray._private.utils.write_ray_address = lambda *args, **kwargs: None
    c = Cluster()
    try:
        c.add_node(**common, num_cpus=0, include_dashboard=False)
        for _ in range(workers):
            c.add_node(**common, num_cpus=worker_cpus)
        ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
        c.wait_for_nodes()
        c.common_node_args = common  # for a test that adds nodes
        yield c
    finally:
        ray._private.utils.write_ray_address = original
        ray_constants.ENABLE_RAY_CLUSTER = enable_cluster
        ray.shutdown()
        c.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
