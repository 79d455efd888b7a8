"""The one sizing rule of the MQTT broker: memory for the queues it is allowed to hold.

While ingest is down, Mosquitto queues every QoS 1 message for ingest's persistent sessions (the
shared subscription spreads them round-robin, so each message sits in exactly one session's
queue). ``max_queued_bytes`` limits the *payload* bytes of one session's queue; the broker's memory
per queued message is the payload plus a fixed overhead (the message's store entry, its topic,
the publisher's client id and username, the session's queue entry, allocator rounding)::

    memory limit >= sessions x max_queued_bytes x OVERHEAD_FACTOR + BASE_BYTES

with ``max_queued_messages <= max_queued_bytes / REFERENCE_PAYLOAD_BYTES``. The factor is
``1 + overhead per message / REFERENCE_PAYLOAD_BYTES`` (rounded up); the message cap makes it hold
for every payload size: a queue of smaller payloads reaches the message cap first, one of larger
payloads has less overhead per byte.

``sessions`` is ingest's ``F2_INGEST_PARTITIONS`` (plus the sessions of an earlier partition count
until they are drained or expire). Measured with ``python -m tools.mosquitto_overhead`` on
2026-12-07, Mosquitto 2.0.11 (Debian 12), 4 offline sessions of the shared subscription filled
to 90 % of ``max_queued_bytes`` 32 MiB with QoS 1 messages:

- the simulator's messages (payloads 56-123 bytes, mean 73.4; topics of ~50 characters): 1,646,435
  messages, 120.8 MB of payload, RSS +781 MB: factor 6.47, 401.1 bytes per message besides the
  payload;
- 64-byte payloads (the reference below), the same topics: 1,887,437 messages, RSS +878 MB:
  factor 7.27, 401.4 bytes per message;
- 256-byte payloads: 471,860 messages, RSS +310 MB: factor 2.57, 401.5 bytes per message;
- with persistence on (``--persistence``, saving as production does): the same as without.

The overhead per message is constant (401 bytes), so the factor is 1 + 401/payload: 7.27 at the
64-byte reference payload, which ``OVERHEAD_FACTOR`` rounds up to 7.5. ``BASE_BYTES`` is the broker
without queues (9 MB measured idle) plus room for connections, TLS buffers and the persistence
file's save.

Used by ``make deploy-check`` (``tools/deploy_check.py``: the compose broker's memory limit against
``deploy/mosquitto/mosquitto.conf``) and by the local stack (``ops/stack/services.py`` writes what
its queue settings may take into the generated ``mosquitto.conf``).
"""

from __future__ import annotations

import re

MIB = 1 << 20
OVERHEAD_BYTES_PER_MESSAGE = 401  # measured, see above
REFERENCE_PAYLOAD_BYTES = 64  # below the simulator's mean payload (73 bytes); its smallest is 56
OVERHEAD_FACTOR = 7.5  # 1 + 401/64 = 7.27, rounded up
BASE_BYTES = 256 * MIB
MEASURED = "2026-12-07, Mosquitto 2.0.11, tools/mosquitto_overhead.py"

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def required_memory(sessions: int, max_queued_bytes: int) -> int:
    """Bytes of memory the broker needs when ``sessions`` queues hold ``max_queued_bytes``."""
    return int(sessions * max_queued_bytes * OVERHEAD_FACTOR) + BASE_BYTES


def per_session_memory(max_queued_bytes: int) -> int:
    """Bytes of memory one full session queue takes (the rule without its base)."""
    return int(max_queued_bytes * OVERHEAD_FACTOR)


def max_messages_for(max_queued_bytes: int) -> int:
    """The largest ``max_queued_messages`` the rule allows with ``max_queued_bytes``."""
    return max_queued_bytes // REFERENCE_PAYLOAD_BYTES


def parse_size(text: str | int) -> int:
    """Bytes of a compose/Kubernetes-style size: ``1536m``, ``2g``, ``2Gi``, ``512MiB``, 1024."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", str(text), re.I)
    if not match:
        raise ValueError(f"not a size: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def sizing_problems(
    where: str, memory_limit: int, sessions: int, max_queued_bytes: int, max_queued_messages: int
) -> list[str]:
    """What breaks the rule: a memory limit below what the queues need, a message cap that lets
    small payloads take more than the factor allows, or queues without a byte limit."""
    problems = []
    if max_queued_bytes <= 0:
        return [f"{where}: max_queued_bytes is not set (the broker's memory is unbounded)"]
    needed = required_memory(sessions, max_queued_bytes)
    if memory_limit < needed:
        problems.append(
            f"{where}: memory limit {memory_limit // MIB} MiB < {needed // MIB} MiB needed by "
            f"{sessions} sessions x max_queued_bytes {max_queued_bytes // MIB} MiB x "
            f"{OVERHEAD_FACTOR} + {BASE_BYTES // MIB} MiB (ops/stack/broker_sizing.py)"
        )
    cap = max_messages_for(max_queued_bytes)
    if max_queued_messages <= 0 or max_queued_messages > cap:
        problems.append(
            f"{where}: max_queued_messages {max_queued_messages or 'unlimited'} > {cap} "
            f"(max_queued_bytes / {REFERENCE_PAYLOAD_BYTES}): small payloads would take more "
            "memory than the rule allows"
        )
    return problems


def conf_limits(text: str) -> dict[str, int]:
    """``max_queued_bytes`` and ``max_queued_messages`` of a mosquitto.conf (when unset,
    Mosquitto's defaults: no byte limit, 1000 messages)."""
    limits = {"max_queued_bytes": 0, "max_queued_messages": 1000}
    for key in limits:
        found = re.findall(rf"^\s*{key}\s+(\d+)\s*$", text, re.M)
        if found:
            limits[key] = int(found[-1])
    return limits
