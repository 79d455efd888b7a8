"""Frames and data points (docs/PROTOCOL.md §3): hex, CRC, Modbus RTU checks, encodings, byte
orders."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.encode import encode_value, frame_hex, modbus_exception_frame, modbus_frame, with_crc
from schemas.frames import (
    BYTE_ORDERS,
    ENCODINGS,
    compile_point,
    crc16_modbus,
    modbus_data_section,
    modbus_frame_ok,
    parse_hex,
)
from schemas.reasons import (
    BAD_CRC,
    BAD_FRAME,
    BAD_HEX,
    BAD_REGISTRY,
    BAD_VALUE,
    MODBUS_EXCEPTION,
    OUT_OF_RANGE,
)
from schemas.records import DataPointDef, DecodeError, Reading
from tests.schemas.support import ENV_S1, caught_bug, decode, probe_controller, sensor_message

GOLDEN = "01 03 06 09 C4 13 88 01 90 55 6F"


def bitwise_crc(data: bytes) -> int:
    """Reference CRC-16/MODBUS, bit by bit."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def values(results: list) -> dict[str, float]:
    return {r.label: r.value for r in results if isinstance(r, Reading)}


def errors(results: list) -> list[tuple[str, str | None]]:
    return [(r.reason, r.label) for r in results if isinstance(r, DecodeError)]


def test_golden_vector() -> None:
    frame = bytes.fromhex(GOLDEN)
    assert crc16_modbus(frame, 9) == 0x6F55 == bitwise_crc(frame[:9])
    assert modbus_data_section(frame) == (3, 9)
    results = decode(sensor_message(GOLDEN), probe_controller(ENV_S1))
    assert [(r.label, r.value, r.unit) for r in results] == [
        ("Temperature", 25.0, "°C"),
        ("Humidity", 50.0, "%"),
        ("CO2", 400.0, "ppm"),
    ]
    assert modbus_frame(1, 3, bytes.fromhex("09C413880190")) == frame


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_crc_matches_bitwise_reference(data: bytes) -> None:
    assert crc16_modbus(data) == bitwise_crc(data)
    assert crc16_modbus(data + b"xyz", len(data)) == bitwise_crc(data)
    assert crc16_modbus(with_crc(data)) == 0


@pytest.mark.parametrize(
    "text", [GOLDEN, GOLDEN.replace(" ", ""), GOLDEN.lower(), GOLDEN.lower().replace(" ", "")]
)
def test_hex_forms(text: str) -> None:
    assert parse_hex(text) == bytes.fromhex(GOLDEN)


@pytest.mark.parametrize("text", ["0", "01 0", "zz", "01-03", "0 1", "٠١", "01\x0003"])
def test_bad_hex(text: str) -> None:
    error = parse_hex(text)
    assert isinstance(error, DecodeError) and error.reason == BAD_HEX


@pytest.mark.parametrize(
    ("frame", "reason", "detail"),
    [
        (b"", BAD_FRAME, "0 bytes"),
        (bytes.fromhex("01030655"), BAD_FRAME, "4 bytes"),
        (bytes.fromhex(GOLDEN)[:-1] + b"\x00", BAD_CRC, "CRC"),
        (bytes.fromhex("0183"), BAD_FRAME, "2 bytes"),
        (modbus_exception_frame(1, 3, 2), MODBUS_EXCEPTION, "exception code 2"),
        (modbus_exception_frame(1, 4, 11), MODBUS_EXCEPTION, "exception code 11"),
        (with_crc(bytes.fromhex("0106020001")), BAD_FRAME, "function 0x06"),
        (with_crc(bytes.fromhex("01030509C413880190")), BAD_FRAME, "byte count 5"),
        (with_crc(bytes.fromhex("01030709C4138801")), BAD_FRAME, "byte count 7"),
    ],
)
def test_modbus_checks_in_spec_order(frame: bytes, reason: str, detail: str) -> None:
    error = modbus_data_section(frame)
    assert isinstance(error, DecodeError)
    assert (error.reason, error.label) == (reason, None)
    assert detail in error.detail
    assert not modbus_frame_ok(frame)
    assert errors(decode(sensor_message(frame), probe_controller(ENV_S1))) == [(reason, None)]


def test_crc_is_checked_before_the_exception_flag() -> None:
    frame = modbus_exception_frame(1, 3, 2)[:-1] + b"\x00"
    assert modbus_data_section(frame).reason == BAD_CRC


def test_function_4_and_empty_data_are_valid() -> None:
    assert modbus_data_section(modbus_frame(1, 4, b"\x00\x07")) == (3, 5)
    assert modbus_data_section(modbus_frame(9, 3, b"")) == (3, 3)


