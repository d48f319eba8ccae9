"""cluster.yaml, the Dockerfile and the README's cluster commands agree, and Ray's launcher accepts them.

No network and no cluster: the config goes through the same preparation and schema validation that
`ray up` runs before it calls AWS (ray.autoscaler._private.util.prepare_config / validate_config), and
the per-node `docker run` options are worked out with the autoscaler's own merge code.
"""

from __future__ import annotations

import argparse
import sys
import copy
import re
import shlex
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
GPU_FAMILIES = ("g4dn", "g5", "g6", "g6e", "gr6", "p3", "p4d", "p4de", "p5", "p5e")
SHARED = "/mnt/shared"


def _load(path: Path = CLUSTER_YAML) -> dict:
    return yaml.safe_load(path.read_text())


def _prepare(config: dict) -> dict:
    """What `ray up` checks before it talks to the cloud (commands._bootstrap_config, minus AWS calls)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _pyproject_value(marker: str) -> str:
    return next(line for line in (ROOT / "pyproject.toml").read_text().splitlines() if marker in line)


VERSION = _pyproject_value("version =").split('"')[1]
RAY_PIN = _pyproject_value('"ray[').split("==")[1].strip('",')


def _workers(config: dict) -> dict:
    return {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}


def _is_gpu_type(node_type: dict) -> bool:
    return node_type.get("resources", {}).get("GPU", 0) > 0


def _docker_run(config: dict, node_type: str) -> list[str]:
    """The `docker run` Ray issues on a node of this type, split into words.

    The head is started by `ray up` with the global docker block (commands.get_or_create_head_node);
    workers by the autoscaler, which overlays the node type's own `docker` block on it
    (StandardAutoscaler._get_node_specific_docker_config). DockerCommandRunner.run_init then passes
    run_options + {head,worker}_run_options to docker_start_cmds.
    """
    from ray.autoscaler._private.autoscaler import StandardAutoscaler
    from ray.autoscaler._private.docker import docker_start_cmds
    from ray.autoscaler.tags import TAG_RAY_USER_NODE_TYPE

    as_head = node_type == config["head_node_type"]
    if as_head:
        docker = config["docker"]
    else:
        fake = SimpleNamespace(
            config=config,
            available_node_types=config["available_node_types"],
            provider=SimpleNamespace(node_tags=lambda _node_id: {TAG_RAY_USER_NODE_TYPE: node_type}),
        )
        fake._get_node_type_specific_fields = partial(StandardAutoscaler._get_node_type_specific_fields, fake)
        docker = StandardAutoscaler._get_node_specific_docker_config(fake, "node-1")
    options = docker.get("run_options", []) + docker.get(f"{'head' if as_head else 'worker'}_run_options", [])
    image = docker.get(f"{'head' if as_head else 'worker'}_image", docker["image"])
    cmd = docker_start_cmds("ubuntu", image, config["file_mounts"], docker["container_name"], options, config["cluster_name"], "/home/ray", "docker")
    return shlex.split(cmd)


def _start_commands(config: dict) -> dict[str, list[str]]:
    return {"head": config["head_start_ray_commands"], "worker": config["worker_start_ray_commands"]}


# --- (1) Ray's own validation ------------------------------------------------------------------


def test_cluster_yaml_passes_rays_own_validation():
    prepared = _prepare(_load())
    assert set(prepared["available_node_types"]) == set(_load()["available_node_types"])
    assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0


def _node_docker_run_options(c):
    c["available_node_types"]["gpu_worker"]["docker"]["run_options"] = ["--gpus all"]  # not allowed per node type


def _misspelled_key(c):
    c["initialisation_commands"] = c.pop("initialization_commands")


def _fractional_gpu(c):
    c["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5


def _unknown_head_type(c):
    c["head_node_type"] = "headnode"


def _too_many_min_workers(c):
    c["available_node_types"]["cpu_worker"]["min_workers"] = c["max_workers"] + 1


def _no_node_config(c):
    del c["available_node_types"]["cpu_worker"]["node_config"]


@pytest.mark.parametrize(
    "breakage, message",
    [
        (_node_docker_run_options, "'run_options' was unexpected"),
        (_misspelled_key, "'initialisation_commands' was unexpected"),
        (_fractional_gpu, "0.5 is not of type 'integer'"),
        (_unknown_head_type, "must be one of `available_node_types`"),
        (_too_many_min_workers, "sum of `min_workers`"),
        (_no_node_config, "'node_config' is a required property"),
    ],
)
def test_rays_validation_rejects_a_broken_copy(breakage, message):
    broken = _load()
    breakage(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=re.escape(message)):
        _prepare(broken)


def test_rays_validation_rejects_a_broken_copy_of_the_file(tmp_path):
    text = CLUSTER_YAML.read_text()
    assert text.count("head_run_options:") == 1
    broken = tmp_path / "cluster.yaml"
    broken.write_text(text.replace("head_run_options:", "head_options:"))  # a typo in the docker block
    with pytest.raises(jsonschema.ValidationError, match="head_options"):
        _prepare(_load(broken))


# --- (2) GPUs only where there are GPUs -----------------------------------------------------------


def test_only_gpu_node_types_run_their_container_with_gpus():
    config = _prepare(_load())
    types = config["available_node_types"]
    assert not _is_gpu_type(types[config["head_node_type"]])
    assert any(_is_gpu_type(t) for t in types.values()), "no GPU worker type"
    assert any(not _is_gpu_type(t) for t in _workers(config).values()), "no CPU worker type"
    for name, node_type in types.items():
        words = _docker_run(config, name)
        gpus = [words[i + 1] for i, w in enumerate(words) if w == "--gpus"]
        family = node_type["node_config"]["InstanceType"].split(".")[0]
        if _is_gpu_type(node_type):
            assert gpus == ["all"], f"{name}: {words}"
            assert family in GPU_FAMILIES, f"{name} advertises a GPU on {family}"
        else:
            assert gpus == [] and not any(w.startswith("--gpus") for w in words), f"{name}: {words}"
            assert family not in GPU_FAMILIES, f"{name} pays for an unused GPU ({family})"
    # The shared options carry no GPU flag that a CPU node would inherit.
    for key in ("run_options", "head_run_options", "worker_run_options"):
        assert not any("--gpus" in option for option in config["docker"].get(key, [])), key


def test_every_container_sees_the_shared_mount_and_scratch():
    config = _prepare(_load())
    for name in config["available_node_types"]:
        words = _docker_run(config, name)
        assert f"{SHARED}:{SHARED}" in words, name
        assert any(w.startswith(f"RAYSPINE_SCRATCH={SHARED}/") for w in words), name


# --- (3) AWS access, shared storage, authentication ----------------------------------------------


def _registry(image: str) -> tuple[str, str]:
    match = re.fullmatch(r"(?P<host>(?P<account>[^./]+)\.dkr\.ecr\.(?P<region>[^./]+)\.amazonaws\.com)/rayspine:[\w.-]+", image)
    assert match, f"not an ECR image: {image}"
    return match["host"], match["region"]


def test_every_node_type_has_an_instance_profile():
    config = _load()
    for name, node_type in config["available_node_types"].items():
        profile = node_type["node_config"].get("IamInstanceProfile")
        assert profile, f"{name} has no IamInstanceProfile"
        assert re.fullmatch(r"arn:aws:iam::(ACCOUNT|\d{12}):instance-profile/[\w+=,.@/-]+", profile.get("Arn", "")), (name, profile)
    # The placeholder is marked where it must be replaced.
    for line in CLUSTER_YAML.read_text().splitlines():
        if "instance-profile/" in line and "arn:aws:iam::ACCOUNT:" in line:
            assert "PLACEHOLDER" in line, line


def _initialization_commands(config: dict) -> list[str]:
    return config.get("initialization_commands", [])


def test_nodes_log_in_to_the_images_registry_before_pulling():
    config = _load()
    host, region = _registry(config["docker"]["image"])
    commands = _initialization_commands(config)
    login = [i for i, c in enumerate(commands) if "aws ecr get-login-password" in c]
    assert login, "no ECR login in initialization_commands"
    pipeline = [shlex.split(part) for part in commands[login[0]].split("|")]
    assert pipeline[0][:3] == ["aws", "ecr", "get-login-password"] and pipeline[0][pipeline[0].index("--region") + 1] == region
    docker = pipeline[1]
    assert docker[:2] == ["docker", "login"] and docker[docker.index("--username") + 1] == "AWS"
    assert "--password-stdin" in docker and docker[-1] == host
    # initialization_commands run on the host before Ray pulls the image; the AWS CLI is there first.
    assert any(re.search(r"\baws\b", c) and ("install" in c) for c in commands[: login[0]])
    assert config["docker"]["pull_before_run"] is True


def test_every_node_mounts_efs_with_its_client_installed_first():
    config = _load()
    commands = _initialization_commands(config)
    mounts = [i for i, c in enumerate(commands) if re.search(r"\bmount -t (nfs4|efs)\b", c)]
    assert len(mounts) == 1, commands
    mount = commands[mounts[0]]
    assert re.search(rf"\S+:/ {SHARED}\b", mount) and "mountpoint -q " + SHARED in mount  # idempotent on re-run
    client = "amazon-efs-utils" if "-t efs" in mount else "nfs-common"
    assert any(client in c and "install" in c for c in commands[: mounts[0]]), f"{client} not installed before the mount"
    if "-t nfs4" in mount:
        assert re.search(r"fs-[0-9a-zA-Z]+\.efs\.[a-z0-9-]+\.amazonaws\.com:/", mount)
        assert config["provider"]["region"] in mount, "the EFS file system must be in the cluster's region"
    # No node type replaces the global list (which would skip the login and the mount there).
    assert not any("initialization_commands" in t for t in config["available_node_types"].values())


def test_token_authentication_is_on_for_every_ray_process():
    from ray._private.authentication.authentication_token_setup import AUTH_MODE_ENV_VAR, _get_default_token_path

    config = _prepare(_load())
    mode = f"{AUTH_MODE_ENV_VAR}=token"
    for role, commands in _start_commands(config).items():
        starts = [c for c in commands if re.search(r"\bray start\b", c)]
        assert len(starts) == 1, (role, commands)
        words = shlex.split(starts[0])
        assert mode in words[: words.index("ray")], f"{role}: {starts[0]}"
    for name in config["available_node_types"]:
        assert mode in _docker_run(config, name), f"{name}: not every process in the container authenticates"
    # The token itself: the file `ray get-auth-token --generate` writes, copied to where Ray reads it.
    token_file = "~/" + str(_get_default_token_path().relative_to(Path.home()))
    assert config["file_mounts"].get(token_file) == token_file, config["file_mounts"]
    text = CLUSTER_YAML.read_text()
    assert "RAY_AUTH_TOKEN=" not in text and "RAY_AUTH_MODE=disabled" not in text, "no token or opt-out in the config"
    # The dashboard / Jobs API listens on the head's loopback only (reached over `ray dashboard`'s SSH tunnel).
    head = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=0.0.0.0" not in head


# --- (4) nodes, image, README ---------------------------------------------------------------------


def test_head_runs_no_work_and_worker_groups_grow_from_zero():
    config = _load()
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    head_start = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--head" in head_start and "--num-cpus=0" in shlex.split(head_start)
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    workers = _workers(config)
    for name, node_type in workers.items():
        assert node_type["min_workers"] == 0 and 0 < node_type["max_workers"] <= config["max_workers"], name
        assert node_type["resources"].get("CPU", 0) > 0, f"{name} advertises no CPUs"
    gpu = [t for t in workers.values() if _is_gpu_type(t)]
    cpu = [t for t in workers.values() if not _is_gpu_type(t)]
    assert gpu and cpu and all(t["resources"]["GPU"] >= 1 for t in gpu)


def test_cluster_yaml_names_the_image_the_dockerfile_builds():
    config = _load()
    assert config["docker"]["image"].endswith(f"/rayspine:{VERSION}")
    assert not any(k in config["docker"] for k in ("head_image", "worker_image")), "one image for every node"
    assert not any("worker_image" in t.get("docker", {}) for t in config["available_node_types"].values())
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"rayproject/ray:{RAY_PIN}-" in dockerfile and f"rayspine:{VERSION}" in dockerfile
    assert re.search(r"rayproject/ray:[\w.]+-py\d+-gpu", dockerfile), "GPU base image"
    # What the image copies in must not be excluded from the build context.
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")}
    for copy_line in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", dockerfile, flags=re.M):
        for source in copy_line.split():
            assert (ROOT / source).exists() and source not in ignored, source
    assert config["head_node_type"] in config["available_node_types"]


def _readme_cluster_commands() -> list[list[str]]:
    """The README's `On a GPU cluster` shell block, one word list per simple command."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## On a GPU cluster", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block, "no bash block in the README's cluster section"
    commands = []
    for line in block[1].splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        command: list[str] = []
        for word in lexer:
            if word in ("|", "&&", "&", ";", "||"):
                commands.append(command)
                command = []
            else:
                command.append(word)
        commands.append(command)
    return [c for c in commands if c]


