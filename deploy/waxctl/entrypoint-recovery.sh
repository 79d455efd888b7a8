#!/bin/sh
# The recovery init container of Bytewax's Helm chart (`waxctl dataflow deploy --recovery`): the
# chart runs `sh ./entrypoint-recovery.sh` in the image's working directory before the flow starts,
# with the flow's recovery volume at BYTEWAX_RECOVERY_DIRECTORY. It creates BYTEWAX_RECOVERY_PARTS
# partitions there once, with the image entrypoint's prepare_recovery (deploy/docker/entrypoint.sh,
# loaded by waxctl-lib.sh), which records the layout in DIR/layout: a later start with another
# BYTEWAX_RECOVERY_PARTS stops with an error instead of resuming from a different set of
# partitions (deploy/waxctl/README.md says how to reset).
#
# The chart mounts its one recovery volume (the PVC <name>-recovery) into every pod of the flow and
# gives this container neither the pod's name nor its peers, so the layout is the shared one: every
# partition in the one directory (prepare_recovery with a process count of 1), seen by every
# process of the cluster. The pods start together (podManagementPolicy Parallel): a lock directory
# lets one of them create the partitions while the others wait.
#
# BYTEWAX_SNAPSHOT_INTERVAL and BYTEWAX_RECOVERY_BACKUP_INTERVAL, which the chart gives this
# container too, are checked here (whole seconds) so a bad value stops the pod before the flow.
#
# Writes only under: BYTEWAX_RECOVERY_DIRECTORY
set -eu

# shellcheck source=waxctl-lib.sh
. "$(dirname "$0")/waxctl-lib.sh"
waxctl_load_image_functions

dir="${BYTEWAX_RECOVERY_DIRECTORY:-}"
[ -n "$dir" ] || waxctl_die "BYTEWAX_RECOVERY_DIRECTORY is not set"
parts="${BYTEWAX_RECOVERY_PARTS:-${F2_DECODE_RECOVERY_PARTS:-4}}"
waxctl_int BYTEWAX_RECOVERY_PARTS "$parts" 1
if [ -n "${BYTEWAX_SNAPSHOT_INTERVAL:-}" ]; then
    waxctl_int BYTEWAX_SNAPSHOT_INTERVAL "$BYTEWAX_SNAPSHOT_INTERVAL" 1
fi
if [ -n "${BYTEWAX_RECOVERY_BACKUP_INTERVAL:-}" ]; then
    waxctl_int BYTEWAX_RECOVERY_BACKUP_INTERVAL "$BYTEWAX_RECOVERY_BACKUP_INTERVAL" 0
fi

# The shared layout: prepare_recovery sees one process, whatever the environment says.
unset BYTEWAX_ADDRESSES BYTEWAX_HOSTFILE_PATH BYTEWAX_PROCESS_ID BYTEWAX_POD_NAME \
    BYTEWAX_STATEFULSET_NAME
F2_DECODE_RECOVERY_PARTS="$parts"
export F2_DECODE_RECOVERY_PARTS

mkdir -p "$dir" || waxctl_die "cannot create $dir (is the recovery volume writable?)"
lock="$dir/.f2-init.lock"
waited=0
until mkdir "$lock" 2>/dev/null; do
    if [ "$waited" -ge 120 ]; then
        # Its holder died: creating the partitions takes about a second.
        waxctl_warn "removing $lock, held for ${waited}s"
        rmdir "$lock" 2>/dev/null || true
        waited=0
        continue
    fi
    sleep 1
    waited=$((waited + 1))
done
trap 'rmdir "$lock" 2>/dev/null || true' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

prepare_recovery "$dir"
