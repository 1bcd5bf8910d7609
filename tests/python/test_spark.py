"""Spark: ringpress ranks started by Spark's TorchDistributor as barrier-mode tasks.

The test starts a local Spark session (master local[2], on 127.0.0.1, no UI) and stops it on
every exit path. TorchDistributor(local_mode=False) runs each rank as a Spark barrier task that
starts torchrun for one process; the ranks rendezvous through torchrun's store and form a
"ringpress" process group, train with DDP and the int8 hook (integration_train.train), and rank 0's
record comes back to the driver. The job key travels with the pickled task, not through the
store. pyspark and a Java runtime are not ringpress dependencies: scripts/setup_integrations.sh
installs them for `make test`, and the test skips, saying so, only when it could not.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys

import pytest

pytestmark = pytest.mark.integration

pytest.importorskip(
    "pyspark.ml.torch.distributor",
    reason="pyspark is not installed (scripts/setup_integrations.sh installs it; see its output)",
)
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip(
        "no Java runtime for Spark (scripts/setup_integrations.sh installs default-jre-headless "
        "as root)",
        allow_module_level=True,
    )

import integration_train  # noqa: E402
from pyspark import cloudpickle  # noqa: E402


@pytest.fixture
def spark(monkeypatch):
    from pyspark.sql import SparkSession

    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    monkeypatch.setenv("PYSPARK_DRIVER_PYTHON", sys.executable)
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    monkeypatch.delenv("RINGPRESS_JOB_KEY", raising=False)
    monkeypatch.delenv("RINGPRESS_JOB_KEY_FILE", raising=False)
    cloudpickle.register_pickle_by_value(integration_train)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("ringpress-test")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    try:
        yield session
    finally:
        session.stop()
        cloudpickle.unregister_pickle_by_value(integration_train)


def test_torch_distributor_ranks_form_a_ringpress_group(spark):
    from pyspark.ml.torch.distributor import TorchDistributor

    record = TorchDistributor(num_processes=2, local_mode=False, use_gpu=False).run(
        integration_train.join_and_train, secrets.token_hex(32)
    )
    assert record["rank"] == 0  # TorchDistributor returns rank 0's result
    integration_train.check(record, 2)
