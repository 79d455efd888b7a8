"""The simulator's command line, shared by ``python -m simulator`` and ``f2 simulate``.

Builds the fleet (seed fleet, or ``--controllers N`` generated from ``--seed``), registers it when
asked, runs it (:func:`simulator.load.run_fleet`) and writes the report, also after SIGTERM or
Ctrl-C. ``--duration 0`` with ``--register`` only registers.

MQTT login: the stack's test-rig user (``F2_SIM_USERNAME``/``F2_SIM_PASSWORD``, one connection per
worker) by default. ``--device-credentials``: every controller connects as its own device user
(username = MAC, one connection per controller), with the password from ``python -m ops.cli
devices register MAC --json`` (run once per controller; creates the account if missing, else
returns its password) or, with ``--credentials-file FILE``, from a JSON object mapping each MAC to
its password. The broker then refuses a controller's messages on other MACs' topics (the
``unknown_device`` faults): they are counted as refused, not in the report.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from schemas.settings import Config, SettingsError, load_config
from simulator.credentials import CredentialsError, read_credentials_file, register_devices
from simulator.fleet import Fleet, generate_fleet, seed_fleet
from simulator.load import RunConfig, run_fleet, stop_on_signals_until_exit
from simulator.registry import BATCH_CONTROLLERS, register_fleet
from simulator.report import build_report, utc_now, write_report

log = logging.getLogger("f2.simulator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's options."""
    parser.add_argument(
        "--controllers", type=int, help="generate N controllers (default: the seed fleet)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated fleet")
    parser.add_argument(
        "--interval", type=float, default=30.0, help="seconds between frames of one sensor"
    )
    parser.add_argument("--rate", type=float, help="aggregate target rate in messages/s")
    parser.add_argument("--duration", type=float, help="seconds to run (default: until stopped)")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument("--register", action="store_true", help="write the fleet into the registry")
    parser.add_argument("--faults", type=float, default=0.0, help="fraction of bad messages")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--processes", type=int, default=1, help="publishing processes")
    parser.add_argument(
        "--device-credentials",
        action="store_true",
        help="connect each controller as its own MQTT user (MAC), registered via"
        " `f2 devices register MAC --json` unless --credentials-file is given",
    )
    parser.add_argument(
        "--credentials-file",
        type=Path,
        help="JSON object MAC -> password of the device users (implies --device-credentials)",
    )


def build_fleet(args: argparse.Namespace) -> Fleet:
    """The fleet the options ask for."""
    if args.controllers is None:
        return seed_fleet(args.seed)
    return generate_fleet(args.controllers, args.seed)


def config_from(args: argparse.Namespace) -> RunConfig:
    """The run configuration the options ask for."""
    if not 0.0 <= args.faults <= 1.0:
        raise SystemExit("--faults must be between 0 and 1")
    if args.processes < 1 or args.interval <= 0 or (args.rate is not None and args.rate <= 0):
        raise SystemExit("--processes, --interval and --rate must be positive")
    return RunConfig(
        qos=args.qos,
        interval=args.interval,
        rate=args.rate,
        duration=args.duration,
        faults=args.faults,
        processes=args.processes,
        seed=args.seed,
    )


def device_credentials(args: argparse.Namespace, fleet: Fleet) -> dict[str, str] | None:
    """MAC → password of every controller when the options ask for device users, else None."""
    if args.credentials_file is None and not args.device_credentials:
        return None
    try:
        if args.credentials_file is not None:
            credentials = read_credentials_file(args.credentials_file, fleet.macs)
        else:
            credentials = register_devices(fleet.macs)
    except CredentialsError as exc:
        raise SystemExit(f"device credentials: {exc}") from exc
    print(f"device credentials: {len(credentials)} controllers, one connection each", flush=True)
    return credentials


def run(args: argparse.Namespace, pipeline: Config) -> int:
    """Run the simulator as the options say, against ``pipeline``'s broker and registry; the
    process exit code."""
    config = config_from(args)
    fleet = build_fleet(args)
    settings = pipeline.connections
    started_at = utc_now()
    print(f"fleet: {len(fleet.controllers)} controllers, seed {fleet.seed}", flush=True)
    if args.register:
        result = register_fleet(settings.params_dsn, fleet, progress=_registering(fleet))
        added = ", ".join(f"{table} {n}" for table, n in result.inserted.items() if n)
        print(f"registered: {added or 'nothing new'}", flush=True)
        for mismatch in result.mismatches:
            log.warning(mismatch, extra={"stage": "simulator", "reason": "registry_mismatch"})
    credentials = device_credentials(args, fleet)
    if args.register and args.duration == 0:
        return 0
    # A stop request that lands after the run ended (its duration up) but before the report is
    # written must not kill the process: the run having ended already honours it.
    stop_on_signals_until_exit()
    summary = run_fleet(config, fleet, settings, _say, credentials)
    report = build_report(summary.tally, fleet.macs, started_at)
    if args.report is not None:
        write_report(report, args.report)
        print(f"report: {args.report}", flush=True)
    return 1 if summary.errors else 0


def _say(line: str) -> None:
    print(line, flush=True)


def _registering(fleet: Fleet) -> Callable[[int, int], None] | None:
    """A progress printer for registering ``fleet`` if it takes more than one batch."""
    if len(fleet.controllers) <= BATCH_CONTROLLERS:
        return None
    began = time.monotonic()

    def progress(done: int, total: int) -> None:
        elapsed = time.monotonic() - began
        print(f"registering: {done}/{total} controllers in {elapsed:.1f} s", flush=True)

    return progress


def main(argv: list[str] | None = None) -> int:
    """``python -m simulator``."""
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        pipeline = load_config()
    except SettingsError as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    return run(args, pipeline)


if __name__ == "__main__":
    sys.exit(main())
