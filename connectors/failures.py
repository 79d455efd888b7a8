"""How a dependency failed, and what the pipeline does about it: one table, one retry helper.

Every failure of PostgreSQL or Kafka falls in one of three classes (docs/ARCHITECTURE.md §3),
each with its own answer:

- ``row``: the content of one row or record caused it (a NUL byte in text, an index row too large,
  a record over the broker's size limit). The row is isolated and dead-lettered
  (``store_rejected`` / ``undeliverable``); the rest of its batch goes on. The caller handles it:
  :func:`retry` re-raises it at once.
- ``transient``: the dependency is unavailable for a moment (connection lost, shutdown, deadlock,
  serialization failure, lock timeout, out of memory, too many connections). Retried with capped
  exponential backoff; nothing is dropped and nothing is acknowledged meanwhile.
- ``blocked``: the dependency refuses every write until someone fixes its setup (permission
  denied, a missing table or function, a read-only database after a failover, a full disk, an
  authentication or authorisation failure). The flow holds: nothing is acknowledged or lost, the
  write is retried slowly, and it says so: ``f2_<dependency>_blocked`` is 1 (the health report
  turns the flow ``down`` with the code and message from ``f2_blocked_reason``, and an alert
  fires).

:data:`SQLSTATE_CLASSES` is the PostgreSQL table (exact codes first, then two-character classes);
:func:`kafka_failure` the Kafka one. A SQLSTATE the table does not know is ``blocked``: holding
visibly loses nothing, while guessing ``row`` could dead-letter a whole fleet's data.

:func:`retry` runs an attempt until it succeeds, with the backoff of the failure's class. It is
built on tenacity (a kept library: waits, stop conditions and hooks) rather than a hand-written
loop; what this module adds is the classification and the visible hold.
"""

from __future__ import annotations

import concurrent.futures.thread  # noqa: F401  (its exit hook first, so ours runs before it)
import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable
from enum import StrEnum
from typing import TypeVar

import msgspec
import psycopg
import tenacity
from confluent_kafka import KafkaError
from prometheus_client import Counter, Gauge

log = logging.getLogger("f2.failures")


class Failure(StrEnum):
    """The class of a dependency failure (see the module docstring)."""

    ROW = "row"
    TRANSIENT = "transient"
    BLOCKED = "blocked"


ROW, TRANSIENT, BLOCKED = Failure.ROW, Failure.TRANSIENT, Failure.BLOCKED

SQLSTATE_CLASSES: dict[str, Failure] = {
    # Exact codes (checked first).
    "40002": ROW,  # transaction_integrity_constraint_violation (a deferred constraint)
    "25006": BLOCKED,  # read_only_sql_transaction (a replica after a failover)
    "53100": BLOCKED,  # disk_full
    "55P03": TRANSIENT,  # lock_not_available (lock timeout)
    "55006": TRANSIENT,  # object_in_use
    "57P04": BLOCKED,  # database_dropped
    "P0001": ROW,  # raise_exception (a trigger refusing the row)
    "P0004": ROW,  # assert_failure (a trigger's ASSERT on the row)
    "0A000": ROW,  # feature_not_supported (e.g. ON CONFLICT into a compressed chunk)
    # Classes (the first two characters).
    "21": ROW,  # cardinality_violation
    "22": ROW,  # data_exception: bad text, numbers out of range, NUL bytes…
    "23": ROW,  # integrity_constraint_violation: check, not null, foreign key…
    "27": ROW,  # triggered_data_change_violation
    "44": ROW,  # with_check_option_violation
    "54": ROW,  # program_limit_exceeded: index row too large, statement too complex…
    "08": TRANSIENT,  # connection_exception
    "25": TRANSIENT,  # invalid_transaction_state (a reconnect resets it), but 25006
    "40": TRANSIENT,  # transaction_rollback: serialization failure, deadlock
    "53": TRANSIENT,  # insufficient_resources: out of memory, too many connections
    "57": TRANSIENT,  # operator_intervention: admin/crash shutdown, cannot connect now, timeout
    "28": BLOCKED,  # invalid_authorization_specification (login refused)
    "3D": BLOCKED,  # invalid_catalog_name (no such database)
    "3F": BLOCKED,  # invalid_schema_name
    "42": BLOCKED,  # syntax_error_or_access_rule_violation: permission denied, undefined object
    "55": BLOCKED,  # object_not_in_prerequisite_state
    "58": BLOCKED,  # system_error: I/O errors
    "XX": BLOCKED,  # internal_error, data or index corrupted
}

