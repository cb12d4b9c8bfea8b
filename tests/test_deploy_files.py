"""No Docker engine runs here: check what can be checked of docker-compose.yml and Dockerfile."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest
import yaml

from search.config import load_settings
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DSS_SERVICES = ("search", "consumer")


def test_compose_parses_with_the_expected_services() -> None:
    assert {"kafka", "redis", "postgres", "search", "consumer"} <= set(COMPOSE["services"])
    assert COMPOSE["services"]["kafka"]["image"].startswith("apache/kafka")
    for name, service in COMPOSE["services"].items():
        assert "healthcheck" in service, name
    assert (
        "kafka-data" in COMPOSE["volumes"]
        and "kafka-data:/var/lib/kafka/data" in COMPOSE["services"]["kafka"]["volumes"]
    )


@pytest.mark.parametrize("service", DSS_SERVICES)
def test_service_environment_names_real_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = COMPOSE["services"][service]["environment"]
    assert env and all(name.startswith("DSS_") for name in env)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    settings = load_settings()  # unknown names or bad values would raise ConfigError here
    assert settings.store.url == env["DSS_STORE__URL"]
    assert settings.kafka.bootstrap_servers == env["DSS_KAFKA__BOOTSTRAP_SERVERS"]
    assert str(settings.data_dir) == env["DSS_DATA_DIR"]
    assert settings.cache.redis_url == env["DSS_CACHE__REDIS_URL"]


def _dss_commands() -> list[list[str]]:
    commands = [COMPOSE["services"][s]["command"] for s in DSS_SERVICES]
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("CMD "):
            commands.append(yaml.safe_load(line[4:]))
    return commands


@pytest.mark.parametrize("command", _dss_commands(), ids=lambda c: " ".join(c))
def test_commands_exist_in_the_project(command: list[str]) -> None:
    assert command[0] == "dss"
    # The subcommand and every option it is given must be accepted by the real CLI.
    options = [part for part in command[2:] if part.startswith("--")]
    help_text = subprocess.run(
        [sys.executable, "-m", "api", command[1], "--help"], capture_output=True, text=True, timeout=120
    )
    assert help_text.returncode == 0, help_text.stderr
    for option in options:
        assert option in help_text.stdout, f"{shlex.join(command)}: {option} unknown"


def test_dockerfile_copies_what_exists() -> None:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
