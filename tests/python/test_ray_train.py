"""Ray Train: a 2-worker TorchTrainer whose process group is ringpress (ringpress.ray).

The test starts a local Ray cluster (2 CPUs, no dashboard) and stops it on every exit path. Each
worker trains with DDP and ringpress's int8 hook (integration_train.train) and writes its record to
a file; the test checks both. Ray is not a ringpress dependency: scripts/setup_integrations.sh
installs it for `make test`, and the test skips, saying so, only when it could not.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

WHY = "ray[train] is not installed (scripts/setup_integrations.sh installs it; see its output)"
ray = pytest.importorskip("ray", reason=WHY)
pytest.importorskip("ray.train.torch", reason=WHY)

import integration_train  # noqa: E402
from ray import cloudpickle  # noqa: E402


@pytest.fixture
def cluster(monkeypatch):
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    monkeypatch.delenv("RINGPRESS_JOB_KEY", raising=False)
    monkeypatch.delenv("RINGPRESS_JOB_KEY_FILE", raising=False)
    cloudpickle.register_pickle_by_value(integration_train)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(integration_train)


def test_torch_trainer_runs_on_a_ringpress_group(cluster, tmp_path):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ringpress.ray import RingpressConfig

    out = tmp_path / "records"
    out.mkdir()
    trainer = TorchTrainer(
        integration_train.ray_worker,
        train_loop_config={"out": str(out)},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
        torch_config=RingpressConfig(timeout_s=120),
        run_config=RunConfig(storage_path=str(tmp_path / "ray"), name="ringpress"),
    )
    result = trainer.fit()
    assert result.error is None, result.error
    records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for record in records:
        integration_train.check(record, 2)
    # RingpressConfig drew one key for the job: both workers hold it (compared by digest)
    assert records[0]["key_digests"] == records[1]["key_digests"]