# Exceptions raised on our side while a row is serialised for the database (a lone surrogate
# that UTF-8 cannot encode, a number the wire format cannot hold): the row's content, not the
# database, is at fault.
_ROW_CONTENT_ERRORS = (UnicodeError, ValueError, OverflowError, TypeError)


def sqlstate_failure(sqlstate: str | None) -> Failure:
    """The class of a SQLSTATE; no code (the connection itself failed) is ``transient``."""
    if not sqlstate:
        return TRANSIENT
    return SQLSTATE_CLASSES.get(sqlstate) or SQLSTATE_CLASSES.get(sqlstate[:2], BLOCKED)


def db_failure(exc: BaseException) -> Failure | None:
    """The class of a database exception; None if it is not a database or row-content error."""
    if isinstance(exc, psycopg.Error):
        return sqlstate_failure(exc.sqlstate)
    if isinstance(exc, _ROW_CONTENT_ERRORS):
        return ROW
    return None


def sqlstate_of(exc: BaseException) -> str:
    """The SQLSTATE of ``exc``, or the exception's type name when it has none."""
    code = getattr(exc, "sqlstate", None)
    return code or type(exc).__name__


def error_detail(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``exc``'s message (or its type name), at most ``limit`` characters."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


_KAFKA_ROW = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
    }
)
_KAFKA_BLOCKED = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.ILLEGAL_SASL_STATE,
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.INVALID_CONFIG,
        KafkaError.INVALID_REQUIRED_ACKS,
        KafkaError.POLICY_VIOLATION,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError._INVALID_ARG,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
    }
)


def kafka_failure(error: KafkaError) -> Failure:
    """The class of a Kafka error: a record refused for its size or content is ``row``,
    authentication, authorisation and configuration failures are ``blocked``, the rest (timeouts,
    brokers or leaders unavailable) ``transient``."""
    code = error.code()
    if code in _KAFKA_ROW:
        return ROW
    if code in _KAFKA_BLOCKED:
        return BLOCKED
    return TRANSIENT


BLOCKED_REASON = Gauge(
    "f2_blocked_reason",
    "1 while a dependency holds the flow, labelled with why (code and first line of the error)",
    ["dependency", "code", "detail"],
)
# Holders per reason series (prometheus_client cannot read a gauge back): a series is removed
# when its last holder clears, so a fixed cause leaves no stale label set behind.
_REASON_HOLDERS: Tally[tuple[str, str, str]] = Tally()
_REASONS_LOCK = threading.Lock()
RETRIES = Counter(
    "f2_dependency_retries",
    "Calls to a dependency retried after a failure, by failure class",
    ["dependency", "failure"],
)


