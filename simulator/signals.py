"""Realistic sensor values: a daily temperature cycle with noise, humidity that falls as the air
warms, CO2 that follows occupancy, mains voltage around 230 V and a load current with a day profile.

Every value is clamped to :data:`RANGES` (bounds are round numbers, so rounding to a data point's
decimals stays inside them); the tests check decoded frames against the same table.
"""

from __future__ import annotations

import math
import random

DAY_S = 86400.0
RANGES: dict[str, tuple[float, float]] = {
    "temperature": (10.0, 35.0),
    "humidity": (15.0, 85.0),
    "co2": (380.0, 2500.0),
    "voltage": (200.0, 255.0),
    "current": (0.0, 16.0),
}


def clamp(kind: str, value: float) -> float:
    """``value`` limited to the range of signal ``kind``."""
    low, high = RANGES[kind]
    return min(high, max(low, value))


def day_fraction(t: float, phase_h: float) -> float:
    """The time of day of epoch ``t`` (shifted by ``phase_h`` hours) as a fraction 0..1."""
    return ((t / 3600.0 + phase_h) % 24.0) / 24.0


class SignalSource:
    """The signals of one sensor, with their own noise generator and slow-moving state.

    ``sample(t)`` gives every signal's value at epoch seconds ``t``; the state (CO2 level,
    voltage drift) evolves with each sample, so consecutive samples look like a real series.
    """

    def __init__(self, seed: str, phase_h: float = 0.0) -> None:
        self._rng = random.Random(seed)
        self._phase_h = phase_h
        self._base_temp = self._rng.uniform(19.0, 24.0)
        self._co2 = self._rng.uniform(420.0, 600.0)
        self._volt_drift = 0.0
        self._base_load = self._rng.uniform(0.5, 3.0)

    def sample(self, t: float) -> dict[str, float]:
        """Every signal's value at epoch ``t``."""
        rng = self._rng
        day = day_fraction(t, self._phase_h)
        warm = math.sin(2 * math.pi * (day - 0.375))  # coolest around 03:00, warmest 15:00
        occupied = 1.0 if 0.33 <= day <= 0.75 else 0.0
        temperature = self._base_temp + 3.5 * warm + rng.gauss(0, 0.15)
        humidity = 50.0 - 9.0 * warm + rng.gauss(0, 0.8)
        target = 450.0 + 650.0 * occupied
        self._co2 += 0.05 * (target - self._co2) + rng.gauss(0, 8.0)
        self._volt_drift = 0.9 * self._volt_drift + rng.gauss(0, 0.6)
        voltage = 230.0 + self._volt_drift + (-12.0 if rng.random() < 0.01 else 0.0)
        current = self._base_load * (1.0 + 2.5 * occupied) + abs(rng.gauss(0, 0.2))
        return {
            "temperature": clamp("temperature", temperature),
            "humidity": clamp("humidity", humidity),
            "co2": clamp("co2", self._co2),
            "voltage": clamp("voltage", voltage),
            "current": clamp("current", current),
        }
