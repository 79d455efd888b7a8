"""The simulator's report (``--report FILE``): exactly what the broker accepted, and what the
pipeline must make of it.

Only messages the broker acknowledged with a success reason code are counted (at QoS 0, where
there is no acknowledgement, a message counts once it was written to the connection).
``expected_readings`` is the number of data points of the good sensor frames, ``expected_events``
the number of fields besides ``timestamp`` of the good event messages, ``expected_errors`` one per
message-level fault, by reason.

On the load-mode hot path a message is counted by its *kind*, a small integer from
:func:`simulator.messages.kind_index` naming its (readings, events, error) triple: a publisher
counts an acknowledgement with one list increment, and :meth:`Tally.add_kinds` turns those counts
into a tally.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec

from simulator.messages import KINDS, Outgoing


class Report(msgspec.Struct):
    """The JSON report of one simulator run."""

    published: int
    expected_readings: int
    expected_events: int
    expected_errors: dict[str, int]
    controllers: list[str]
    started_at: str
    finished_at: str


class Tally(msgspec.Struct):
    """Counts of acknowledged messages (and of refused ones, by fault reason: they are not in the
    report); workers send these to the parent, which merges them."""

    published: int = 0
    readings: int = 0
    events: int = 0
    errors: dict[str, int] = msgspec.field(default_factory=dict)
    rejected: int = 0
    refused: dict[str, int] = msgspec.field(default_factory=dict)

    def add(self, message: Outgoing) -> None:
        """Count one acknowledged message."""
        self.published += 1
        self.readings += message.readings
        self.events += message.events
        if message.error is not None:
            self.errors[message.error] = self.errors.get(message.error, 0) + 1

    def add_kinds(self, counts: list[int]) -> None:
        """Count acknowledged messages given as ``counts[kind] = messages`` (see
        :func:`simulator.messages.kind_index`)."""
        for index, count in enumerate(counts):
            if not count:
                continue
            readings, events, error = KINDS[index]
            self.published += count
            self.readings += readings * count
            self.events += events * count
            if error is not None:
                self.errors[error] = self.errors.get(error, 0) + count

    def refuse(self, message: Outgoing) -> None:
        """Count one message the broker refused, by its fault reason (``good`` if none)."""
        self.refuse_label(message.error or "good")

    def refuse_label(self, label: str) -> None:
        """Count one refused message under ``label`` (its fault reason, or ``good``)."""
        self.rejected += 1
        self.refused[label] = self.refused.get(label, 0) + 1

    def merge(self, other: Tally) -> None:
        """Add another tally's counts to this one."""
        self.published += other.published
        self.readings += other.readings
        self.events += other.events
        self.rejected += other.rejected
        for reason, count in other.errors.items():
            self.errors[reason] = self.errors.get(reason, 0) + count
        for label, count in other.refused.items():
            self.refused[label] = self.refused.get(label, 0) + count


def utc_now() -> str:
    """The current time as ISO 8601 UTC with a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_report(tally: Tally, controllers: list[str], started_at: str) -> Report:
    """The report for a finished run."""
    return Report(
        published=tally.published,
        expected_readings=tally.readings,
        expected_events=tally.events,
        expected_errors=dict(sorted(tally.errors.items())),
        controllers=controllers,
        started_at=started_at,
        finished_at=utc_now(),
    )


def write_report(report: Report, path: Path) -> None:
    """Write the report as indented JSON (atomically: a reader never sees half a file)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")
    partial.replace(path)
