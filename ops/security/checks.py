"""The checks behind ``f2 security check``: each returns a :class:`CheckResult`, never raises.

Live checks talk to the running broker, databases and Redis with deliberately wrong or missing
credentials; file checks read modes and deploy files. Each takes what it inspects as arguments
(ports, paths, credentials), so a test can point it at a weakened setup and watch it fail.
"""

from __future__ import annotations

import re
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from ops.security.mqtt_probe import NOT_AUTHORIZED, Probe, ProbeError, connect
from ops.security.secret_files import new_password
from ops.security.tls import CertFiles

MIN_SECRET_CHARS = 16
RELOAD_WAIT_S = 5.0
"""How long a revoked certificate may still connect: the broker reloads on SIGHUP in its loop."""
WEAK_PASSWORDS = frozenset(
    {
        "",
        "admin",
        "changeme",
        "default",
        "f2",
        "guest",
        "mosquitto",
        "pass",
        "password",
        "postgres",
        "public",
        "redis",
        "root",
        "secret",
        "test",
        "123456",
    }
)
PUBLIC_SUFFIXES = (".crt", ".srl", ".pem.pub", "crl.pem")  # a revocation list is published
DATABASE_WORDS = ("postgres", "timescale", "redis", "pgsql")
DEPLOY_SUFFIXES = (".yml", ".yaml", ".conf", ".env", ".json", ".toml", ".acl", ".tpl", ".txt")


class CheckResult(msgspec.Struct, frozen=True):
    """One line of the report."""

    name: str
    ok: bool
    detail: str


class Login(msgspec.Struct, frozen=True):
    """MQTT credentials."""

    username: str
    password: str


def guarded(name: str, check: Callable[[], CheckResult]) -> CheckResult:
    """Run ``check``; an unexpected error is a failed check, never a crash of the report."""
    try:
        return check()
    except Exception as exc:
        return CheckResult(name, False, f"could not run: {type(exc).__name__}: {exc}")


def _refused(host: str, port: int, login: Login | None, ca_file: str | None = None) -> bool:
    probe, code = connect(
        host, port, login and login.username, login and login.password, None, ca_file
    )
    if probe is not None:
        probe.close()
    return code != 0


def anonymous_rejected(host: str, ports: dict[int, str | None]) -> CheckResult:
    """No session without credentials on any listener (``ports``: port -> CA file for TLS)."""
    accepted = [str(port) for port, ca in ports.items() if not _refused(host, port, None, ca)]
    if accepted:
        return CheckResult("anonymous rejected", False, f"anonymous login accepted on {accepted}")
    return CheckResult("anonymous rejected", True, f"refused on ports {sorted(ports)}")


def wrong_password_rejected(host: str, port: int, usernames: Iterable[str]) -> CheckResult:
    """A known username with a wrong (random) password is refused."""
    names = list(usernames)
    accepted = [name for name in names if not _refused(host, port, Login(name, new_password()))]
    if accepted:
        return CheckResult("wrong password rejected", False, f"accepted for {accepted}")
    return CheckResult("wrong password rejected", True, f"refused for {', '.join(names)}")


def device_session(host: str, port: int, device: Login) -> tuple[Probe | None, int]:
    """A device's session: its client id is its MAC (the broker refuses any other)."""
    return connect(host, port, device.username, device.password, client_id=device.username)


def device_topics(mac: str, kind: str = "tele") -> str:
    component = "sensor-mode/J1/sensor-1" if kind == "tele" else "access-control-mode/J1/strike-1"
    return f"{kind}/f2-{mac}/{component}"


