"""The failure classes (one test per SQLSTATE class and Kafka group) and the retry helper."""

from __future__ import annotations

import psycopg
import pytest
from confluent_kafka import KafkaError
from prometheus_client import REGISTRY, Gauge

from connectors.failures import (
    BLOCKED,
    ROW,
    TRANSIENT,
    Hold,
    RetryPolicy,
    db_failure,
    kafka_failure,
    retry,
    sqlstate_failure,
)


def pg_error(sqlstate: str) -> psycopg.Error:
    """The psycopg exception class PostgreSQL's driver raises for ``sqlstate``."""
    return psycopg.errors.lookup(sqlstate)("refused")


@pytest.mark.parametrize(
    "sqlstate",
    [
        "22001",  # string_data_right_truncation
        "22003",  # numeric_value_out_of_range
        "22021",  # character_not_in_repertoire (a NUL byte)
        "22P02",  # invalid_text_representation
        "23502",  # not_null_violation
        "23505",  # unique_violation
        "23514",  # check_violation
        "54000",  # program_limit_exceeded: index row size exceeds the btree maximum
        "54001",  # statement_too_complex
        "21000",  # cardinality_violation
        "27000",  # triggered_data_change_violation
        "44000",  # with_check_option_violation
        "P0001",  # raise_exception from a trigger
        "40002",  # a deferred constraint at commit
    ],
)
def test_row_content_errors_are_row(sqlstate: str) -> None:
    assert sqlstate_failure(sqlstate) is ROW
    assert db_failure(pg_error(sqlstate)) is ROW


@pytest.mark.parametrize(
    "sqlstate",
    [
        "08000",  # connection_exception
        "08006",  # connection_failure
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "57014",  # query_canceled (statement timeout)
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "53200",  # out_of_memory
        "53300",  # too_many_connections
        "25P02",  # in_failed_sql_transaction
    ],
)
def test_moments_are_transient(sqlstate: str) -> None:
    assert sqlstate_failure(sqlstate) is TRANSIENT
    assert db_failure(pg_error(sqlstate)) is TRANSIENT


@pytest.mark.parametrize(
    "sqlstate",
    [
        "42501",  # insufficient_privilege
        "42P01",  # undefined_table
        "42883",  # undefined_function
        "42703",  # undefined_column
        "25006",  # read_only_sql_transaction
        "53100",  # disk_full
        "28P01",  # invalid_password
        "3D000",  # invalid_catalog_name
        "57P04",  # database_dropped
        "58030",  # io_error
        "XX000",  # internal_error
        "XX001",  # data_corrupted
        "55000",  # object_not_in_prerequisite_state
        "ZZ999",  # a code nobody knows: hold visibly rather than dead-letter
    ],
)
def test_setup_faults_are_blocked(sqlstate: str) -> None:
    assert sqlstate_failure(sqlstate) is BLOCKED


def test_no_sqlstate_is_a_lost_connection() -> None:
    assert sqlstate_failure(None) is TRANSIENT
    assert db_failure(psycopg.OperationalError("connection refused")) is TRANSIENT
    assert db_failure(psycopg.InterfaceError("the connection is closed")) is TRANSIENT


