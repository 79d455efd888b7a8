"""Topic grammar (docs/PROTOCOL.md §1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.reasons import BAD_TOPIC
from schemas.records import DecodeError
from schemas.topics import COMPONENTS, TopicInfo, format_topic, mac_from_topic, parse_topic

MAC = "e4fd45f654be"


@pytest.mark.parametrize(
    ("topic", "mode", "component", "kind", "index"),
    [
        (f"tele/f2-{MAC}/sensor-mode/J1/sensor-1", "sensor-mode", "sensor-1", "sensor", 1),
        (f"tele/f2-{MAC}/sensor-mode/J4/sensor-6", "sensor-mode", "sensor-6", "sensor", 6),
        (
            f"stat/f2-{MAC}/access-control-mode/J2/strike-2",
            "access-control-mode",
            "strike-2",
            "strike",
            2,
        ),
        (
            f"stat/f2-{MAC}/access-control-mode/J2/door-sensors",
            "access-control-mode",
            "door-sensors",
            "door-sensors",
            0,
        ),
        (
            f"tele/f2-{MAC}/access-control-mode/J3/reader-1",
            "access-control-mode",
            "reader-1",
            "reader",
            1,
        ),
        (
            f"tele/f2-{MAC}/access-control-mode/J3/exit-buttons",
            "access-control-mode",
            "exit-buttons",
            "exit-buttons",
            0,
        ),
        (f"stat/f2-{MAC}/alarm-mode/J4/siren-1", "alarm-mode", "siren-1", "siren", 1),
        (
            f"stat/f2-{MAC}/alarm-mode/J4/motion-sensor-5",
            "alarm-mode",
            "motion-sensor-5",
            "motion-sensor",
            5,
        ),
    ],
)
def test_valid_topics(topic: str, mode: str, component: str, kind: str, index: int) -> None:
    info = parse_topic(topic)
    assert isinstance(info, TopicInfo)
    assert (info.mac, info.mode, info.component, info.kind, info.index) == (
        MAC,
        mode,
        component,
        kind,
        index,
    )
    assert info.topic == topic


def test_legacy_connector_digit_and_upper_case_mac_are_normalised() -> None:
    info = parse_topic("tele/f2-E4FD45F654BE/sensor-mode/3/sensor-2")
    assert isinstance(info, TopicInfo)
    assert (info.mac, info.connector, info.connector_number) == (MAC, "J3", 3)
    assert info.topic == f"tele/f2-{MAC}/sensor-mode/J3/sensor-2"


def test_command_topics_and_success_suffix() -> None:
    info = parse_topic(f"cmnd/f2-{MAC}/access-control-mode/J2/reader-1/success")
    assert isinstance(info, TopicInfo)
    assert info.type == "cmnd" and info.success


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "tele",
        f"tele/f2-{MAC}/sensor-mode/J1",
        f"post/f2-{MAC}/sensor-mode/J1/sensor-1",
        f"tele/f3-{MAC}/sensor-mode/J1/sensor-1",
        "tele/f2-e4fd45f654b/sensor-mode/J1/sensor-1",
        "tele/f2-e4fd45f654bg/sensor-mode/J1/sensor-1",
        "tele/f2-e4:fd:45:f6:54:be/sensor-mode/J1/sensor-1",
        f"tele/f2-{MAC}/party-mode/J1/sensor-1",
        f"tele/f2-{MAC}/sensor-mode/J5/sensor-1",
        f"tele/f2-{MAC}/sensor-mode/J0/sensor-1",
        f"tele/f2-{MAC}/sensor-mode/j1/sensor-1",
        f"tele/f2-{MAC}/sensor-mode/J1/sensor-0",
        f"tele/f2-{MAC}/sensor-mode/J1/sensor-7",
        f"tele/f2-{MAC}/sensor-mode/J1/sensor-01",
        f"tele/f2-{MAC}/sensor-mode/J1/strike-1",
        f"tele/f2-{MAC}/access-control-mode/J1/strike-3",
        f"tele/f2-{MAC}/access-control-mode/J1/door-sensors-1",
        f"tele/f2-{MAC}/access-control-mode/J1/reader-3",
        f"tele/f2-{MAC}/alarm-mode/J1/motion-sensor-6",
        f"tele/f2-{MAC}/alarm-mode/J1/siren-3",
        f"tele/f2-{MAC}/alarm-mode/J1/siren-1/failure",
        f"tele/f2-{MAC}/alarm-mode/J1/siren-1/success/x",
        f"/tele/f2-{MAC}/alarm-mode/J1/siren-1",
        f"tele/f2-{MAC}/alarm-mode/J1/siren-1/",
    ],
)
def test_bad_topics(topic: str) -> None:
    result = parse_topic(topic)
    assert isinstance(result, DecodeError)
    assert result.reason == BAD_TOPIC


def test_every_component_of_every_mode_parses() -> None:
    for mode, components in COMPONENTS.items():
        for component in components:
            assert isinstance(
                parse_topic(format_topic("stat", MAC, mode, "J1", component)), TopicInfo
            )
    assert sum(len(c) for c in COMPONENTS.values()) == 6 + (2 + 1 + 2 + 1) + (2 + 5)


def test_parse_is_cached() -> None:
    topic = f"tele/f2-{MAC}/sensor-mode/J1/sensor-1"
    assert parse_topic(topic) is parse_topic(topic)


@pytest.mark.parametrize(
    ("topic", "mac"),
    [
        (f"tele/f2-{MAC}/sensor-mode/J1/sensor-1", MAC),
        ("stat/f2-E4FD45F654BE/alarm-mode/J1/siren-1", MAC),
        ("stat/f2-E4FD45F654BE", None),
        ("stat/f2-e4fd45f654bx/alarm-mode", None),
        ("stat/e4fd45f654be00/alarm-mode", None),
        ("", None),
        ("no-slash-at-all", None),
    ],
)
def test_mac_from_topic(topic: str, mac: str | None) -> None:
    assert mac_from_topic(topic) == mac


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.lists(
            st.sampled_from(
                [
                    "tele",
                    "stat",
                    "cmnd",
                    f"f2-{MAC}",
                    "sensor-mode",
                    "alarm-mode",
                    "J1",
                    "4",
                    "sensor-1",
                    "siren-2",
                    "success",
                    "",
                    "f2-",
                    "door-sensors",
                ]
            ),
            max_size=7,
        ).map("/".join),
    )
)
def test_any_text_parses_or_is_bad_topic(topic: str) -> None:
    result = parse_topic(topic)
    if isinstance(result, DecodeError):
        assert result.reason == BAD_TOPIC
    else:
        assert parse_topic(result.topic) == result
        assert mac_from_topic(topic) == result.mac