def device_cannot_speak_for_another(
    host: str, port: int, device: Login, other: Login, reader: Login
) -> CheckResult:
    """``device`` is refused (PUBACK 135) on ``other``'s stat/tele topics; nothing gets through.

    Controls: its own publish is accepted and seen by ``reader`` (the pipeline user).
    """
    name = "device cannot publish for another"
    watcher, code = connect(host, port, reader.username, reader.password)
    if watcher is None:
        return CheckResult(name, False, f"pipeline user refused (reason {code})")
    speaker, code = device_session(host, port, device)
    try:
        if speaker is None:
            return CheckResult(name, False, f"probe device refused (reason {code})")
        for kind in ("stat", "tele"):
            watcher.subscribe(f"{kind}/f2-{other.username}/#")
            watcher.subscribe(f"{kind}/f2-{device.username}/#")
        codes = {
            topic: speaker.publish(topic)
            for topic in (device_topics(other.username), device_topics(other.username, "stat"))
        }
        own = speaker.publish(device_topics(device.username))
        seen = [topic for topic, _ in watcher.wait_messages(1, 3.0)]
        leaked = [t for t in seen if t.split("/")[1] == f"f2-{other.username}"]
        allowed = [topic for topic, code in codes.items() if code != NOT_AUTHORIZED]
        if allowed or leaked:
            return CheckResult(name, False, f"accepted: {allowed}; delivered: {leaked}")
        if own >= 128 or device_topics(device.username) not in seen:
            return CheckResult(name, False, f"control failed: own publish got reason {own}")
        return CheckResult(name, True, "other device's topics: PUBACK 135 (not authorized)")
    finally:
        watcher.close()
        if speaker is not None:
            speaker.close()


def device_cannot_read_others_commands(
    host: str, port: int, device: Login, other: Login, operator: Login
) -> CheckResult:
    """``device`` subscribed to ``cmnd/#`` and to ``other``'s commands receives none of them.

    Control: ``other`` receives the command the operator sent it.
    """
    name = "device cannot read others' commands"
    listener, code = device_session(host, port, device)
    owner, code2 = device_session(host, port, other)
    sender, code3 = connect(host, port, operator.username, operator.password)
    clients = [c for c in (listener, owner, sender) if c is not None]
    try:
        if listener is None or owner is None or sender is None:
            return CheckResult(name, False, f"probe login refused (reasons {code} {code2} {code3})")
        listener.subscribe("cmnd/#")
        listener.subscribe(f"cmnd/f2-{other.username}/#")
        owner.subscribe(f"cmnd/f2-{other.username}/#")
        sent = sender.publish(f"cmnd/f2-{other.username}/alarm-mode/J1/siren-1", b"1")
        delivered = owner.wait_messages(1, 3.0)
        overheard = listener.wait_messages(1, 1.0)
        if overheard:
            return CheckResult(name, False, f"overheard {[t for t, _ in overheard]}")
        if sent >= 128 or not delivered:
            return CheckResult(name, False, f"control failed: operator publish reason {sent}")
        return CheckResult(name, True, "commands reach only their own device")
    finally:
        for client in clients:
            client.close()


def client_ids_bound(
    host: str,
    port: int,
    owner: Login,
    device: Login,
    mtls_port: int | None = None,
    certs: CertFiles | None = None,
    ca_file: str | None = None,
) -> CheckResult:
    """A device that sends another identity's client id can neither take over nor end that
    identity's session: with its password it is refused, with its certificate (mTLS) its client
    id is forced to its own. Control: the session keeps its queued message throughout."""
    name = "client ids bound to identities"
    session = f"f2-idcheck-{new_password()[:10]}"
    keeper, code = connect(
        host, port, owner.username, owner.password, client_id=session, session_expiry_s=120
    )
    if keeper is None:
        return CheckResult(name, False, f"session owner refused (reason {code})")
    keeper.subscribe(f"tele/f2-{device.username}/#")
    keeper.close()
    try:
        speaker, code = device_session(host, port, device)
        if speaker is None:
            return CheckResult(name, False, f"probe device refused with its own id ({code})")
        speaker.publish(device_topics(device.username), b"queued")
        speaker.close()
        intruder, code = connect(host, port, device.username, device.password, client_id=session)
        if intruder is not None:
            intruder.close()
            return CheckResult(name, False, f"a device logged in as client id {session}")
        if certs is not None and mtls_port is not None:
            try:
                forced, _ = connect(host, mtls_port, None, None, certs, client_id=session)
            except ProbeError:
                forced = None
            if forced is not None:
                forced.close()
        back, code = connect(
            host, port, owner.username, owner.password, client_id=session, session_expiry_s=120
        )
        if back is None:
            return CheckResult(name, False, f"session owner refused afterwards (reason {code})")
        got = back.wait_messages(1, 3.0)
        back.close()
        if not back.session_present or not got:
            return CheckResult(
                name, False, f"session taken over: present={back.session_present}, got {got}"
            )
    finally:
        ended, _ = connect(host, port, owner.username, owner.password, client_id=session)
        if ended is not None:
            ended.close()
    how = "refused with its password" + (", forced to its CN with its certificate" if certs else "")
    return CheckResult(name, True, f"a device sending another's client id is {how}")


