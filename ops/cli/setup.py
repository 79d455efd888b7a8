"""``f2 setup [--secure]`` (``make full-setup`` / ``make secure-setup``): the whole system, up.

Uses the compose stack (``deploy/compose``: Apache Kafka, TimescaleDB, monitoring) when a Docker
engine answers here and already has every image the compose files name (no image can be pulled
on an offline machine, so an engine without the images, or the docker client alone, does not
count). Otherwise it uses the local stack: ``f2 stack up --flows --monitoring`` (with
``--secure``: ``f2 security setup`` first). It says which one it chose and why.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from schemas.settings import Config, project_root

COMPOSE_FILES = ("docker-compose.yml", "monitoring.yml")
_IMAGE = re.compile(r"^\s*image:\s*['\"]?([^'\"\s#]+)", re.MULTILINE)
_DEFAULTED = re.compile(r"\$\{[A-Z0-9_]+:-([^}]+)\}")

Runner = Callable[[list[str]], bool]


def register(subparsers: argparse._SubParsersAction) -> None:
    setup = subparsers.add_parser(
        "setup", help="bring up everything (compose if usable, else local)"
    )
    setup.add_argument("--secure", action="store_true", help="secrets, TLS and certificates first")
    setup.set_defaults(func=run)


def compose_dir() -> Path:
    root = project_root()
    if root is None:
        raise SystemExit("f2 setup: run it from the source checkout (deploy/compose is needed)")
    return root / "deploy" / "compose"


def compose_images(files: list[Path]) -> list[str]:
    """Images the compose files name (``${VAR:-default}`` taken at its default)."""
    images: set[str] = set()
    for path in files:
        for match in _IMAGE.finditer(path.read_text()):
            images.add(_DEFAULTED.sub(r"\1", match.group(1)))
    return sorted(images)


def _succeeds(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def compose_command(runner: Runner = _succeeds) -> list[str] | None:
    """``docker compose`` or ``docker-compose``, whichever works here."""
    if shutil.which("docker") and runner(["docker", "compose", "version"]):
        return ["docker", "compose"]
    if shutil.which("docker-compose") and runner(["docker-compose", "version"]):
        return ["docker-compose"]
    return None


def compose_unusable_reason(images: list[str], runner: Runner = _succeeds) -> str | None:
    """Why compose cannot run the stack here, or None when it can."""
    if shutil.which("docker") is None:
        return "no docker client"
    if not runner(["docker", "info"]):
        return "no Docker engine answers"
    missing = [image for image in images if not runner(["docker", "image", "inspect", image])]
    if missing:
        return f"the engine lacks images (cannot pull here): {', '.join(missing)}"
    if compose_command(runner) is None:
        return "no docker compose plugin or docker-compose"
    return None


def _f2(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "ops.cli", *args])


def run(args: argparse.Namespace, config: Config) -> int:
    folder = compose_dir()
    files = [folder / name for name in COMPOSE_FILES]
    reason = compose_unusable_reason(compose_images(files))
    if reason is None:
        print("f2 setup: using the compose stack (deploy/compose)", file=sys.stderr)
        if args.secure and not (folder / "secrets").is_dir():
            print(
                "f2 setup: create the secrets first (docs/DEPLOYMENT.md, 'Secrets')",
                file=sys.stderr,
            )
            return 2
        argv = [*compose_command()] + [arg for f in files for arg in ("-f", str(f))]
        return subprocess.call([*argv, "up", "-d", "--wait"], cwd=folder)
    print(f"f2 setup: using the local stack ({reason})", file=sys.stderr)
    if args.secure and (_f2("stack", "up") != 0 or _f2("security", "setup") != 0):
        return 1
    return _f2("stack", "up", "--flows", "--monitoring")
