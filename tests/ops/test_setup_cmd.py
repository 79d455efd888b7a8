from pathlib import Path

from ops.cli import setup as setup_cmd


def test_compose_images_takes_variable_defaults(tmp_path: Path) -> None:
    compose = tmp_path / "c.yml"
    compose.write_text(
        "x: &img\n  image: ${F2_IMAGE:-f2-pipeline:0.1.0}\n"
        "services:\n  kafka:\n    image: apache/kafka:4.1.0\n  db:\n    image: 'postgres:17'\n"
    )
    assert setup_cmd.compose_images([compose]) == [
        "apache/kafka:4.1.0",
        "f2-pipeline:0.1.0",
        "postgres:17",
    ]


def fake(answers: dict[str, bool]):
    return lambda argv: answers.get(" ".join(argv[:3]), answers.get(" ".join(argv[:2]), False))


def test_no_engine_means_local_stack(monkeypatch) -> None:
    monkeypatch.setattr(setup_cmd.shutil, "which", lambda name: f"/usr/bin/{name}")
    reason = setup_cmd.compose_unusable_reason(["a:1"], fake({"docker info": False}))
    assert reason == "no Docker engine answers"


def test_engine_without_images_is_not_usable(monkeypatch) -> None:
    monkeypatch.setattr(setup_cmd.shutil, "which", lambda name: f"/usr/bin/{name}")
    runner = fake({"docker info": True, "docker compose version": True})
    reason = setup_cmd.compose_unusable_reason(["apache/kafka:4.1.0"], runner)
    assert reason is not None and "apache/kafka:4.1.0" in reason


def test_engine_with_images_and_compose_is_usable(monkeypatch) -> None:
    monkeypatch.setattr(setup_cmd.shutil, "which", lambda name: f"/usr/bin/{name}")
    runner = fake(
        {"docker info": True, "docker image inspect": True, "docker compose version": True}
    )
    assert setup_cmd.compose_unusable_reason(["x:1"], runner) is None


def test_on_this_machine_the_real_images_decide(monkeypatch) -> None:
    """The compose files' images really are parsed (every service of deploy/compose has one)."""
    images = setup_cmd.compose_images(
        [setup_cmd.compose_dir() / name for name in setup_cmd.COMPOSE_FILES]
    )
    assert "apache/kafka:4.1.0" in images and any(i.startswith("timescale/") for i in images)
