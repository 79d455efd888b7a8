# Functions of the two scripts Bytewax's Helm chart runs in the F2 image's working directory,
# entrypoint.sh and entrypoint-recovery.sh (deploy/waxctl/README.md). Sourced by them, not run.
#
# The process arithmetic and the recovery layout are the image entrypoint's own
# (/app/bin/entrypoint.sh, from deploy/docker/entrypoint.sh: process_count, process_id,
# prepare_recovery), loaded from it in library mode (F2_ENTRYPOINT_LIBRARY=1: its functions, no
# dispatch) rather than copied. F2_IMAGE_ENTRYPOINT names it where it is not at /app/bin (the
# tests run these scripts from the checkout).

waxctl_die() {
    echo "f2 (Bytewax chart): $*" >&2
    exit 1
}

waxctl_warn() {
    echo "f2 (Bytewax chart): warning: $*" >&2
}

# waxctl_int NAME VALUE MINIMUM: stop unless VALUE is a whole number >= MINIMUM.
waxctl_int() {
    case "$2" in
        '' | *[!0-9]*) waxctl_die "$1 must be a whole number, got '$2'" ;;
    esac
    [ "$2" -ge "$3" ] || waxctl_die "$1 must be at least $3, got $2"
}

waxctl_load_image_functions() {
    image_entrypoint="${F2_IMAGE_ENTRYPOINT:-/app/bin/entrypoint.sh}"
    [ -r "$image_entrypoint" ] || waxctl_die "cannot read the image entrypoint $image_entrypoint"
    # Sourcing a script without library mode would run it, and its exit would end this one.
    grep -q 'F2_ENTRYPOINT_LIBRARY' "$image_entrypoint" \
        || waxctl_die "$image_entrypoint has no library mode (F2_ENTRYPOINT_LIBRARY)"
    # shellcheck source=../docker/entrypoint.sh
    F2_ENTRYPOINT_LIBRARY=1 . "$image_entrypoint"
    command -v prepare_recovery >/dev/null 2>&1 && command -v process_id >/dev/null 2>&1 \
        || waxctl_die "$image_entrypoint did not define process_id and prepare_recovery"
}
