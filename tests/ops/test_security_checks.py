"""The file- and text-based security checks (no services needed): each can fail."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from ops.security.checks import (
    deploy_files_safe,
    listening_addresses,
    loopback_only,
    secret_file_problems,
    secrets_private,
    untracked_problems,
    weak_secrets,
)
from ops.security.device_identity import device_acls
from ops.stack.services import MOSQUITTO_ACL, MOSQUITTO_CONF, operator_store

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
   0: 0100007F:6338 00000000:0000 0A 00000000:00000000 00:00000000 00000000   103
   1: 00000000:6689 00000000:0000 0A 00000000:00000000 00:00000000 00000000   103
   2: 0100007F:C350 0100007F:6338 01 00000000:00000000 00:00000000 00000000   103
"""
TCP6 = """  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:6338 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000000000000:18EB 00000000000000000000000000000000:0000 0A
"""


def test_listening_addresses_from_proc_tables() -> None:
    assert listening_addresses(0x6338, [TCP, TCP6]) == [
        "127.0.0.1",
        "0000:0000:0000:0000:0000:0000:0000:0001",
    ]
    assert listening_addresses(0x6689, [TCP]) == ["0.0.0.0"]
    assert listening_addresses(0xC350, [TCP]) == []  # an established connection, not a listener


def test_loopback_check_passes_and_fails() -> None:
    assert loopback_only({"postgres": 0x6338}, [TCP, TCP6]).ok
    assert not loopback_only({"redis": 0x6689}, [TCP]).ok
    assert not loopback_only({"redis": 0x18EB}, [TCP6]).ok
    assert not loopback_only({"redis": 1}, [TCP]).ok  # nothing listening


def test_world_readable_secret_fails(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    (folder / "db-password").write_text("x")
    (folder / "db-password").chmod(0o600)
    (folder / "ca.crt").write_text("public")
    (folder / "ca.crt").chmod(0o644)
    assert secret_file_problems([folder]) == []
    (folder / "db-password").chmod(0o640)
    assert secret_file_problems([folder]) == [f"{folder / 'db-password'} is 0640"]
    folder.chmod(0o755)
    assert len(secret_file_problems([folder])) == 2


def test_secret_inside_the_repo_must_be_git_ignored() -> None:
    root = Path(__file__).resolve().parents[2]
    assert untracked_problems([root / ".stack", root / "secrets"]) == []
    assert untracked_problems([root / "pyproject.toml"]) != []
    assert not secrets_private([root / "pyproject.toml"]).ok


def test_weak_secrets() -> None:
    strong = "Zq8v" * 6
    assert weak_secrets({"a": strong}) == []
    assert weak_secrets({"a": "", "b": "postgres", "c": "short", "d": "Password"}) == [
        "a",
        "b",
        "c",
        "d",
    ]


COMPOSE = """
services:
  timescaledb:
    image: timescale/timescaledb:2.19.3-pg17
    ports:
      - "{db_ports}"
  redis:
    image: redis:7
    ports: ["127.0.0.1:6379:6379"]
  mosquitto:
    image: eclipse-mosquitto:2
    ports:
      - "8883:8883"
"""


def test_deploy_files(tmp_path: Path) -> None:
    assert deploy_files_safe(tmp_path / "missing").detail == "no deploy files yet"
    (tmp_path / "compose.yml").write_text(COMPOSE.format(db_ports="127.0.0.1:5432:5432"))
    assert deploy_files_safe(tmp_path).ok
    (tmp_path / "compose.yml").write_text(COMPOSE.format(db_ports="5432:5432"))
    result = deploy_files_safe(tmp_path)
    assert not result.ok and "timescaledb publishes '5432:5432'" in result.detail


def test_deploy_files_must_not_carry_test_user_anonymous_or_defaults(tmp_path: Path) -> None:
    conf = tmp_path / "mosquitto.conf"
    for text in (
        "allow_anonymous true\n",
        "user f2-sim\ntopic write stat/#\n",
    ):
        conf.write_text(text)
        assert not deploy_files_safe(tmp_path).ok, text
    conf.unlink()
    env = tmp_path / "stack.env"
    env.write_text("POSTGRES_PASSWORD=postgres\n")
    assert not deploy_files_safe(tmp_path).ok
    env.write_text("POSTGRES_PASSWORD_FILE=/run/secrets/db-password\n")
    assert deploy_files_safe(tmp_path).ok


def test_generated_broker_config_is_locked_down() -> None:
    assert "allow_anonymous false" in MOSQUITTO_CONF
    assert "require_certificate true" in MOSQUITTO_CONF
    assert "use_identity_as_username true" in MOSQUITTO_CONF
    assert "use_username_as_clientid true" in MOSQUITTO_CONF  # certificate devices
    assert "crlfile" in MOSQUITTO_CONF and "plugin_opt_config_file" in MOSQUITTO_CONF
    assert MOSQUITTO_CONF.count("127.0.0.1") == 3
    assert "cmnd" not in MOSQUITTO_ACL.replace("topic read cmnd/#", "")  # test rig reads only
    assert "readwrite" not in MOSQUITTO_ACL
    assert "f2-operator" not in MOSQUITTO_ACL  # the operator lives in the plugin


def test_device_rights_are_its_own_topics_only() -> None:
    acls = {(a["acltype"], a["topic"], a["allow"]) for a in device_acls("e4fd45f654be")}
    assert acls == {
        ("publishClientSend", "stat/f2-e4fd45f654be/#", True),
        ("publishClientSend", "tele/f2-e4fd45f654be/#", True),
        ("subscribePattern", "cmnd/f2-e4fd45f654be/#", True),
        ("subscribePattern", "#", False),
        ("publishClientReceive", "cmnd/f2-e4fd45f654be/#", True),
        ("publishClientReceive", "#", False),
    }


def test_the_plugin_store_holds_only_the_operator_with_admin_and_command_rights() -> None:
    store = operator_store("a-long-operator-password")
    (client,) = store["clients"]
    assert client["username"] == "f2-operator" and "a-long" not in json.dumps(store)
    assert {r["rolename"] for r in client["roles"]} == {"admin", "f2-operator-commands"}
    topics = {a["topic"] for role in store["roles"] for a in role["acls"]}
    assert "#" not in topics  # the operator does not read device traffic
    salt = base64.b64decode(client["salt"])
    digest = hashlib.pbkdf2_hmac("sha512", b"a-long-operator-password", salt, client["iterations"])
    assert base64.b64encode(digest).decode() == client["password"]
