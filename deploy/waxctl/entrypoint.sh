#!/bin/sh
# The F2 image as the image of Bytewax's Helm chart, which `waxctl dataflow deploy` renders
# (deploy/waxctl/README.md). The chart's StatefulSet runs `sh ./entrypoint.sh` in the image's
# working directory (/var/lib/f2) once its init containers wrote the hostfile and copied the
# ConfigMap's files (a launcher such as decode.py, or an unpacked tarball) into BYTEWAX_WORKDIR.
# This runs, in BYTEWAX_WORKDIR:
#
#   python -m bytewax.run $BYTEWAX_PYTHON_FILE_PATH -w W [-i ID -a PEERS] -s S [-r DIR -b B] [ARGS]
#
# The chart's variables and what becomes of them:
#   BYTEWAX_PYTHON_FILE_PATH     the flow file: a launcher (`flow = build_flow()` of dataflows.*)
#   BYTEWAX_WORKDIR              the working directory; also holds this process's scratch, .f2/
#   BYTEWAX_WORKERS_PER_PROCESS  -w (keep 1: worker threads share the GIL; scale with processes)
#   BYTEWAX_HOSTFILE_PATH        -a: the peers, one per line (BYTEWAX_ADDRESSES wins when set)
#   BYTEWAX_REPLICAS             must equal the number of peers (a half-written hostfile stops)
#   BYTEWAX_POD_NAME, BYTEWAX_STATEFULSET_NAME  -i: the pod's ordinal (process_id)
#   BYTEWAX_RECOVERY_DIRECTORY   -r: the partitions entrypoint-recovery.sh prepared (required
#                                then); their number becomes F2_DECODE_RECOVERY_PARTS when unset
#   BYTEWAX_SNAPSHOT_INTERVAL    -s, seconds (default 1: the flows' one-second epochs)
#   BYTEWAX_RECOVERY_BACKUP_INTERVAL  -b, seconds, with recovery (default 10)
#   BYTEWAX_DATAFLOW_API_ENABLED, BYTEWAX_DATAFLOW_API_PORT, BYTEWAX_DATAFLOW_API_CACHE_PATH
#       Bytewax's API server, always on: it serves the F2 metrics on /metrics, on the chart's
#       `api` port (BYTEWAX_DATAFLOW_API_PORT), which the chart's PodMonitor scrapes. The cache
#       path falls back to BYTEWAX_WORKDIR/.f2/api when it is not writable (api.enabled=false)
#   BYTEWAX_KEEP_CONTAINER_ALIVE true: the container stays up after the flow ends (troubleshooting)
#   BYTEWAX_OTLP_URL             not used: the F2 flows log JSON lines and export Prometheus metrics
# With the root filesystem read-only, /tmp is moved to BYTEWAX_WORKDIR/.f2/tmp (TMPDIR) and ingest's
# session markers default to BYTEWAX_WORKDIR/.f2/ingest-sessions (F2_INGEST_STATE_DIR).
#
# Writes only under: BYTEWAX_WORKDIR BYTEWAX_DATAFLOW_API_CACHE_PATH BYTEWAX_RECOVERY_DIRECTORY
# (the chart's emptyDirs and recovery volume; the chart runs as uid 65532, not the image's user).
# The image's own entrypoint, /app/bin/entrypoint.sh (compose, the project's chart), is separate;
# this script takes its process_count and process_id from it (waxctl-lib.sh).
set -eu

# shellcheck source=waxctl-lib.sh
. "$(dirname "$0")/waxctl-lib.sh"
waxctl_load_image_functions

file="${BYTEWAX_PYTHON_FILE_PATH:-}"
[ -n "$file" ] || waxctl_die "BYTEWAX_PYTHON_FILE_PATH is not set (the chart sets it to" \
    "/var/bytewax/<pythonFileName>)"
workdir="${BYTEWAX_WORKDIR:-$(dirname "$file")}"
cd "$workdir" || waxctl_die "cannot enter BYTEWAX_WORKDIR $workdir"
[ -r "$file" ] || waxctl_die "no flow file $file: deploy a launcher of build/waxctl/launchers/" \
    "or the tarball with -f <launcher> (make waxctl-bundle)"

# Scratch space on the working directory's emptyDir: the root filesystem is read-only.
scratch="$workdir/.f2"
mkdir -p "$scratch" || waxctl_die "BYTEWAX_WORKDIR $workdir is not writable"
if ! [ -w "${TMPDIR:-/tmp}" ]; then
    TMPDIR="$scratch/tmp"
    export TMPDIR
    mkdir -p "$TMPDIR"
fi
F2_INGEST_STATE_DIR="${F2_INGEST_STATE_DIR:-$scratch/ingest-sessions}"
export F2_INGEST_STATE_DIR

# Bytewax's API server carries the metrics: on whatever the chart's api.enabled says.
BYTEWAX_DATAFLOW_API_ENABLED="${BYTEWAX_DATAFLOW_API_ENABLED:-true}"
export BYTEWAX_DATAFLOW_API_ENABLED
if [ -n "${BYTEWAX_DATAFLOW_API_PORT:-}" ]; then
    waxctl_int BYTEWAX_DATAFLOW_API_PORT "$BYTEWAX_DATAFLOW_API_PORT" 1