class Hold:
    """The visible state of one dependency that refuses every write (``blocked``).

    ``gauge`` counts the holders currently blocked in the process (each writer, store or producer
    owns one Hold), so it reads 1 or more while any of them holds. :meth:`enter` and
    :meth:`clear` are idempotent; entering logs an error once, clearing logs the recovery.
    """

    def __init__(self, dependency: str, gauge: Gauge) -> None:
        self._dependency = dependency
        self._gauge = gauge
        self._reason: tuple[str, str] | None = None
        self._since = 0.0
        self._lock = threading.Lock()

    @property
    def blocked(self) -> bool:
        return self._reason is not None

    def enter(self, code: str, detail: str) -> None:
        """Mark the dependency blocked by ``code`` (SQLSTATE or Kafka error name)."""
        reason = (code, detail[:200])
        with self._lock:
            if self._reason == reason:
                return
            if self._reason is None:
                self._gauge.inc()
                self._since = time.monotonic()
            else:
                self._drop_reason()
            self._reason = reason
            with _REASONS_LOCK:
                _REASON_HOLDERS[(self._dependency, *reason)] += 1
            BLOCKED_REASON.labels(self._dependency, *reason).inc()
        log.error(
            "%s refuses every write: the flow holds (nothing acknowledged, nothing lost) until "
            "it is fixed",
            self._dependency,
            extra={
                "stage": self._dependency,
                "failure": BLOCKED.value,
                "code": code,
                "detail": detail[:300],
            },
        )

    def clear(self) -> None:
        """Mark the dependency as writing again."""
        with self._lock:
            if self._reason is None:
                return
            self._drop_reason()
            self._reason = None
            self._gauge.dec()
            held = time.monotonic() - self._since
        log.warning(
            "%s accepts writes again; the flow resumes",
            self._dependency,
            extra={"stage": self._dependency, "failure": BLOCKED.value, "held_s": round(held, 1)},
        )

    def _drop_reason(self) -> None:
        labels = (self._dependency, *self._reason)
        with _REASONS_LOCK:
            _REASON_HOLDERS[labels] -= 1
            if _REASON_HOLDERS[labels] > 0:
                BLOCKED_REASON.labels(*labels).dec()
                return
            del _REASON_HOLDERS[labels]
        BLOCKED_REASON.remove(*labels)


SHUTDOWN = threading.Event()
"""Set when the interpreter shuts down: retries stop waiting and give up, so a process stopped
while a dependency is blocked exits at once (its work is in the recovery snapshot or was never
acknowledged) instead of waiting for SIGKILL while a writer thread retries."""
if hasattr(threading, "_register_atexit"):
    # Runs before non-daemon threads are joined, and before concurrent.futures joins its workers
    # (its own hook, registered when concurrent.futures.thread was imported, runs after ours).
    threading._register_atexit(SHUTDOWN.set)


class RetryPolicy(msgspec.Struct, frozen=True):
    """Waits between attempts: ``transient`` doubles from ``first_s`` up to ``max_s``;
    ``blocked`` waits ``blocked_s`` each time."""

    first_s: float = 0.1
    max_s: float = 10.0
    blocked_s: float = 15.0


T = TypeVar("T")
Classifier = Callable[[BaseException], Failure | None]


def pause(seconds: float) -> None:
    """Wait ``seconds``, or less if the interpreter shuts down meanwhile."""
    SHUTDOWN.wait(seconds)


def retry(
    attempt: Callable[[], T],
    classify: Classifier,
    dependency: str,
    policy: RetryPolicy,
    hold: Hold | None = None,
    sleep: Callable[[float], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> T:
    """``attempt()`` until it returns, waiting between attempts by the failure's class.

    An exception ``classify`` maps to ``row`` or to None (not a dependency failure) propagates at
    once. ``transient`` and ``blocked`` ones are retried for as long as it takes (or until
    ``stop()`` is true or the interpreter shuts down, which re-raises the last one); a
    ``blocked`` one enters ``hold`` and a success clears it. Each retry is counted in
    ``f2_dependency_retries_total`` and logged with its class.
    """

    def retriable(exc: BaseException) -> bool:
        return classify(exc) in (TRANSIENT, BLOCKED)

    def wait(state: tenacity.RetryCallState) -> float:
        if classify(state.outcome.exception()) is BLOCKED:
            return policy.blocked_s
        return min(policy.first_s * 2 ** (state.attempt_number - 1), policy.max_s)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception()
        failure = classify(exc)
        RETRIES.labels(dependency, failure.value).inc()
        code, detail = sqlstate_of(exc), error_detail(exc)
        if failure is BLOCKED and hold is not None:
            hold.enter(code, detail)
        log.warning(
            "%s call failed (%s); retrying in %.1f s",
            dependency,
            failure.value,
            state.upcoming_sleep,
            extra={"stage": dependency, "failure": failure.value, "code": code, "detail": detail},
        )

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(retriable),
        wait=wait,
        stop=lambda _state: SHUTDOWN.is_set() or (stop is not None and stop()),
        before_sleep=before_sleep,
        sleep=sleep or pause,
        reraise=True,
    )
    result = retrying(attempt)
    if hold is not None:
        hold.clear()
    return result