EXAMPLES = {
    1: {order: "7F" for order in BYTE_ORDERS},
    2: {"ABCD": "1122", "CDAB": "1122", "BADC": "2211", "DCBA": "2211"},
    4: {"ABCD": "11223344", "CDAB": "33441122", "BADC": "22114433", "DCBA": "44332211"},
    8: {
        "ABCD": "1122334455667788",
        "CDAB": "7788556633441122",
        "BADC": "2211443366558877",
        "DCBA": "8877665544332211",
    },
}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("byte_order", BYTE_ORDERS)
def test_byte_orders_match_the_spec_table(encoding: str, byte_order: str) -> None:
    code, size, _ = ENCODINGS[encoding]
    wire = bytes.fromhex(EXAMPLES[size][byte_order])
    expected = struct.unpack(">" + code, bytes.fromhex(EXAMPLES[size]["ABCD"]))[0]
    point = DataPointDef(1, "X", encoding, 0, size, 0, byte_order=byte_order)
    results = decode(sensor_message(modbus_frame(1, 3, wire)), probe_controller((point,)))
    assert values(results) == {"X": float(expected)}
    assert encode_value(expected, encoding, byte_order) == wire


RAW_VALUES = {
    "Int8": st.integers(-128, 127),
    "Uint8": st.integers(0, 255),
    "Int16": st.integers(-(2**15), 2**15 - 1),
    "Uint16": st.integers(0, 2**16 - 1),
    "Int32": st.integers(-(2**31), 2**31 - 1),
    "Uint32": st.integers(0, 2**32 - 1),
    "Int64": st.integers(-(2**50), 2**50),
    "Uint64": st.integers(0, 2**50),
    "Float32": st.floats(-(2.0**127), 2.0**127, width=32),  # margin below the float32 maximum
    "Float64": st.floats(-1e300, 1e300),
}


@st.composite
def points_and_values(draw: st.DrawFn) -> tuple[str, str, int, float, int, bool]:
    encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    byte_order = draw(st.sampled_from(BYTE_ORDERS))
    decimals = draw(st.integers(0, 6))
    raw = draw(RAW_VALUES[encoding])
    offset = draw(st.integers(0, 5))
    with_broken_neighbour = draw(st.booleans())
    return encoding, byte_order, decimals, raw / 10**decimals, offset, with_broken_neighbour


@settings(max_examples=400, deadline=None)
@given(points_and_values(), st.sampled_from(["modbus-rtu", "raw"]), st.booleans())
def test_encode_frame_decode_round_trip(case: tuple, frame_format: str, spaced: bool) -> None:
    encoding, byte_order, decimals, value, offset, broken = case
    size = ENCODINGS[encoding][1]
    point = DataPointDef(1, "V", encoding, offset, size, decimals, byte_order, append=" u ")
    points = (point, DataPointDef(2, "Broken", "Int24", 0, 3)) if broken else (point,)
    data = b"\xa5" * offset + encode_value(value, encoding, byte_order, decimals) + b"\x5a"
    frame = modbus_frame(1, 3, data) if frame_format == "modbus-rtu" else data
    message = sensor_message(frame_hex(frame, spaced=spaced))
    results = decode(message, probe_controller(points, frame_format))
    decoded = values(results)["V"]
    if encoding == "Float32":
        assert decoded == pytest.approx(value, rel=1e-6, abs=1e-38)
    elif encoding == "Float64":
        assert decoded == pytest.approx(value, rel=1e-12, abs=1e-300)
    else:
        assert decoded == value
    assert results[0].unit == "u"
    assert errors(results) == ([(BAD_REGISTRY, "Broken")] if broken else [])


def test_out_of_range_spoils_only_its_point() -> None:
    points = (*ENV_S1, DataPointDef(9, "Far", "Uint32", 4, 4, 0))
    results = decode(sensor_message(GOLDEN), probe_controller(points))
    assert values(results) == {"Temperature": 25.0, "Humidity": 50.0, "CO2": 400.0}
    assert errors(results) == [(OUT_OF_RANGE, "Far")]


def test_short_frame_for_template_reports_each_missing_point() -> None:
    results = decode(sensor_message(modbus_frame(1, 3, b"\x09\xc4")), probe_controller(ENV_S1))
    assert values(results) == {"Temperature": 25.0}
    assert errors(results) == [(OUT_OF_RANGE, "Humidity"), (OUT_OF_RANGE, "CO2")]


@pytest.mark.parametrize(("encoding", "size"), [("Float32", 4), ("Float64", 8)])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_bad_value(encoding: str, size: int, bad: float) -> None:
    points = (
        DataPointDef(1, "F", encoding, 0, size, 1),
        DataPointDef(2, "N", "Uint16", size, 2, 0),
    )
    data = encode_value(bad, encoding) + b"\x00\x2a"
    results = decode(sensor_message(modbus_frame(1, 3, data)), probe_controller(points))
    assert values(results) == {"N": 42.0}
    assert errors(results) == [(BAD_VALUE, "F")]