def test_row_serialisation_errors_are_row_and_others_are_not_ours() -> None:
    assert db_failure(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogate")) is ROW
    assert db_failure(ValueError("NUL")) is ROW
    assert db_failure(RuntimeError("a bug")) is None


@pytest.mark.parametrize(
    ("code", "failure"),
    [
        (KafkaError.MSG_SIZE_TOO_LARGE, ROW),
        (KafkaError.RECORD_LIST_TOO_LARGE, ROW),
        (KafkaError.INVALID_RECORD, ROW),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, BLOCKED),
        (KafkaError.CLUSTER_AUTHORIZATION_FAILED, BLOCKED),
        (KafkaError.SASL_AUTHENTICATION_FAILED, BLOCKED),
        (KafkaError._AUTHENTICATION, BLOCKED),
        (KafkaError._UNKNOWN_TOPIC, BLOCKED),
        (KafkaError.INVALID_CONFIG, BLOCKED),
        (KafkaError._MSG_TIMED_OUT, TRANSIENT),
        (KafkaError._TRANSPORT, TRANSIENT),
        (KafkaError._ALL_BROKERS_DOWN, TRANSIENT),
        (KafkaError.NOT_LEADER_FOR_PARTITION, TRANSIENT),
        (KafkaError.NOT_ENOUGH_REPLICAS, TRANSIENT),
    ],
)
def test_kafka_errors(code: int, failure) -> None:
    assert kafka_failure(KafkaError(code)) is failure


def gauge_value(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


class Flaky:
    """Fails with the given exceptions in turn, then returns "done"."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


def test_transient_failures_back_off_and_are_capped() -> None:
    slept: list[float] = []
    attempt = Flaky(*[pg_error("08006") for _ in range(8)])
    policy = RetryPolicy(first_s=0.1, max_s=1.0, blocked_s=30.0)
    assert retry(attempt, db_failure, "test_store", policy, sleep=slept.append) == "done"
    assert attempt.calls == 9
    assert slept == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]


def test_row_failures_are_the_callers() -> None:
    attempt = Flaky(pg_error("22021"))
    with pytest.raises(psycopg.errors.CharacterNotInRepertoire):
        retry(attempt, db_failure, "test_store", RetryPolicy(), sleep=lambda _s: None)
    assert attempt.calls == 1


def test_blocked_holds_visibly_and_clears_on_success() -> None:
    gauge = Gauge("f2_test_blocked", "test")
    hold = Hold("test_dep", gauge)
    seen: list[tuple[float, float, float]] = []

    def sleep(seconds: float) -> None:
        reason = gauge_value(
            "f2_blocked_reason", dependency="test_dep", code="42501", detail="refused"
        )
        seen.append((seconds, gauge_value("f2_test_blocked"), reason))

    attempt = Flaky(pg_error("42501"), pg_error("42501"))
    policy = RetryPolicy(blocked_s=20.0)
    assert retry(attempt, db_failure, "test_dep", policy, hold, sleep=sleep) == "done"
    assert seen == [(20.0, 1.0, 1.0), (20.0, 1.0, 1.0)]
    assert gauge_value("f2_test_blocked") == 0.0
    labels = {"dependency": "test_dep", "code": "42501", "detail": "refused"}
    assert REGISTRY.get_sample_value("f2_blocked_reason", labels) is None
    assert not hold.blocked


def test_holders_of_one_dependency_count_up() -> None:
    gauge = Gauge("f2_test_two_blocked", "test")
    first, second = Hold("two", gauge), Hold("two", gauge)
    first.enter("42501", "refused")
    first.enter("42501", "refused")  # idempotent
    second.enter("42501", "refused")
    assert gauge_value("f2_test_two_blocked") == 2.0
    first.clear()
    assert gauge_value("f2_test_two_blocked") == 1.0
    labels = {"dependency": "two", "code": "42501", "detail": "refused"}
    assert REGISTRY.get_sample_value("f2_blocked_reason", labels) == 1.0
    second.enter("25006", "read-only")  # a new cause replaces the old one
    assert REGISTRY.get_sample_value("f2_blocked_reason", labels) is None
    second.clear()
    assert gauge_value("f2_test_two_blocked") == 0.0


def test_stop_ends_the_retries() -> None:
    attempt = Flaky(*[pg_error("08006") for _ in range(100)])
    calls = iter(range(100))
    with pytest.raises(psycopg.OperationalError):
        retry(
            attempt,
            db_failure,
            "test_store",
            RetryPolicy(),
            sleep=lambda _s: None,
            stop=lambda: next(calls) >= 2,
        )
    assert attempt.calls == 3
