"""Scrape a process's ``/metrics`` and read sums, rates and quantiles out of the samples.

Pure helpers over the Prometheus text format (parsed by ``prometheus_client``): a
:class:`Scrape` is one reading of an endpoint; differences of two scrapes give rates and
histogram quantiles the way PromQL's ``rate`` and ``histogram_quantile`` compute them.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Mapping

import msgspec
from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, tuple[tuple[str, str], ...], float]


class Scrape(msgspec.Struct):
    """One scrape: when (epoch s), whether it answered, the error and the samples."""

    at: float
    ok: bool
    error: str = ""
    samples: list[Sample] = msgspec.field(default_factory=list)

    def total(self, name: str, **match: str) -> float:
        """Sum of the samples named ``name`` whose labels include ``match``."""
        return sum(
            value
            for sample, labels, value in self.samples
            if sample == name and _matches(labels, match)
        )

    def by_label(self, name: str, label: str, **match: str) -> dict[str, float]:
        """Sums of ``name`` grouped by the value of ``label``."""
        out: dict[str, float] = {}
        for sample, labels, value in self.samples:
            if sample == name and _matches(labels, match):
                key = dict(labels).get(label, "")
                out[key] = out.get(key, 0.0) + value
        return out

    def has(self, name: str) -> bool:
        return any(sample == name for sample, _, _ in self.samples)


def _matches(labels: tuple[tuple[str, str], ...], match: Mapping[str, str]) -> bool:
    if not match:
        return True
    found = dict(labels)
    return all(found.get(key) == value for key, value in match.items())


def parse(text: str, at: float) -> Scrape:
    """A :class:`Scrape` of Prometheus exposition ``text``."""
    samples = [
        (s.name, tuple(sorted(s.labels.items())), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]
    return Scrape(at, True, "", samples)


def scrape(url: str, timeout_s: float) -> Scrape:
    """GET ``url`` and parse it; a failure is a Scrape with ``ok=False`` and the error."""
    at = time.time()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return parse(response.read().decode("utf-8", "replace"), at)
    except (OSError, ValueError) as exc:
        return Scrape(at, False, f"{url}: {exc}")


def rate(old: Scrape, new: Scrape, name: str, **match: str) -> float:
    """Per-second increase of counter ``name`` between two scrapes (a reset counts from 0)."""
    span = new.at - old.at
    if span <= 0:
        return 0.0
    now, before = new.total(name, **match), old.total(name, **match)
    return (now - before if now >= before else now) / span


def rates_by(old: Scrape, new: Scrape, name: str, label: str) -> dict[str, float]:
    """:func:`rate` grouped by ``label``."""
    span = new.at - old.at
    if span <= 0:
        return {}
    before = old.by_label(name, label)
    out = {}
    for key, value in new.by_label(name, label).items():
        delta = value - before.get(key, 0.0)
        out[key] = (delta if delta >= 0 else value) / span
    return out


def merged(scrapes: list[Scrape], at: float | None = None) -> Scrape:
    """One scrape of several processes: the samples of those that answered (sums add up)."""
    answered = [s for s in scrapes if s.ok]
    samples = [sample for s in answered for sample in s.samples]
    when = at if at is not None else max((s.at for s in scrapes), default=time.time())
    return Scrape(when, bool(answered), "" if answered else "no process answered", samples)


Buckets = list[tuple[float, float]]


def buckets(old: Scrape, new: Scrape, histogram: str, **match: str) -> Buckets:
    """The cumulative buckets ``[(le, count)]`` of ``histogram``'s observations between two
    scrapes, sorted by bound (``increase(<histogram>_bucket[...])``)."""
    counts: dict[float, float] = {}
    for scrape_, sign in ((new, 1.0), (old, -1.0)):
        for bound, count in scrape_.by_label(f"{histogram}_bucket", "le", **match).items():
            edge = math.inf if bound == "+Inf" else float(bound)
            counts[edge] = counts.get(edge, 0.0) + sign * count
    return sorted(counts.items())


def quantile_of(cumulative: Buckets, q: float) -> float | None:
    """The ``q`` quantile of cumulative buckets, interpolated linearly inside the bucket that
    holds it (as PromQL's ``histogram_quantile``); None without observations. A quantile in the
    ``+Inf`` bucket is reported as the largest finite bound."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    lower_edge, lower_count = 0.0, 0.0
    for edge, count in cumulative:
        if count >= rank:
            if math.isinf(edge):
                return lower_edge
            if count == lower_count:
                return edge
            return lower_edge + (edge - lower_edge) * (rank - lower_count) / (count - lower_count)
        lower_edge, lower_count = edge, count
    return lower_edge


def share_at_or_below(cumulative: Buckets, bound: float) -> float | None:
    """Fraction of the observations ≤ ``bound`` (exact when ``bound`` is a bucket bound)."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    counts = [count for edge, count in cumulative if edge <= bound]
    return (counts[-1] if counts else 0.0) / cumulative[-1][1]


def quantile(old: Scrape, new: Scrape, q: float, histogram: str, **match: str) -> float | None:
    """``histogram_quantile(q, increase(<histogram>_bucket[...]))`` between two scrapes."""
    return quantile_of(buckets(old, new, histogram, **match), q)
