"""A multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and two worker nodes, each its own
raylet): FIND's env runners land on different nodes, and the main job runs through ``ray job submit``'s API.
Only the processes this test starts are stopped (``cluster.shutdown()``), never ``ray stop``."""

import os
import sys
import time

import pytest

pytestmark = pytest.mark.slow

PROMPTS = ["a green circle", "a red square"]


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    # Ray 2.60's token auth stays on (the job client sends the token); never switch RAY_AUTH_MODE inside a test
    # process: Ray caches it, and later ray.init calls in the same process could no longer reach their own GCS.
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True, "dashboard_host": "127.0.0.1"})
    workers = [c.add_node(num_cpus=1, resources={"sampler": 1}) for _ in range(2)]
    ctx = ray.init(address=c.address, log_to_driver=False)
    c.wait_for_nodes()
    yield c, workers, ctx
    ray.shutdown()
    c.shutdown()


def test_env_runners_spread_over_nodes_and_train(cluster):
    import ray

    from find_rl.rllib.config import find_ppo_config
    from find_rl.run.find_run import resolve
    from find_rl.core.settings import RunSettings

    c, workers, _ = cluster
    run = resolve(RunSettings(prompts=PROMPTS, samples_per_prompt=4).replace(
        num_env_runners=2, num_epochs=1, threads=1, env_runner_resources={"sampler": 1}))
    algo = find_ppo_config(run).build_algo()
    try:
        nodes = algo.env_runner_group.foreach_env_runner(lambda r: ray.get_runtime_context().get_node_id(),
                                                         local_env_runner=False)
        assert sorted(nodes) == sorted(w.node_id for w in workers)  # one runner on each worker node
        for _ in range(2):
            result = algo.train()
        f = result["learners"]["default_policy"]["find"]
        assert f["samples"] == 2 * run.batch_size  # both nodes' batches reached the learner
        rendered = algo.env_runner_group.foreach_env_runner(lambda r: r.env.unwrapped.images_rendered, local_env_runner=False)
        assert all(n >= 2 * run.batch_size for n in rendered)  # each node rendered its share in both iterations
    finally:
        algo.stop()


def test_main_job_through_job_submission(cluster, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    _, _, ctx = cluster
    client = JobSubmissionClient(f"http://{ctx.dashboard_url}")
    out = tmp_path / "job-run"
    job = client.submit_job(
        entrypoint=f"{sys.executable} -m find_rl.train --out {out} --iterations 2 --prompts 'a green circle' --samples-per-prompt 4 "
                   "--eval-samples 0 --num-env-runners 2 --env-runner-resources sampler=1",
        submission_id=f"find-rl-test-{os.getpid()}",
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
    )
    deadline = time.time() + 300
    while time.time() < deadline and not client.get_job_status(job).is_terminal():
        time.sleep(2)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
    assert "iter   2/2" in logs and (out / "noise_policy.safetensors").is_file()
