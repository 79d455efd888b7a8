"""The deploy check's rules on small inputs (each rule must be able to fail), and on our files."""

from __future__ import annotations

from pathlib import Path

from tools.deploy_check import (
    compose_problems,
    dockerfile_problems,
    env_problems,
    k8s_problems,
    pin_problems,
    text_problems,
)

ROOT = Path(__file__).resolve().parents[2]
GOOD_DOCKERFILE = """\
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE} AS build
RUN pip install --no-cache-dir x
FROM ${BASE}
USER 10001:10001
HEALTHCHECK CMD ["true"]
"""


def test_project_dockerfile_and_pins_pass() -> None:
    assert dockerfile_problems((ROOT / "deploy/docker/Dockerfile").read_text()) == []
    assert (
        pin_problems(
            (ROOT / "pyproject.toml").read_text(),
            (ROOT / "deploy/docker/constraints.txt").read_text(),
        )
        == []
    )


def test_dockerfile_rules() -> None:
    assert dockerfile_problems(GOOD_DOCKERFILE) == []
    root = GOOD_DOCKERFILE.replace("USER 10001:10001", "USER root")
    assert dockerfile_problems(root) == ["the final stage runs as root"]
    no_user = GOOD_DOCKERFILE.replace("USER 10001:10001\n", "")
    assert "the final stage sets no USER (runs as root)" in dockerfile_problems(no_user)
    latest = GOOD_DOCKERFILE.replace("python:3.11-slim-bookworm", "python")
    assert any("not pinned" in p for p in dockerfile_problems(latest))
    assert "no HEALTHCHECK" in dockerfile_problems(GOOD_DOCKERFILE.replace("HEALTHCHECK", "#"))
    single = "FROM python:3.11-slim\nUSER 1\nHEALTHCHECK CMD true\n"
    assert dockerfile_problems(single) == ["not multi-stage"]
    apt = GOOD_DOCKERFILE + "RUN apt-get update && \\\n    apt-get install -y curl\n"
    assert "apt-get install without --no-install-recommends" in dockerfile_problems(apt)


def test_pin_rules() -> None:
    pyproject = '[project]\nname = "x"\ndependencies = ["psycopg[binary]==3.3.9", "redis>=8"]\n'
    problems = pin_problems(pyproject, "psycopg==3.3.8\nredis==8.1.0\n")
    assert problems == [
        "psycopg: pyproject 3.3.9, constraints 3.3.8",
        "pyproject: 'redis>=8' is not pinned with ==",
    ]


def test_env_rules() -> None:
    assert env_problems("svc", [("F2_MQTT_PASSWORD_FILE", "/run/secrets/x")]) == []
    assert env_problems("svc", [("F2_PROMETHEUS_URL", "http://prometheus:9090")]) == []
    assert env_problems("svc", [("F2_MQTT_PASSWORD", "hunter2hunter2")]) != []
    assert env_problems("svc", [("F2_REDIS_URL", "redis://default:pw@redis:6379/0")]) != []
    assert env_problems("svc", [("F2_PARAMS_DSN", "postgresql://f2@db/f2_params")]) != []


def _compose(**overrides: dict) -> dict:
    services = {
        "postgres": {
            "image": "postgres:17.6",
            "restart": "unless-stopped",
            "healthcheck": {"test": ["CMD", "true"]},
            "deploy": {"resources": {"limits": {"memory": "1g"}}},
        },
        "decode": {
            "image": "f2-pipeline:0.1.0",
            "restart": "unless-stopped",
            "read_only": True,
            "volumes": [{"type": "volume", "target": "/var/lib/f2/recovery"}],
            "depends_on": {"postgres": {"condition": "service_healthy"}},
            "deploy": {"resources": {"limits": {"memory": "2g"}}},
        },
    }
    for name, changes in overrides.items():  # a new name: an f2 service with those changes
        base = services.get(name, {**services["decode"], "volumes": [], "depends_on": {}})
        services[name] = {**base, **changes}
    return {"services": services}


def test_compose_rules() -> None:
    assert compose_problems(_compose()) == []
    published = compose_problems(_compose(postgres={"ports": ["127.0.0.1:5432:5432"]}))
    assert published == ["postgres: database/broker port 5432 is published"]
    secret = compose_problems(_compose(decode={"environment": {"F2_PARAMS_DSN": "postgresql://x"}}))
    assert any("F2_PARAMS_DSN is an environment literal" in p for p in secret)
    started = compose_problems(
        _compose(decode={"depends_on": {"postgres": {"condition": "service_started"}}})
    )
    assert started == ["decode: depends on postgres without a health condition"]
    assert compose_problems(_compose(decode={"volumes": []})) == [
        "decode: no volume at /var/lib/f2/recovery"
    ]
    assert "decode: runs as root" in compose_problems(_compose(decode={"user": "root"}))
    owner = compose_problems(_compose(decode={"secrets": [{"source": "timeseries_owner_dsn"}]}))
    assert owner == ["decode: logs in as the database owner (timeseries_owner_dsn)"]
    grafana = {"image": "grafana/grafana:12.0.2", "secrets": ["timeseries_db_password"]}
    assert "grafana: logs in as the database owner (timeseries_db_password)" in compose_problems(
        _compose(grafana=grafana)
    )
    migrate = {"restart": "no", "secrets": [{"source": "params_owner_dsn"}]}
    assert compose_problems(_compose(migrate=migrate)) == []


def test_k8s_rules_flag_an_unsafe_pod() -> None:
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "f2:latest",
                            "env": [{"name": "F2_MQTT_PASSWORD", "value": "literal"}],
                        }
                    ]
                }
            }
        },
    }
    problems = k8s_problems([deployment])
    for expected in (
        "runAsNonRoot is not set",
        "root filesystem is writable",
        "privilege escalation allowed",
        "no memory limits",
        "is not pinned to a tag",
        "secret F2_MQTT_PASSWORD is an environment literal",
        "mounts a service account token",
        "0 StatefulSets rendered",
    ):
        assert any(expected in p for p in problems), expected


def test_text_rules(tmp_path: Path) -> None:
    (tmp_path / "mosquitto.conf").write_text("allow_anonymous true\n")
    (tmp_path / "acl").write_text("user f2-sim\n")
    problems = text_problems(tmp_path)
    assert len(problems) == 3
    assert text_problems(ROOT / "deploy") == []


def test_k8s_rule_keeps_the_owner_dsn_in_the_migrate_container() -> None:
    def pod(mounts: dict[str, list[str]]) -> dict:
        projected = {"secretName": "f2", "items": [{"key": "migrate-params-dsn", "path": "x"}]}
        return {
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {
                "template": {
                    "spec": {
                        "automountServiceAccountToken": False,
                        "volumes": [
                            {"name": "owner", "secret": projected},
                            {"name": "whole", "secret": {"secretName": "f2"}},
                            {"name": "other", "secret": {"secretName": "kafka-client"}},
                        ],
                        "initContainers": [
                            {"name": name, "volumeMounts": [{"name": v} for v in volumes]}
                            for name, volumes in mounts.items()
                        ],
                    }
                }
            },
        }

    def owner_problems(mounts: dict[str, list[str]]) -> list[str]:
        return [p for p in k8s_problems([pod(mounts)]) if "owner's secrets" in p]

    assert owner_problems({"migrate": ["owner", "whole"], "decode": ["other"]}) == []
    assert owner_problems({"decode": ["owner"]}) == [
        "Deployment/d/decode: mounts the database owner's secrets (owner)"
    ]
    assert owner_problems({"health": ["whole"]}) == [
        "Deployment/d/health: mounts the database owner's secrets (whole)"
    ]