def password_revocation_holds(
    host: str, port: int, device: Login, revoke: Callable[[], None]
) -> CheckResult:
    """Revoking a device closes its session at once and its password no longer logs in."""
    name = "revocation holds (password)"
    probe, code = device_session(host, port, device)
    if probe is None:
        return CheckResult(name, False, f"probe device refused before revocation ({code})")
    try:
        revoke()
        closed = probe.wait_disconnect(5.0)
    finally:
        probe.close()
    again, code = device_session(host, port, device)
    if again is not None:
        again.close()
        return CheckResult(name, False, "the revoked password still logs in")
    if not closed:
        return CheckResult(name, False, "the revoked device's session stayed open")
    return CheckResult(name, True, f"session closed, login refused (reason {code})")


def certificate_refused(host: str, mtls_port: int, certs: CertFiles) -> bool:
    try:
        probe, _code = connect(host, mtls_port, None, None, certs)
    except ProbeError:
        return True
    if probe is None:
        return True
    closed = probe.wait_disconnect(1.0)
    probe.close()
    return closed


def certificate_revocation_holds(
    host: str, mtls_port: int, certs: CertFiles, revoke: Callable[[], None]
) -> CheckResult:
    """A revoked client certificate no longer completes a connection on the mTLS listener."""
    name = "revocation holds (certificate)"
    if certificate_refused(host, mtls_port, certs):
        return CheckResult(name, False, "the probe certificate was refused before revocation")
    revoke()
    # The broker re-reads the list when it handles SIGHUP, in its next loop: give it a moment
    # (a busy box delayed it past an immediate probe).
    deadline = time.monotonic() + RELOAD_WAIT_S
    while not certificate_refused(host, mtls_port, certs):
        if time.monotonic() > deadline:
            return CheckResult(
                name, False, f"the revoked certificate still connects after {RELOAD_WAIT_S:.0f} s"
            )
        time.sleep(0.2)
    return CheckResult(name, True, "refused after revocation (revocation list, SIGHUP)")


def reregistration_is_new(
    host: str,
    port: int,
    mtls_port: int,
    old: Login,
    old_certs: CertFiles,
    register: Callable[[], tuple[Login, CertFiles]],
) -> CheckResult:
    """Registering a revoked MAC again gives new credentials; the old ones stay dead."""
    name = "re-registration revives nothing"
    new, new_certs = register()
    if new.password == old.password:
        return CheckResult(name, False, "the same password was issued again")
    probe, code = device_session(host, port, old)
    if probe is not None:
        probe.close()
        return CheckResult(name, False, "the old password logs in again")
    if not certificate_refused(host, mtls_port, old_certs):
        return CheckResult(name, False, "the old certificate connects again")
    fresh, code = device_session(host, port, new)
    if fresh is None:
        return CheckResult(name, False, f"the new password is refused ({code})")
    fresh.close()
    if certificate_refused(host, mtls_port, new_certs):
        return CheckResult(name, False, "the new certificate is refused")
    return CheckResult(name, True, "new password and certificate work; the old ones are refused")


def tls_listeners(
    host: str, tls_port: int, mtls_port: int, ca_file: str, login: Login
) -> CheckResult:
    """TLS works with the stack's CA; the mTLS listener refuses a client without a certificate."""
    name = "tls listeners"
    try:
        probe, code = connect(host, tls_port, login.username, login.password, None, ca_file)
    except ProbeError as exc:
        return CheckResult(name, False, f"no TLS on {tls_port}: {exc}")
    if probe is None:
        return CheckResult(name, False, f"TLS login on {tls_port} refused (reason {code})")
    probe.close()
    try:
        refused = _refused(host, mtls_port, login, ca_file)
    except ProbeError:
        refused = True
    if not refused:
        return CheckResult(
            name, False, f"mTLS port {mtls_port} accepted a client without a certificate"
        )
    return CheckResult(name, True, f"TLS on {tls_port}; mTLS on {mtls_port} requires a certificate")


def _is_public(path: Path) -> bool:
    return path.name.endswith(PUBLIC_SUFFIXES)


