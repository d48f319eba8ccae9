"""A real two-node Ray cluster on this machine, for the cluster tests.

Both nodes are started with ``ray start`` in process sessions of their own, with their own temp
folder and their own auth token (Ray >= 2.59 turns token authentication on, and a second node is
refused without the head's token). Each node has one ``seg_slot``: a pool whose actors ask for one
(``pipeline.seg_actor_resources``) puts exactly one actor on each node, whatever else the machine
runs. Stopping kills exactly those sessions: never ``ray stop``, which would end every Ray process
on the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalCluster:
    def __init__(self, root: Path, head_cpus: int = 2, worker_cpus: int = 2):
        self.root = Path(root)
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus
        self.sessions: list[int] = []
        token = self.root / "auth_token"
        self.root.mkdir(parents=True, exist_ok=True)
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        # Ray's socket paths must stay under 107 bytes: a short folder of its own, not pytest's tmp_path.
        self.ray_temp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.gcs_address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"

    def _ray_start(self, *args: str) -> None:
        proc = subprocess.Popen([RAY, "start", *args], env=self.env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.sessions.append(proc.pid)  # the session id of everything it starts
        output, _ = proc.communicate(timeout=180)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{output[-3000:]}")

    def _own_ports(self) -> list[str]:
        """Ports of a node's agents, chosen free, so that a Ray already running on this machine (a test
        session's local Ray, say) and the two nodes never fight over Ray's fixed defaults."""
        return [
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
        ]

    def start(self) -> LocalCluster:
        common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        self._ray_start(
            "--head",
            f"--port={self.gcs_port}",
            f"--num-cpus={self.head_cpus}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--temp-dir={self.ray_temp}",
            '--resources={"head_node": 1, "seg_slot": 1}',
            f"--ray-client-server-port={free_port()}",
            *self._own_ports(),
            *common,
        )
        self._ray_start(f"--address={self.gcs_address}", f"--num-cpus={self.worker_cpus}", '--resources={"worker_node": 1, "seg_slot": 1}', *self._own_ports(), *common)
        self.wait_for_nodes(2)
        return self

    def wait_for_nodes(self, count: int, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run([RAY, "status", f"--address={self.gcs_address}"], env=self.env, capture_output=True, text=True)
            if out.stdout.count("node_") >= count:
                return
            time.sleep(1)
        raise TimeoutError(f"{count} Ray nodes did not come up:\n{out.stdout}\n{out.stderr}")

    def job_runtime_env(self, working_dir: Path) -> dict:
        return {"working_dir": str(working_dir), "excludes": [".venv", ".git", "demo-out", ".hypothesis", ".notes"]}

    def submit(self, entrypoint: str, working_dir: Path, timeout: float = 600) -> tuple[str, str]:
        """Submit a job through the Ray Jobs API and wait for it; returns (status, logs)."""
        from ray.job_submission import JobStatus, JobSubmissionClient

        token = Path(self.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
        client = JobSubmissionClient(self.dashboard_url, headers={"Authorization": f"Bearer {token}"})
        runtime_env = self.job_runtime_env(working_dir)
        if "working_dir" not in runtime_env:
            entrypoint = f"cd {working_dir} && {entrypoint}"
        for attempt in range(30):  # the head's job agent may still be starting ("No available agent")
            try:
                job = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
                break
            except RuntimeError as err:
                if "No available agent" not in str(err) or attempt == 29:
                    raise
                time.sleep(2)
        deadline = time.time() + timeout
        while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            if time.time() > deadline:
                client.stop_job(job)
                break
            time.sleep(2)
        info = client.get_job_info(job)
        return str(info.status), client.get_job_logs(job) + (f"\n[job message] {info.message}" if info.message else "")

    def stop(self) -> None:
        """Kill every process of the sessions this cluster started, and nothing else."""
        for sid in self.sessions:
            for pid in _pids_in_session(sid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.ray_temp, ignore_errors=True)

    def alive(self, wait: float = 10) -> bool:
        """Whether any process of this cluster's sessions is still running (zombies count as gone)."""
        deadline = time.time() + wait
        while time.time() < deadline:
            if not any(_running(pid) for sid in self.sessions for pid in _pids_in_session(sid)):
                return False
            time.sleep(0.5)
        return True

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()  # a node that failed to come up must not leave the other one running
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _pids_in_session(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


class FakeAutoscalingCluster(LocalCluster):
    """A head with no CPUs and Ray's fake multi-node autoscaler (provider ``fake_multinode``).

    Worker nodes exist only once the autoscaler launches them for a resource request, as on a cloud
    cluster at ``min_workers: 0``; each is a set of Ray processes on this machine advertising the
    resources of its node type (``GPU: 1`` without a real GPU). The monitor starts them as children
    of the head's process session, so ``stop`` ends them with the head, and nothing else.
    """

    def __init__(self, root: Path, worker_types: dict, idle_timeout_minutes: float = 5.0):
        super().__init__(root, head_cpus=0, worker_cpus=0)
        self.worker_types = worker_types
        self.idle_timeout_minutes = idle_timeout_minutes
        self.env.update({"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})

    def autoscaling_config(self) -> dict:
        return {
            "cluster_name": f"fake-{self.gcs_port}",
            "max_workers": sum(t["max_workers"] for t in self.worker_types.values()),
            "provider": {
                "type": "fake_multinode",
                "gcs_address": self.gcs_address,
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
            },
            "auth": {"ssh_user": "ray"},
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                **{name: {"node_config": {}, **spec} for name, spec in self.worker_types.items()},
            },
            "head_node_type": "ray.head.default",
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": self.idle_timeout_minutes,
            **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands")},
            **{key: [] for key in ("head_start_ray_commands", "worker_start_ray_commands", "cluster_synced_files", "rsync_exclude", "rsync_filter")},
            "file_mounts": {},
            "file_mounts_sync_continuously": False,
            "docker": {},
        }

    def start(self) -> FakeAutoscalingCluster:
        import json

        config = self.root / "autoscaling.json"
        config.write_text(json.dumps(self.autoscaling_config()))
        self._ray_start(
            "--head",
            f"--port={self.gcs_port}",
            "--num-cpus=0",
            f"--autoscaling-config={config}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--temp-dir={self.ray_temp}",
            f"--ray-client-server-port={free_port()}",
            *self._own_ports(),
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
        )
        self.wait_for_nodes(1)
        return self

    def job_runtime_env(self, working_dir: Path) -> dict:
        """The code by path, not as an uploaded package: the fake nodes share one session folder, and
        one node's runtime-env agent deleted a package another node's job was running from (seen here
        once in four runs: the sweep's driver lost its working directory)."""
        return {"env_vars": {"PYTHONPATH": str(working_dir)}}

    def wait_for_nodes(self, count: int, timeout: float = 60) -> None:
        """``ray status`` names a fake cluster's nodes by type ("1 ray.head.default"), not by id."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run([RAY, "status", f"--address={self.gcs_address}"], env=self.env, capture_output=True, text=True)
            active = out.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
            if sum(int(line.split()[0]) for line in active.splitlines() if line.strip()[:1].isdigit()) >= count:
                return
            time.sleep(1)
        raise TimeoutError(f"{count} Ray nodes did not come up:\n{out.stdout}\n{out.stderr}")
