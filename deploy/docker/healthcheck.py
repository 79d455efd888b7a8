"""Container healthcheck of the F2 image: the process's HTTP endpoint answers 200.

URL: ``F2_HEALTHCHECK_URL`` if set; else ``/metrics`` on ``BYTEWAX_DATAFLOW_API_PORT`` when it
is set (a dataflow); else the health API's ``/metrics`` on ``F2_HEALTH_PORT`` (default 8000).
It checks that the process serves, not that its dependencies are up (that is ``/health``'s job;
a container restart would not fix a database outage). Exit 0 healthy, 1 unhealthy.
"""

import os
import sys
import urllib.request


def url() -> str:
    if os.environ.get("F2_HEALTHCHECK_URL"):
        return os.environ["F2_HEALTHCHECK_URL"]
    port = os.environ.get("BYTEWAX_DATAFLOW_API_PORT") or os.environ.get("F2_HEALTH_PORT", "8000")
    return f"http://127.0.0.1:{port}/metrics"


def main() -> int:
    try:
        with urllib.request.urlopen(url(), timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {url()}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