def secret_file_problems(paths: Iterable[Path]) -> list[str]:
    """Secret files (or folders) that group or others can read, write or enter."""
    problems = []
    for root in paths:
        if not root.exists():
            continue
        walked = [root] + (sorted(root.rglob("*")) if root.is_dir() else [])
        for path in walked:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_file() and _is_public(path):
                continue
            if mode & 0o077:
                problems.append(f"{path} is {mode:04o}")
    return problems


def untracked_problems(paths: Iterable[Path]) -> list[str]:
    """Secret paths inside a git checkout that git would not ignore."""
    problems = []
    for path in paths:
        if not path.exists():
            continue
        result = subprocess.run(
            ["git", "-C", str(path.parent), "check-ignore", "-q", str(path)],
            capture_output=True,
        )
        if result.returncode == 1:
            problems.append(f"{path} is not git-ignored")
    return problems


def secrets_private(paths: list[Path]) -> CheckResult:
    """Secret files are 0600 (folders 0700) and not committable."""
    problems = secret_file_problems(paths) + untracked_problems(paths)
    if problems:
        return CheckResult("secrets not world-readable", False, "; ".join(problems[:6]))
    present = [str(p) for p in paths if p.exists()]
    return CheckResult("secrets not world-readable", True, f"owner-only: {', '.join(present)}")


def weak_secrets(secrets: dict[str, str]) -> list[str]:
    """Names of secrets that are empty, short or a well-known default."""
    return [
        name
        for name, value in secrets.items()
        if len(value) < MIN_SECRET_CHARS or value.lower() in WEAK_PASSWORDS
    ]


