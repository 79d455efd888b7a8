#!/bin/sh
# Entrypoint of the F2 image: the first argument names the process, the rest is passed on.
#
#   ingest [ARGS]     python -m bytewax.run dataflows.ingest -s 1            (metrics :3031)
#   decode [ARGS]     python -m bytewax.run dataflows.decode -r DIR -s 1 -b 10 (metrics :3032)
#                     creating the recovery partitions first when DIR has none (see below)
#   health [ARGS]     f2 health serve --host 0.0.0.0 --port $F2_HEALTH_PORT (default 8000)
#   simulator [ARGS]  python -m simulator ARGS
#   migrate [ARGS]    f2 migrate ARGS (F2_PARAMS_DSN / F2_TIMESERIES_DSN, F2_MIGRATIONS_DIR)
#   f2 [ARGS]         the operator CLI
#   anything else     executed as is
#
# Multi-process (Kubernetes StatefulSet): Bytewax takes the process id from BYTEWAX_PROCESS_ID,
# else from BYTEWAX_POD_NAME minus "BYTEWAX_STATEFULSET_NAME-", and the peers from
# BYTEWAX_ADDRESSES ("host:port;host:port", this process included) or BYTEWAX_HOSTFILE_PATH.
#
# Decode recovery: F2_DECODE_RECOVERY_DIR (default /var/lib/f2/recovery) holds this process's
# share of F2_DECODE_RECOVERY_PARTS partitions (default 4; at least the most workers the flow
# will ever run with). When the directory holds no partition, the partitions i with
# i mod P == process id are created (P = number of addresses, 1 without a cluster), so each
# pod's volume holds its share and the cluster holds the complete set. The layout is recorded in
# DIR/layout; a start with a different process count stops with an error, because the cluster
# would then miss partitions or resume from empty ones: follow "Rescaling decode" in
# docs/DEPLOYMENT.md, then set F2_DECODE_RECOVERY_RESCALED=1 for that one start.
set -eu

process_count() {
    if [ -n "${BYTEWAX_ADDRESSES:-}" ]; then
        echo "$BYTEWAX_ADDRESSES" | tr ';' '\n' | grep -c .
    elif [ -n "${BYTEWAX_HOSTFILE_PATH:-}" ]; then
        grep -c . "$BYTEWAX_HOSTFILE_PATH"
    else
        echo 1
    fi
}

process_id() {
    if [ -n "${BYTEWAX_PROCESS_ID:-}" ]; then
        echo "$BYTEWAX_PROCESS_ID"
    elif [ -n "${BYTEWAX_POD_NAME:-}" ] && [ -n "${BYTEWAX_STATEFULSET_NAME:-}" ]; then
        echo "${BYTEWAX_POD_NAME#"${BYTEWAX_STATEFULSET_NAME}"-}"
    else
        echo 0
    fi
}

prepare_recovery() {
    dir="$1"
    parts="${F2_DECODE_RECOVERY_PARTS:-4}"
    processes="$(process_count)"
    index="$(process_id)"
    layout="parts=${parts} processes=${processes}"
    mkdir -p "$dir"
    if ls "$dir"/part-*.sqlite3 >/dev/null 2>&1; then
        recorded="$(cat "$dir/layout" 2>/dev/null || echo "$layout")"
        if [ "$recorded" != "$layout" ] && [ "${F2_DECODE_RECOVERY_RESCALED:-0}" != "1" ]; then
            echo "decode: recovery in $dir was laid out for '$recorded', this start is" \
                 "'$layout'; see 'Rescaling decode' in docs/DEPLOYMENT.md" >&2
            exit 1
        fi
        echo "$layout" > "$dir/layout"
        return 0
    fi
    scratch="$dir/.init-$$"
    rm -rf "$scratch"
    mkdir -p "$scratch"
    python -m bytewax.recovery "$scratch" "$parts"
    i=0
    while [ "$i" -lt "$parts" ]; do
        if [ $((i % processes)) -eq "$index" ]; then
            mv "$scratch/part-$i.sqlite3" "$dir/"
        fi
        i=$((i + 1))
    done
    rm -rf "$scratch"
    echo "$layout" > "$dir/layout"
    echo "decode: created recovery partitions for process $index of $processes in $dir" >&2
}

# Sourced as a library (deploy/waxctl/waxctl-lib.sh): the functions above, no dispatch.
if [ "${F2_ENTRYPOINT_LIBRARY:-0}" = 1 ]; then
    return 0
fi

command="${1:-help}"
[ "$#" -gt 0 ] && shift

case "$command" in
    ingest)
        exec python -m bytewax.run dataflows.ingest -s 1 "$@"
        ;;
    decode)
        dir="${F2_DECODE_RECOVERY_DIR:-/var/lib/f2/recovery}"
        prepare_recovery "$dir"
        exec python -m bytewax.run dataflows.decode -r "$dir" -s 1 -b 10 "$@"
        ;;
    health)
        exec f2 health serve --host 0.0.0.0 --port "${F2_HEALTH_PORT:-8000}" "$@"
        ;;
    simulator)
        exec python -m simulator "$@"
        ;;
    migrate)
        exec f2 migrate "$@"
        ;;
    f2)
        exec f2 "$@"
        ;;
    help | --help | -h)
        sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
        ;;
    *)
        exec "$command" "$@"
        ;;
esac
