"""The pure parts of ``bench.ingest``'s ceilings: the ``mosquitto_sub`` command and options file,
the receipt-time parsing and rates, the broker's load, the summary's keys, the drop sink."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from bench.ingest import (
    CONFIGS,
    MOSQUITTO_SUB,
    DropSink,
    broker_load,
    drain_rate,
    free_ports,
    mosquitto_sub_argv,
    mosquitto_sub_options,
    receipt_ns,
    receipts_span,
    summarize,
    timed_drain,
)
from connectors.mqtt_source import MqttSourceSettings

CONFIG = MqttSourceSettings(
    host="127.0.0.1",
    port=1883,
    username="f2-pipeline",
    password="s3cret value",
    partitions=4,
    share_group="bench-g",
    client_prefix="bench-p",
    session_expiry_s=3600,
    receive_maximum=20000,
    keepalive_s=30,
)


def test_mosquitto_sub_drains_the_flows_session_the_way_the_flow_does() -> None:
    argv = mosquitto_sub_argv(CONFIG, 2, binary="mosquitto_sub")
    assert argv[0] == "mosquitto_sub"
    pairs = dict(itertools.pairwise(argv))
    assert pairs["-h"] == "127.0.0.1" and pairs["-p"] == "1883"
    assert pairs["-V"] == "mqttv5" and pairs["-q"] == "1" and "-c" in argv
    assert pairs["-x"] == "3600" and pairs["-k"] == "30"
    assert pairs["-i"] == "bench-p-s2"  # connectors.mqtt_source.client_id of partition s2
    assert pairs["-F"] == "%U"
    at = argv.index("-D")
    assert argv[at : at + 4] == ["-D", "connect", "receive-maximum", "20000"]
    topics = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-t"]
    assert topics == ["$share/bench-g/stat/#", "$share/bench-g/tele/#"]
    assert "-C" not in argv  # stopped once every session's file holds all messages
    assert not any("s3cret" in arg for arg in argv)  # credentials only in the options file


def test_mosquitto_sub_tls_follows_the_source_settings() -> None:
    with_ca = mosquitto_sub_argv(
        MqttSourceSettings(**{**_fields(CONFIG), "tls": True, "ca_file": "/ca.pem"}), 0
    )
    assert with_ca[-2:] == ["--cafile", "/ca.pem"]
    system = mosquitto_sub_argv(MqttSourceSettings(**{**_fields(CONFIG), "tls": True}), 0)
    assert system[-1] == "--tls-use-os-certs"
    assert "--cafile" not in mosquitto_sub_argv(CONFIG, 0)


def _fields(config: MqttSourceSettings) -> dict:
    return {name: getattr(config, name) for name in config.__struct_fields__}


def test_options_file_holds_the_credentials_one_per_line() -> None:
    assert mosquitto_sub_options(CONFIG) == "-u f2-pipeline\n-P s3cret value\n"
    anonymous = MqttSourceSettings(**{**_fields(CONFIG), "username": "", "password": ""})
    assert mosquitto_sub_options(anonymous) == ""
    with pytest.raises(ValueError, match="line break"):
        mosquitto_sub_options(MqttSourceSettings(**{**_fields(CONFIG), "password": "a\nb"}))


@pytest.mark.skipif(not Path(MOSQUITTO_SUB).exists(), reason="mosquitto-clients not installed")
def test_the_real_mosquitto_sub_accepts_the_command_and_options_file(tmp_path: Path) -> None:
    """Pointed at a closed port, a well-formed command fails only at connecting."""
    (tmp_path / "mosquitto_sub").write_text(mosquitto_sub_options(CONFIG))
    closed = MqttSourceSettings(**{**_fields(CONFIG), "port": free_ports(1)[0]})
    result = subprocess.run(
        mosquitto_sub_argv(closed, 0, binary=shutil.which("mosquitto_sub") or MOSQUITTO_SUB),
        capture_output=True,
        text=True,
        timeout=30,
        env={"XDG_CONFIG_HOME": str(tmp_path), "TZ": "UTC", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert (result.stdout + result.stderr).strip() == "Error: Connection refused"


def test_receipt_times_parse_to_exact_nanoseconds() -> None:
    assert receipt_ns(b"1796629586.589307704\n") == 1_796_629_586_589_307_704
    assert receipt_ns(b"12.5") == 12_500_000_000


def test_receipts_span_counts_every_session_and_takes_the_outer_times() -> None:
    outputs = [
        b"100.000000000\n100.500000000\n101.000000000\n",
        b"",
        b"100.250000000\n102.000000000\n",
    ]
    assert receipts_span(outputs) == (5, 100.0, 102.0)
    assert receipts_span([b"", b""]) == (0, 0.0, 0.0)
    messages, first, last = receipts_span(outputs)
    assert drain_rate(messages, first, last) == 2.5


def test_drain_rate_is_zero_when_nothing_was_timed() -> None:
    assert drain_rate(0, 1.0, 2.0) == 0.0
    assert drain_rate(10, 2.0, 2.0) == 0.0
    assert drain_rate(10, 1.0, 3.0) == 5.0


def test_broker_load_is_cpu_per_message_times_the_rate() -> None:
    # 0.5 s of broker CPU for 50,000 messages = 10 µs each; at 40,000 msg/s: 0.4 of a core.
    assert broker_load(0.5, 50_000, 40_000.0) == {
        "broker_us_per_msg": 10.0,
        "broker_cores_at_rate": 0.4,
    }


def _round(rate: float, cpu: float) -> dict:
    return {"messages": 1000, "rate": rate, "cpu_us_per_msg": cpu}


def test_summary_reports_ceilings_ratios_and_cpu_per_configuration() -> None:
    runs = {
        "bare": [_round(8000, 50), _round(10000, 50), _round(9000, 50)],
        "mosquitto_sub": [_round(40000, 10), _round(50000, 11), _round(30000, 12)],
        "own_client": [_round(20000, 20), _round(25000, 21), _round(15000, 22)],
        "flow_1p": [_round(16000, 30), _round(20000, 31), _round(12000, 32)],
        "flow_2p": [_round(10000, 40), _round(10000, 41), _round(10000, 42)],
    }
    assert set(runs) == set(CONFIGS)
    results = summarize(runs)
    assert results["ceilings"] == {
        "mosquitto_sub_msgs_per_s": 40000,
        "mosquitto_sub_us_per_msg": 10,
        "own_client_msgs_per_s": 20000,
        "own_client_us_per_msg": 20,
    }
    # Medians of per-round ratios, not ratios of medians.
    assert results["flow_over_mosquitto_sub_per_round"] == [0.4, 0.4, 0.4]
    assert results["flow_over_own_client"] == 0.8
    assert results["flow_2p_over_own_client_per_round"] == [0.5, 0.4, 0.667]
    assert results["flow_2p_over_own_client"] == 0.5
    assert results["flow_1p_vs_bare"] == 2.0 and results["target_met"] is True
    assert results["cpu_us_per_msg"] == {
        "bare": 50,
        "mosquitto_sub": 10,
        "own_client": 20,
        "flow_1p": 30,
        "flow_2p": 41,  # the median round of equal rates: the middle one
    }
    assert results["flow_1p"]["rates"] == [16000, 20000, 12000]  # type: ignore[index]


def test_summary_without_ceilings_has_no_ceiling_keys() -> None:
    results = summarize({"flow_1p": [_round(1000, 30)]})
    assert "ceilings" not in results
    assert not [key for key in results if "_over_" in key]


def test_drop_sink_takes_every_batch() -> None:
    flow = Dataflow("drop")
    op.output("drop", op.input("in", flow, TestingSource(range(10), batch_size=3)), DropSink())
    run_main(flow)


def test_a_drain_first_seen_late_is_timed_over_the_messages_received_since() -> None:
    # the first scrape counted 30,000 of 40,000: 10,000 in 0.5 s, 0.2 CPU seconds
    result = timed_drain(40_000, 30_000, (10.0, 10.25, 10.5), 0.2)
    assert result["timed_messages"] == 10_000
    assert result["rate"] == 20_000.0
    assert result["receive_rate"] == 40_000
    assert result["cpu_us_per_msg"] == 20.0


def test_a_drain_that_never_completed_is_untimed() -> None:
    result = timed_drain(40_000, 5, (10.0, 0.0, 0.0), 0.0)
    assert result["messages"] == 0 and result["cpu_us_per_msg"] is None