fi
cache="${BYTEWAX_DATAFLOW_API_CACHE_PATH:-}"
if [ -z "$cache" ] || ! mkdir -p "$cache" 2>/dev/null || ! [ -w "$cache" ]; then
    cache="$scratch/api"
    mkdir -p "$cache"
fi
BYTEWAX_DATAFLOW_API_CACHE_PATH="$cache"
export BYTEWAX_DATAFLOW_API_CACHE_PATH

workers="${BYTEWAX_WORKERS_PER_PROCESS:-1}"
waxctl_int BYTEWAX_WORKERS_PER_PROCESS "$workers" 1
if [ "$workers" -gt 1 ]; then
    waxctl_warn "$workers workers per process share one GIL; scale with processes (-p) instead"
fi

# The cluster: peers from the hostfile, this process's index from the pod's ordinal.
if [ -z "${BYTEWAX_ADDRESSES:-}" ] && [ -n "${BYTEWAX_HOSTFILE_PATH:-}" ] \
    && ! [ -r "$BYTEWAX_HOSTFILE_PATH" ]; then
    waxctl_die "cannot read the hostfile BYTEWAX_HOSTFILE_PATH=$BYTEWAX_HOSTFILE_PATH"
fi
processes="$(process_count)"
if [ -n "${BYTEWAX_REPLICAS:-}" ]; then
    waxctl_int BYTEWAX_REPLICAS "$BYTEWAX_REPLICAS" 1
    [ "$processes" -eq "$BYTEWAX_REPLICAS" ] || waxctl_die "the peers list $processes" \
        "processes, BYTEWAX_REPLICAS is $BYTEWAX_REPLICAS"
fi
if [ "$processes" -gt 1 ]; then
    index="$(process_id)"
    waxctl_int "the process id (BYTEWAX_POD_NAME minus BYTEWAX_STATEFULSET_NAME-)" "$index" 0
    [ "$index" -lt "$processes" ] || waxctl_die "process id $index, but only $processes peers"
    peers="${BYTEWAX_ADDRESSES:-$(grep . "$BYTEWAX_HOSTFILE_PATH" | paste -sd ';' -)}"
    set -- -i "$index" -a "$peers" "$@"
else
    # One process: no cluster, so Bytewax must not derive a process id from the pod's name.
    unset BYTEWAX_ADDRESSES BYTEWAX_HOSTFILE_PATH BYTEWAX_PROCESS_ID BYTEWAX_POD_NAME \
        BYTEWAX_STATEFULSET_NAME
fi

snapshot="${BYTEWAX_SNAPSHOT_INTERVAL:-1}"
waxctl_int BYTEWAX_SNAPSHOT_INTERVAL "$snapshot" 1
if [ -n "${BYTEWAX_RECOVERY_DIRECTORY:-}" ]; then
    dir="$BYTEWAX_RECOVERY_DIRECTORY"
    parts=0
    for part in "$dir"/part-*.sqlite3; do
        if [ -e "$part" ]; then parts=$((parts + 1)); fi
    done
    [ "$parts" -gt 0 ] || waxctl_die "no recovery partitions in $dir: the chart's init container" \
        "(entrypoint-recovery.sh) creates them"
    if [ -z "${F2_DECODE_RECOVERY_PARTS:-}" ]; then
        F2_DECODE_RECOVERY_PARTS="$parts"
        export F2_DECODE_RECOVERY_PARTS
    elif [ "$F2_DECODE_RECOVERY_PARTS" != "$parts" ]; then
        waxctl_warn "F2_DECODE_RECOVERY_PARTS=$F2_DECODE_RECOVERY_PARTS, but $dir holds $parts"
    fi
    if [ $((processes * workers)) -gt "$parts" ]; then
        waxctl_warn "$((processes * workers)) workers, but only $parts recovery partitions:" \
            "give at least as many (--recovery-parts) as the most workers you will run"
    fi
    backup="${BYTEWAX_RECOVERY_BACKUP_INTERVAL:-10}"
    waxctl_int BYTEWAX_RECOVERY_BACKUP_INTERVAL "$backup" 0
    set -- -r "$dir" -b "$backup" "$@"
fi
set -- "$file" -w "$workers" -s "$snapshot" "$@"

echo "f2 (Bytewax chart): python -m bytewax.run $* (in $workdir)" >&2
case "${BYTEWAX_KEEP_CONTAINER_ALIVE:-false}" in
    true | 1 | yes) ;;
    *) exec python -m bytewax.run "$@" ;;
esac

# Keep-alive: run the flow as a child (signals forwarded), then stay up until stopped.
python -m bytewax.run "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' TERM
trap 'kill -INT "$child" 2>/dev/null || true' INT
status=0
while :; do
    wait "$child" && status=0 || status=$?
    kill -0 "$child" 2>/dev/null || break
done
echo "f2 (Bytewax chart): the flow exited with status $status;" \
    "BYTEWAX_KEEP_CONTAINER_ALIVE keeps the container up" >&2
trap 'exit "$status"' TERM INT
while :; do
    sleep 1
done
