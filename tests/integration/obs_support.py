"""Helpers of the observability tests: flows with their own ports and topics, a health API, and
the metric names a live ``/metrics`` offers (for checking dashboard and alert queries)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from connectors.recovery_dir import prepare_recovery
from ops.stack.procs import port_open, terminate, wait_until
from schemas.settings import Settings, project_root

ROOT = project_root() or Path.cwd()
SEED_MACS = ("e4fd45f654be", "abc123def456", "123456abcdef")
PROMQL_WORDS = frozenset(
    """sum min max avg group stddev stdvar count count_values bottomk topk quantile by without on
    ignoring group_left group_right bool and or unless offset rate irate increase delta idelta
    deriv predict_linear histogram_quantile clamp_min clamp_max clamp abs absent absent_over_time
    vector scalar time label_replace label_join sort sort_desc avg_over_time max_over_time
    min_over_time sum_over_time count_over_time last_over_time changes resets round ceil floor
    inf nan le humanize""".split()
)
BUILTIN_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds"})


def create_topics(settings: Settings, names: list[str], partitions: int = 4) -> None:
    """Create ``names`` on the stack's Kafka where missing."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [NewTopic(n, num_partitions=partitions) for n in names if n not in existing]
    for future in admin.create_topics(wanted).values() if wanted else []:
        future.result(30)


class Proc:
    """A child process with its output in ``log``; stopped with its process group."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                start_new_session=True,
            )  # fmt: skip

    def stop(self) -> None:
        terminate(self.proc.pid, timeout_s=15)
        self.proc.wait(5)


def start_flow(module: str, env: dict[str, str], workdir: Path, port: int) -> Proc:
    """``python -m bytewax.run`` of ``module`` with its API on ``port`` (recovery for decode)."""
    flags = ["-s", "1"]
    if module == "dataflows.decode":
        recovery = workdir / "recovery"
        prepare_recovery(recovery, 4, None)
        flags += ["-r", str(recovery), "-b", "10"]
    cache = workdir / f"{module}-api"
    cache.mkdir(exist_ok=True)
    flow_env = {
        **env,
        "BYTEWAX_DATAFLOW_API_ENABLED": "1",
        "BYTEWAX_DATAFLOW_API_PORT": str(port),
        "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(cache),
        "PYTHONPATH": str(ROOT),
    }
    argv = [sys.executable, "-m", "bytewax.run", module, *flags]
    return Proc(argv, flow_env, workdir / f"{module}.log", ROOT)


def start_health(env: dict[str, str], workdir: Path, port: int) -> Proc:
    """``f2 health serve`` on ``port``; waits until it answers."""
    argv = [sys.executable, "-m", "ops.cli", "health", "serve", "--port", str(port)]
    proc = Proc(argv, {**env, "PYTHONPATH": str(ROOT)}, workdir / "health.log", ROOT)
    assert wait_until(lambda: port_open(port), 30), proc.log.read_text()
    return proc


def get_text(url: str, timeout: float = 30) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def get_json(url: str, timeout: float = 60) -> tuple[int, dict]:
    """(HTTP status, JSON body), also for 503."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples ``name`` in exposition ``text`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def exposed_names(text: str) -> set[str]:
    """Every series name a PromQL query may use against ``text`` (samples, and the suffixes of
    each ``# TYPE``, so a labelled histogram with no observation yet still counts)."""
    names = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created", "_gsum", "_gcount"),
        "summary": ("_sum", "_count", "_created"),
        "gauge": ("",),
        "untyped": ("",),
    }
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            names.update(name.removesuffix("_total") + s for s in suffixes.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def promql_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (functions, keywords, labels, durations,
    strings and Grafana variables removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word in PROMQL_WORDS or re.fullmatch(r"\d+\w*", word):
            continue
        names.add(word)
    return names


def dashboard_queries(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """Per dashboard file: ("promql"|"sql", query) of every panel target and template variable."""
    out: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(folder.glob("*.json")):
        board = json.loads(path.read_text())
        queries = []
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if "expr" in target:
                    queries.append(("promql", target["expr"]))
                if "rawSql" in target:
                    queries.append(("sql", target["rawSql"]))
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                kind = "sql" if "postgres" in variable["datasource"]["type"] else "promql"
                queries.append((kind, variable["query"]))
        out[path.name] = queries
    return out


def rule_queries(folder: Path) -> tuple[list[tuple[str, str]], set[str]]:
    """(rule name, expr) of every alert and recording rule, and the recorded series names.

    Reads the rule files' own simple layout (``- alert:``/``- record:`` then ``expr:`` inline or
    as a ``>-`` block): PyYAML is not a project dependency, and promtool checks the YAML itself.
    """
    exprs, recorded = [], set()
    for path in sorted(folder.glob("*.yml")):
        lines = path.read_text().splitlines()
        name = ""
        for index, line in enumerate(lines):
            head = re.match(r"\s*- (alert|record): (\S+)", line)
            if head:
                name = head.group(2)
                if head.group(1) == "record":
                    recorded.add(name)
            found = re.match(r"(\s*)expr: ?(.*)", line)
            if not found:
                continue
            indent, value = len(found.group(1)), found.group(2)
            if value in (">-", ">", "|", "|-"):
                block = []
                for more in lines[index + 1 :]:
                    if more.strip() and len(more) - len(more.lstrip()) <= indent:
                        break
                    block.append(more.strip())
                value = " ".join(block)
            exprs.append((f"{path.name}:{name}", value))
    return exprs, recorded


def grafana_sql(sql: str) -> str:
    """A Grafana PostgreSQL query with its macros and variables replaced by plain SQL."""
    sql = re.sub(
        r"\$__timeGroupAlias\(([^,]+),[^)]*\)",
        r"to_timestamp(floor(extract(epoch from \1) / 60) * 60) AS time",
        sql,
    )
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", r"\1 > now() - interval '1 hour'", sql)
    sql = re.sub(r"'\$(\w+)'", "'x'", sql)
    return re.sub(r"\$(\w+)", "'x'", sql)
