#!/usr/bin/env bash
# The county in containers (run by .ci/run): builds the node at HEAD and at the previous
# release (deploy/previous-release), makes both images FROM scratch, and runs
# `county-in-containers`: nine offices in containers on private networks, every link through
# a seeded fault relay, the previous release upgraded office by office while links fail and
# offices die; exits 1 when anything acknowledged is lost, an office holds anything outside
# its scope, or the county does not converge within 5 minutes of the last fault.
#
#   tests/county-in-containers.sh                     # one round of faults (CI, ~6 min)
#   tests/county-in-containers.sh --soak-minutes 60   # a soak: faults repeated for an hour
#   tests/county-in-containers.sh --seed 7            # another seed (default 1)
#
# Needs Docker (as root, or in the docker group) and git history back to the previous
# release. Environment: SKIP_PREVIOUS=1 starts from the image under test (no upgrade).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
lab=$target/lab
mkdir -p "$lab"

die() { echo "county-in-containers.sh: $*" >&2; exit 1; }
command -v docker >/dev/null || die "docker not found"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is it running? are you root?)"

echo "==> amphi at HEAD (release)"
cargo build --release -p amphi-node
install -m 0755 "$target/release/amphi" "$lab/amphi-current"
AMPHI_BIN=$lab/amphi-current IMAGE=amphi:lab bash deploy/build-image.sh >/dev/null

args=(--image amphi:lab)
if [[ ${SKIP_PREVIOUS:-0} != 1 ]]; then
    previous=$(grep -v '^#' deploy/previous-release | tr -d '[:space:]')
    git cat-file -e "$previous^{commit}" 2>/dev/null \
        || die "the previous release $previous is not in this clone's history (fetch it, or SKIP_PREVIOUS=1)"
    if [[ $(cat "$lab/amphi-previous.commit" 2>/dev/null) != "$previous" ]]; then
        echo "==> amphi at the previous release ${previous:0:12} (release)"
        src=$lab/previous-src
        rm -rf "$src" && mkdir -p "$src"
        git archive "$previous" | tar -x -C "$src"
        # The same target folder, so dependencies are shared and only the workspace is
        # rebuilt. Cargo names a workspace crate's build by name and version, not by folder,
        # and git archive dates files at the commit: without the touch, cargo would take
        # HEAD's fresher build for the previous release's.
        find "$src" -type f -exec touch {} +
        CARGO_TARGET_DIR=$target cargo build --release -p amphi-node --manifest-path "$src/Cargo.toml"
        install -m 0755 "$target/release/amphi" "$lab/amphi-previous"
        cmp -s "$lab/amphi-previous" "$lab/amphi-current" \
            && die "the previous release built to the same binary as HEAD"
        echo "$previous" >"$lab/amphi-previous.commit"
        rm -rf "$src"
    fi
    AMPHI_BIN=$lab/amphi-previous IMAGE=amphi:previous bash deploy/build-image.sh >/dev/null
    args+=(--previous amphi:previous)
fi

echo "==> county-in-containers ${args[*]} $*"
cargo build -p amphi-cluster-tests --bin county-in-containers
exec "$target/debug/county-in-containers" "${args[@]}" "$@"