def _job_parser(script: Path) -> argparse.ArgumentParser:
    """The job's own argparse parser (``arguments()``), imported the way ``python jobs/x.py`` finds it."""
    import importlib.util

    sys.path.insert(0, str(script.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"job_{script.stem}", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(script.parent))
    parser = module.arguments()
    parser.exit_on_error = False
    return parser


def test_readme_cluster_commands_build_push_and_run_what_exists():
    config = _load()
    commands = _readme_cluster_commands()
    heads = [c[:2] for c in commands]
    assert ["docker", "build"] in heads and ["ray", "up"] in heads and ["ray", "down"] in heads
    build = next(c for c in commands if c[:2] == ["docker", "build"])
    assert build[build.index("-t") + 1] == f"rayspine:{VERSION}" and build[-1] == "."
    pushed = [c[2] for c in commands if c[:2] == ["docker", "push"]]
    assert pushed == [config["docker"]["image"]], "the README pushes the image cluster.yaml pulls"
    for command in commands:
        if command[:1] == ["ray"] and command[1] in ("up", "down", "dashboard", "attach", "exec"):
            assert "cluster.yaml" in command, command
    jobs = [c for c in commands if c[:3] == ["ray", "job", "submit"]]
    assert jobs, "no job submitted"
    for job in jobs:
        entry = job[job.index("--") + 1 :]
        assert entry[0] == "python" and entry[1].startswith("jobs/"), job
        script = ROOT / entry[1]
        assert script.is_file(), f"{entry[1]} does not exist"
        _job_parser(script).parse_args(entry[2:])  # the README's arguments are ones the job takes
    assert {j[j.index("--") + 2] for j in jobs} == {f"jobs/{p.name}" for p in (ROOT / "jobs").glob("*.py") if p.name != "common.py"}, "every job shown"


def test_readme_tells_users_how_to_log_in_and_pass_the_token():
    config = _load()
    commands = _readme_cluster_commands()
    index = lambda pred: next((i for i, c in enumerate(commands) if pred(c)), None)  # noqa: E731
    host, _ = _registry(config["docker"]["image"])
    login = index(lambda c: c[:2] == ["docker", "login"] and c[-1] == host)
    push = index(lambda c: c[:2] == ["docker", "push"])
    assert login is not None and login < push, "log in to ECR before pushing"
    token = index(lambda c: c[:3] == ["ray", "get-auth-token", "--generate"])
    up = index(lambda c: c[:2] == ["ray", "up"])
    assert token is not None and token < up, "generate the token before ray up (file_mounts copies it)"
    mode = index(lambda c: c[:1] == ["export"] and "RAY_AUTH_MODE=token" in c)
    submit = index(lambda c: c[:3] == ["ray", "job", "submit"])
    assert mode is not None and mode < submit, "ray job submit sends the token only with RAY_AUTH_MODE=token"
