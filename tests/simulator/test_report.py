import msgspec

from simulator.messages import Outgoing
from simulator.report import Report, Tally, build_report, write_report


def test_report_fields_are_exactly_the_issues():
    assert Report.__struct_fields__ == (
        "published",
        "expected_readings",
        "expected_events",
        "expected_errors",
        "controllers",
        "started_at",
        "finished_at",
    )


def test_tallies_add_and_merge(tmp_path):
    messages = [
        Outgoing("t", b"", readings=3),
        Outgoing("t", b"", events=2),
        Outgoing("t", b"", error="bad_crc"),
        Outgoing("t", b"", error="bad_crc"),
        Outgoing("t", b"", error="bad_topic"),
    ]
    first, second = Tally(), Tally()
    for message in messages:
        first.add(message)
    for message in messages[:3]:
        second.add(message)
    second.rejected = 4
    first.merge(second)
    assert (first.published, first.readings, first.events) == (8, 6, 4)
    assert first.errors == {"bad_crc": 3, "bad_topic": 1}
    assert first.rejected == 4
    report = build_report(first, ["e4fd45f654be"], "2026-01-01T00:00:00.000Z")
    path = tmp_path / "report.json"
    write_report(report, path)
    loaded = msgspec.json.decode(path.read_bytes(), type=Report)
    assert loaded == report
    assert loaded.published == sum(1 for _ in messages) + 3
    assert sum(loaded.expected_errors.values()) == 4
