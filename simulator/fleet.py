"""The simulated fleet: controllers, the mode of each connector, and the sensors on their pins.

The default fleet is the seed fleet of docs/PROTOCOL.md §4 (the three seed controllers with an
ENV-S1 on J1 pin 1, a PM-100 on J2 pin 2 and an ENV-S1 on J4 pin 3; J3 runs access control or
alarm). :func:`generate_fleet` builds a fleet of any size from a seed: the same seed always gives
the same MACs, modes, sensors and time zones. Templates and natural keys (serial numbers) match the
seed migration, so registering the seed fleet changes nothing.

:func:`controller_entry` gives the registry entry a fleet controller implies, which is what the
decoding core needs to decode the simulator's messages without a database.
"""

from __future__ import annotations

import random

import msgspec

from schemas.records import ControllerEntry, DataPointDef, SensorEntry
from schemas.topics import ACCESS_MODE, ALARM_MODE, SENSOR_MODE

SEED_MACS = ("e4fd45f654be", "abc123def456", "123456abcdef")
CONTROLLER_MODEL = "F2-rev1"
MAX_SENSOR_PINS = 6
ZONES = ("UTC", "UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
MODE_WEIGHTS = ((SENSOR_MODE, 5), (ACCESS_MODE, 3), (ALARM_MODE, 2))


class PointSpec(msgspec.Struct, frozen=True):
    """A data point of a simulated template and the signal that feeds it."""

    label: str
    icon: str
    encoding: str
    offset: int
    length: int
    decimals: int
    append: str
    signal: str
    byte_order: str = "ABCD"


class TemplateSpec(msgspec.Struct, frozen=True):
    """A device template as the registry holds it (natural key: ``model``)."""

    name: str
    model: str
    description: str
    device_type: str
    frame_format: str = "modbus-rtu"
    points: tuple[PointSpec, ...] = ()


CONTROLLER_TEMPLATE = TemplateSpec(
    "F2 Controller",
    CONTROLLER_MODEL,
    "F2 Smart Controller, four 24-terminal connectors",
    "Controller",
)
TEMPLATES: dict[str, TemplateSpec] = {
    "ENV-S1": TemplateSpec(
        "Environmental Sensor",
        "ENV-S1",
        "RS-485 temperature, humidity and CO2 sensor",
        "Sensor",
        points=(
            PointSpec("Temperature", "thermometer", "Int16", 0, 2, 2, " °C", "temperature"),
            PointSpec("Humidity", "humidity", "Uint16", 2, 2, 2, " %", "humidity"),
            PointSpec("CO2", "co2", "Uint16", 4, 2, 0, " ppm", "co2"),
        ),
    ),
    "PM-100": TemplateSpec(
        "Power Monitor",
        "PM-100",
        "RS-485 mains voltage and current monitor",
        "Sensor",
        points=(
            PointSpec("Voltage", "voltage", "Uint16", 0, 2, 1, " V", "voltage"),
            PointSpec("Current", "current", "Int16", 2, 2, 3, " A", "current"),
        ),
    ),
    "PM-200": TemplateSpec(
        "Power Monitor (float registers)",
        "PM-200",
        "RS-485 mains monitor with IEEE 754 registers, word-swapped (simulator template)",
        "Sensor",
        points=(
            PointSpec("Voltage", "voltage", "Float32", 0, 4, 0, " V", "voltage", "CDAB"),
            PointSpec("Current", "current", "Float32", 4, 4, 0, " A", "current", "CDAB"),
            PointSpec("Temperature", "thermometer", "Int32", 8, 4, 2, " °C", "temperature", "DCBA"),
        ),
    ),
}


class Sensor(msgspec.Struct, frozen=True):
    """An RS-485 sensor on one pin of a sensor-mode connector."""

    pin: int
    model: str
    address: int = 1

    def serial(self, mac: str, connector: int) -> str:
        """The sensor's serial number, its natural key in the registry (as the seed uses)."""
        return f"{mac}-J{connector}-{self.pin}"


class Connector(msgspec.Struct, frozen=True):
    """One connector ``J<number>`` in one mode; ``sensors`` only in sensor mode."""

    number: int
    mode: str
    sensors: tuple[Sensor, ...] = ()

    @property
    def name(self) -> str:
        return f"J{self.number}"


class Controller(msgspec.Struct, frozen=True):
    """One F2 Smart Controller: MAC, clock zone and its four connectors."""

    mac: str
    connectors: tuple[Connector, ...]
    timezone: str = "UTC"

    @property
    def serial(self) -> str:
        """The controller's serial number (as the seed migration writes it)."""
        return f"F2-{self.mac}"


class Fleet(msgspec.Struct, frozen=True):
    """The simulated controllers plus MACs that are deliberately never registered (faults)."""

    controllers: tuple[Controller, ...]
    ghost_macs: tuple[str, ...]
    seed: int

    @property
    def macs(self) -> list[str]:
        return [controller.mac for controller in self.controllers]

    def models(self) -> list[str]:
        """The sensor templates this fleet uses, in a stable order."""
        used = {
            sensor.model
            for controller in self.controllers
            for connector in controller.connectors
            for sensor in connector.sensors
        }
        return sorted(used)


def seed_fleet(seed: int = 0) -> Fleet:
    """The seed fleet of docs/PROTOCOL.md §4; J3 alternates between access control and alarm."""
    controllers = []
    for index, mac in enumerate(SEED_MACS):
        controllers.append(
            Controller(
                mac,
                (
                    Connector(1, SENSOR_MODE, (Sensor(1, "ENV-S1"),)),
                    Connector(2, SENSOR_MODE, (Sensor(2, "PM-100"),)),
                    Connector(3, ACCESS_MODE if index % 2 == 0 else ALARM_MODE),
                    Connector(4, SENSOR_MODE, (Sensor(3, "ENV-S1"),)),
                ),
            )
        )
    return Fleet(tuple(controllers), ghost_macs(seed, 2, set(SEED_MACS)), seed)


def generate_fleet(count: int, seed: int = 0) -> Fleet:
    """``count`` controllers with deterministic MACs, modes, sensors and zones from ``seed``.

    MACs are locally administered (first byte ``0x02``) so they never collide with real or seed
    controllers. Every controller has at least one sensor-mode connector.
    """
    rng = random.Random(f"f2-fleet-{seed}")
    macs: list[str] = []
    taken: set[str] = set(SEED_MACS)
    while len(macs) < count:
        mac = "02" + f"{rng.getrandbits(40):010x}"
        if mac not in taken:
            taken.add(mac)
            macs.append(mac)
    modes, weights = zip(*MODE_WEIGHTS, strict=True)
    controllers = []
    for mac in macs:
        chosen = rng.choices(modes, weights, k=4)
        if SENSOR_MODE not in chosen:
            chosen[0] = SENSOR_MODE
        connectors = tuple(
            Connector(number, mode, _sensors(rng) if mode == SENSOR_MODE else ())
            for number, mode in enumerate(chosen, start=1)
        )
        controllers.append(Controller(mac, connectors, rng.choice(ZONES)))
    return Fleet(tuple(controllers), ghost_macs(seed, 2, taken), seed)


def _sensors(rng: random.Random) -> tuple[Sensor, ...]:
    """One to three sensors on distinct pins, with Modbus addresses 1..247."""
    pins = sorted(rng.sample(range(1, MAX_SENSOR_PINS + 1), rng.randint(1, 3)))
    models = sorted(TEMPLATES)
    return tuple(Sensor(pin, rng.choice(models), rng.randint(1, 247)) for pin in pins)


def ghost_macs(seed: int, count: int, taken: set[str]) -> tuple[str, ...]:
    """MACs that the simulator never registers (prefix ``0e``), for ``unknown_device`` faults."""
    rng = random.Random(f"f2-ghosts-{seed}")
    out: list[str] = []
    while len(out) < count:
        mac = "0e" + f"{rng.getrandbits(40):010x}"
        if mac not in taken and mac not in out:
            out.append(mac)
    return tuple(out)


def point_def(spec: PointSpec, datapoint_id: int = 0) -> DataPointDef:
    """The decoder's view of a simulated data point."""
    return DataPointDef(
        datapoint_id,
        spec.label,
        spec.encoding,
        spec.offset,
        spec.length,
        spec.decimals,
        spec.byte_order,
        spec.append,
        whole_number=spec.decimals == 0,
        data_format="number",
    )


def controller_entry(controller: Controller, controller_id: int = 0) -> ControllerEntry:
    """The registry entry this controller implies (ids are placeholders unless given)."""
    sensors: dict[str, SensorEntry] = {}
    for connector in controller.connectors:
        for sensor in connector.sensors:
            template = TEMPLATES[sensor.model]
            sensors[f"{connector.number}:{sensor.pin}"] = SensorEntry(
                0,
                0,
                template.model,
                template.frame_format,
                tuple(point_def(point) for point in template.points),
            )
    return ControllerEntry(controller.mac, controller_id, controller.timezone, 0, sensors)