def default_logins_accepted(
    mqtt: tuple[str, int, list[str]], postgres: tuple[int, list[str]], redis_port: int
) -> list[str]:
    """Default credentials (user = password, well-known words) the live services accept."""
    import psycopg
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    host, port, users = mqtt
    accepted = [
        f"mqtt {user}/{word}"
        for user in [*users, "admin"]
        for word in (user, "password")
        if not _refused(host, port, Login(user, word))
    ]
    pg_port, roles = postgres
    for role in roles:
        for word in (role, "postgres", "password"):
            try:
                psycopg.connect(
                    host="127.0.0.1", port=pg_port, user=role, password=word, dbname="postgres",
                    connect_timeout=3,
                ).close()  # fmt: skip
                accepted.append(f"postgres {role}/{word}")
            except psycopg.OperationalError:
                pass
    for word in (None, "redis", "password"):
        client = redis.Redis(
            host="127.0.0.1",
            port=redis_port,
            password=word,
            socket_timeout=3,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            client.ping()
            accepted.append(f"redis password {word!r}")
        except (redis.AuthenticationError, redis.ResponseError):
            pass
        finally:
            client.close()
    return accepted


def no_default_passwords(secrets: dict[str, str], accepted: list[str]) -> CheckResult:
    """Every configured secret is strong and no default login works."""
    weak = weak_secrets(secrets)
    if weak or accepted:
        detail = f"weak: {weak}; default logins accepted: {accepted}"
        return CheckResult("no default passwords", False, detail)
    return CheckResult(
        "no default passwords",
        True,
        f"{len(secrets)} secrets >= {MIN_SECRET_CHARS} chars, defaults refused",
    )


def listening_addresses(port: int, tables: Iterable[str]) -> list[str]:
    """Local addresses in LISTEN state on ``port``, from /proc/net/tcp{,6} text."""
    found = []
    for table in tables:
        for line in table.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":
                continue
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port:
                found.append(_address(address))
    return found


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
    data = b"".join(words)
    if len(data) == 4:
        return ".".join(str(b) for b in data)
    if data[:12] == b"\0" * 10 + b"\xff\xff":
        return "::ffff:" + ".".join(str(b) for b in data[12:])
    return ":".join(data[i : i + 2].hex() for i in range(0, 16, 2))


def is_loopback(address: str) -> bool:
    v4 = address.removeprefix("::ffff:")
    return v4.startswith("127.") or address == "0000:0000:0000:0000:0000:0000:0000:0001"


def read_tcp_tables() -> list[str]:
    tables = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            tables.append(Path(name).read_text())
        except FileNotFoundError:
            continue
    return tables


def loopback_only(ports: dict[str, int], tables: list[str]) -> CheckResult:
    """Every service port listens, and only on loopback."""
    problems = []
    for service, port in ports.items():
        addresses = listening_addresses(port, tables)
        if not addresses:
            problems.append(f"{service}:{port} is not listening")
        exposed = [a for a in addresses if not is_loopback(a)]
        if exposed:
            problems.append(f"{service}:{port} listens on {exposed}")
    if problems:
        return CheckResult("services on loopback only", False, "; ".join(problems))
    return CheckResult(
        "services on loopback only", True, ", ".join(f"{s}:{p}" for s, p in ports.items())
    )


def deploy_problems(deploy_dir: Path) -> tuple[list[str], int]:
    """Problems in deploy files (published database ports, test user, anonymous MQTT, default
    passwords) and how many files were read."""
    files = [
        p
        for p in sorted(deploy_dir.rglob("*"))
        if p.is_file()
        and (p.suffix in DEPLOY_SUFFIXES or p.name.startswith(("Dockerfile", ".env")))
    ]
    problems = []
    for path in files:
        text = path.read_text(errors="replace")
        if "f2-sim" in text:
            problems.append(f"{path}: mentions the test-rig user f2-sim")
        if re.search(r"^\s*allow_anonymous\s+true", text, re.M):
            problems.append(f"{path}: allow_anonymous true")
        weak = "|".join(sorted(w for w in WEAK_PASSWORDS if w))
        if re.search(
            rf"(PASSWORD|requirepass)\w*['\"]?\s*[:=]\s*['\"]?({weak})['\"]?\s*$", text, re.M | re.I
        ):
            problems.append(f"{path}: a default password is set")
        if path.suffix in (".yml", ".yaml"):
            problems += [f"{path}: {p}" for p in published_database_ports(text)]
    return problems, len(files)


def compose_services(text: str) -> dict[str, list[str]]:
    """The lines of each service block under a compose file's top-level ``services:``."""
    services: dict[str, list[str]] = {}
    inside, child_indent, current = False, -1, ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            inside, current = stripped == "services:", ""
            continue
        if not inside:
            continue
        if child_indent < 0:
            child_indent = indent
        if indent == child_indent:
            current = stripped.rstrip(":").strip().strip("'\"")
            services[current] = []
        elif current:
            services[current].append(line)
    return services


def port_entries(block: list[str]) -> list[str]:
    """The ``ports:`` entries of one service block (long syntax joined into one string each)."""
    entries: list[str] = []
    ports_indent = -1
    for line in block:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if ports_indent >= 0 and (
            indent < ports_indent or (indent == ports_indent and not stripped.startswith("-"))
        ):
            ports_indent = -1
        if stripped.startswith("ports:"):
            ports_indent = indent
            inline = stripped[len("ports:") :].strip()
            if inline.startswith("["):
                entries += [item.strip(" '\"") for item in inline.strip("[]").split(",") if item]
            continue
        if ports_indent < 0:
            continue
        if stripped.startswith("-"):
            entries.append(stripped[1:].strip().strip("'\""))
        elif entries:
            entries[-1] += " " + stripped
    return entries


def exposed(entry: str) -> bool:
    """True if a compose port entry publishes beyond loopback."""
    if "published" in entry or "target" in entry:
        return "published" in entry and not re.search(
            r"host_ip:\s*['\"]?(127\.|::1|\[::1\])", entry
        )
    return not entry.startswith(("127.", "[::1]:", "::1:", "localhost:"))


def published_database_ports(text: str) -> list[str]:
    """Compose services of databases or Redis whose ports are published beyond loopback."""
    problems = []
    for service, block in compose_services(text).items():
        image = " ".join(line.strip() for line in block if line.strip().startswith("image:"))
        if not _is_database(f"{service} {image}"):
            continue
        problems += [f"{service} publishes {e!r}" for e in port_entries(block) if exposed(e)]
    return problems


def _is_database(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in DATABASE_WORDS)


def deploy_files_safe(deploy_dir: Path) -> CheckResult:
    name = "deploy files: nothing published, no test user"
    if not deploy_dir.is_dir():
        return CheckResult(name, True, "no deploy files yet")
    problems, count = deploy_problems(deploy_dir)
    if count == 0:
        return CheckResult(name, True, "no deploy files yet")
    if problems:
        return CheckResult(name, False, "; ".join(problems[:6]))
    return CheckResult(name, True, f"{count} files in {deploy_dir} checked")


WRITER_FORBIDDEN = (
    "DROP TABLE readings",
    "ALTER TABLE readings ADD COLUMN f2_check integer",
    "TRUNCATE device_events",
    "DELETE FROM readings WHERE false",
    "CREATE TABLE f2_check_table (x integer)",
    "CREATE ROLE f2_check_role",
    "COPY (SELECT 1) TO PROGRAM 'true'",
)
READER_FORBIDDEN = (
    "INSERT INTO readings SELECT * FROM readings WHERE false",
    "UPDATE controllers SET mac = mac WHERE false",
    "DELETE FROM sensors WHERE false",
    "SELECT count(*) FROM device_events",
)
REGISTRY_FORBIDDEN = (
    'UPDATE "Device" SET "DeviceName" = "DeviceName" WHERE false',
    'DELETE FROM "Pin" WHERE false',
)


def _allowed(dsn: str, statements: Iterable[str]) -> list[str]:
    """The statements of ``statements`` that ran (each in a transaction rolled back after it),
    or failed for another reason than a missing privilege."""
    import psycopg

    class Undo(Exception):
        pass

    allowed = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            try:
                with conn.transaction():
                    conn.execute(statement)
                    raise Undo
            except Undo:
                allowed.append(statement)
            except psycopg.Error as exc:
                if exc.sqlstate != "42501":  # insufficient_privilege (also "must be owner")
                    allowed.append(f"{statement} ({exc.sqlstate}: {exc})")
    return allowed


def database_roles(writer: str, reader: str, registry: str) -> CheckResult:
    """The flows' role (``writer``: timeseries DSN, ``registry``: its registry DSN) cannot change
    the schema, delete, create roles or run programs, nor write the registry; the reader role
    cannot write or read beyond its views. Controls: each does what it is for."""
    import psycopg

    name = "database roles"
    leaks = (
        _allowed(writer, WRITER_FORBIDDEN)
        + _allowed(reader, READER_FORBIDDEN)
        + _allowed(registry, REGISTRY_FORBIDDEN)
    )
    if leaks:
        return CheckResult(name, False, f"allowed: {leaks}")
    with psycopg.connect(writer, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT f2_ensure_partitions(0, 0)")
        conn.execute("INSERT INTO readings SELECT * FROM readings WHERE false")
    with psycopg.connect(reader) as conn:
        conn.execute("SELECT count(*) FROM readings_named WHERE false").fetchone()
    with psycopg.connect(registry) as conn:
        conn.execute('SELECT count(*) FROM "Device"').fetchone()
    return CheckResult(
        name, True, "flows: no DDL, deletes, roles or programs, registry read-only; reader: views"
    )


def simulator_publishes(
    host: str,
    port: int,
    reader: Login,
    macs: list[str],
    run: Callable[[Path], subprocess.CompletedProcess[str]],
    mode: str,
) -> CheckResult:
    """The simulator still works under these protections: ``run`` (one simulator run of the
    fleet ``macs``, writing its report to the path it is given) exits 0, and a subscriber as
    ``reader`` receives exactly the messages its report says the broker acknowledged."""
    name = f"simulator works ({mode})"
    probe, code = connect(host, port, reader.username, reader.password)
    if probe is None:
        return CheckResult(name, False, f"subscriber refused (reason {code})")
    try:
        for mac in macs:
            if probe.subscribe(f"+/f2-{mac}/#") >= 128:
                return CheckResult(name, False, f"{reader.username} may not read the fleet")
        with tempfile.TemporaryDirectory(prefix="f2-security-sim-") as folder:
            report = Path(folder) / "report.json"
            done = run(report)
            if done.returncode != 0:
                tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
                return CheckResult(name, False, f"exit code {done.returncode}: {' | '.join(tail)}")
            published = int(msgspec.json.decode(report.read_bytes())["published"])
        probe.wait_messages(published, 15.0)
        received = len(probe.wait_messages(published + 1, 0.5))  # nothing beyond the report
    finally:
        probe.close()
    if published == 0 or received != published:
        return CheckResult(name, False, f"report says {published} acknowledged, {received} seen")
    return CheckResult(name, True, f"{published} messages acknowledged, all received")