@pytest.mark.parametrize(
    "point",
    [
        DataPointDef(1, "P", "Int24", 0, 3),
        DataPointDef(1, "P", None, 0, 2),
        DataPointDef(1, "P", "Int16", 0, 4),
        DataPointDef(1, "P", "Float32", 0, 2),
        DataPointDef(1, "P", "Int32", 0, 4, byte_order="ACBD"),
        DataPointDef(1, "P", "Int8", 0, 1, byte_order="big"),
        DataPointDef(1, "P", "Int16", -1, 2),
        DataPointDef(1, "P", "Int16", 0, 2, decimals=-1),
        DataPointDef(1, "P", "Int16", 0, 2, decimals=400),
    ],
)
def test_impossible_definitions_are_bad_registry(point: DataPointDef) -> None:
    error = compile_point(point)
    assert isinstance(error, DecodeError) and (error.reason, error.label) == (BAD_REGISTRY, "P")
    results = decode(sensor_message(GOLDEN), probe_controller((*ENV_S1, point)))
    assert len(values(results)) == 3
    assert errors(results) == [(BAD_REGISTRY, "P")]


def test_names_are_case_insensitive_and_byte_order_defaults() -> None:
    points = (
        DataPointDef(1, "A", "int16", 0, 2, 2, byte_order="badc"),
        DataPointDef(2, "B", "UINT16", 2, 2, 0, byte_order=""),
    )
    results = decode(
        sensor_message(modbus_frame(1, 3, b"\xc4\x09\x00\x07")), probe_controller(points)
    )
    assert values(results) == {"A": 25.0, "B": 7.0}


def test_unknown_frame_format_is_bad_registry() -> None:
    results = decode(sensor_message(GOLDEN), probe_controller(ENV_S1, "modbus-ascii"))
    assert errors(results) == [(BAD_REGISTRY, None)]


def test_raw_frames_count_offsets_from_the_first_byte() -> None:
    results = decode(sensor_message("09C4 1388 0190"), probe_controller(ENV_S1, "raw"))
    assert values(results) == {"Temperature": 25.0, "Humidity": 50.0, "CO2": 400.0}


def test_overlapping_and_unordered_points_decode() -> None:
    points = (
        DataPointDef(1, "Low", "Uint8", 1, 1),
        DataPointDef(2, "Word", "Uint16", 0, 2),
        DataPointDef(3, "High", "Uint8", 0, 1),
    )
    results = decode(sensor_message(modbus_frame(1, 3, b"\x12\x34")), probe_controller(points))
    assert values(results) == {"Low": 0x34, "Word": 0x1234, "High": 0x12}


def test_uint64_beyond_2_53_loses_precision_only() -> None:
    point = DataPointDef(1, "Big", "Uint64", 0, 8)
    data = b"\xff" * 8
    results = decode(sensor_message(modbus_frame(1, 3, data)), probe_controller((point,)))
    assert values(results) == {"Big": float(2**64 - 1)}


def test_encode_rejects_values_that_do_not_fit() -> None:
    for value, encoding in [(300, "Uint8"), (-1, "Uint16"), (1e39, "Float32")]:
        with pytest.raises(ValueError):
            encode_value(value, encoding)
    with pytest.raises(ValueError):
        encode_value(1, "Int24")
    with pytest.raises(ValueError):
        encode_value(1, "Int16", "ABDC")


def test_frame_hex_forms() -> None:
    frame = bytes.fromhex(GOLDEN)
    assert frame_hex(frame, spaced=True) == GOLDEN
    assert frame_hex(frame) == GOLDEN.replace(" ", "")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEF xg", max_size=60))
def test_any_hex_text_gives_readings_or_errors(text: str) -> None:
    for item in decode(sensor_message(text), probe_controller(ENV_S1)):
        assert isinstance(item, Reading) or item.reason in (
            BAD_HEX,
            BAD_FRAME,
            BAD_CRC,
            MODBUS_EXCEPTION,
            OUT_OF_RANGE,
        )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.sampled_from(["modbus-rtu", "raw"]))
def test_any_frame_bytes_give_readings_or_errors(frame: bytes, frame_format: str) -> None:
    points = tuple(
        DataPointDef(n, encoding, encoding, n % 5, ENCODINGS[encoding][1], n % 3, order)
        for n, (encoding, order) in enumerate(zip(sorted(ENCODINGS), BYTE_ORDERS * 3, strict=False))
    )
    for item in decode(sensor_message(frame), probe_controller(points, frame_format)):
        assert not caught_bug(item), item
