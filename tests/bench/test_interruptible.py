"""A benchmark started with SIGINT ignored (``nohup … &`` from a script) still starts flows that
stop cleanly on SIGINT (``bench.common.interruptible_children``)."""

from __future__ import annotations

import signal
import subprocess
import sys

CHILD = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"


def grandchild_handles_sigint(call: bool) -> str:
    """What a process started by an ignoring-SIGINT parent sees: True = KeyboardInterrupt."""
    parent = (
        "import subprocess, sys\n"
        "from bench.common import interruptible_children\n"
        + ("interruptible_children()\n" if call else "")
        + f"print(subprocess.run([sys.executable, '-c', {CHILD!r}], capture_output=True,"
        " text=True).stdout.strip())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", parent],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    return result.stdout.strip()


def test_children_of_a_process_started_with_sigint_ignored_handle_it() -> None:
    assert grandchild_handles_sigint(call=False) == "False"  # the inherited condition
    assert grandchild_handles_sigint(call=True) == "True"
