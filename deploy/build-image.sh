#!/usr/bin/env bash
# Builds the `amphi:latest` Docker image FROM scratch (no registry needed).
#
#   deploy/build-image.sh
#
# Steps: `cargo build --release -p amphi-node`; a temporary build context with the binary,
# the shared libraries `ldd` lists (symlinks resolved, copied to the paths the loader
# expects), a passwd/group entry for the non-root user `amphi` (10001); `docker build`;
# then `docker run --rm IMAGE --help` as a smoke test (a missing library fails here).
#
# Environment:
#   IMAGE=amphi:latest   tag to build
#   AMPHI_BIN=PATH       use this prebuilt binary, skip cargo
#   SKIP_BUILD=1         skip cargo, use target/release/amphi as it is
#   SKIP_SMOKE=1         skip the `--help` run after building
#   KEEP_DEBUG=1         keep the binary's debug line tables (image ~60 MB larger)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
image=${IMAGE:-amphi:latest}
target_dir=${CARGO_TARGET_DIR:-$root/target}
uid=10001
gid=10001

die() { echo "build-image.sh: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker not found"
command -v ldd >/dev/null || die "ldd not found"

if [[ -n ${AMPHI_BIN:-} ]]; then
    bin=$AMPHI_BIN
else
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        echo "==> cargo build --release -p amphi-node"
        (cd "$root" && cargo build --release -p amphi-node)
    fi
    bin=$target_dir/release/amphi
fi
[[ -x $bin ]] || die "no executable at $bin"

ctx=$(mktemp -d "${TMPDIR:-/tmp}/amphi-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
rootfs=$ctx/rootfs
mkdir -p "$rootfs/etc" "$ctx/data"
install -m 0755 "$bin" "$rootfs/amphi"
# The release profile keeps line tables (~60 MB of the ~75 MB binary). Drop them in the image
# unless KEEP_DEBUG=1; symbols stay, so a backtrace still names functions.
if [[ ${KEEP_DEBUG:-0} != 1 ]] && command -v objcopy >/dev/null; then
    objcopy --strip-debug "$rootfs/amphi"
fi

# Shared libraries, e.g.
#   libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)
#   /lib64/ld-linux-x86-64.so.2 (0x...)
#   linux-vdso.so.1 (0x...)            <- provided by the kernel, skipped
echo "==> libraries (ldd $bin)"
ldd_out=$(ldd "$bin" 2>&1) || true
if grep -q 'not a dynamic executable\|statically linked' <<<"$ldd_out"; then
    echo "    (static binary: no libraries to copy)"
else
    grep -q 'not found' <<<"$ldd_out" && die "unresolved libraries:"$'\n'"$ldd_out"
    while read -r line; do
        lib=
        case $line in
            *'=> /'*) lib=$(awk '{print $3}' <<<"$line") ;;
            /*) lib=$(awk '{print $1}' <<<"$line") ;;
            *) continue ;;
        esac
        [[ -e $lib ]] || die "library $lib (from ldd) does not exist"
        mkdir -p "$rootfs$(dirname "$lib")"
        # -L: copy the file a symlink points to, under the name the loader asks for.
        cp -L "$lib" "$rootfs$lib"
        echo "    $lib ($(readlink -f "$lib"))"
    done <<<"$ldd_out"
    [[ -e $rootfs/lib64/ld-linux-x86-64.so.2 || $(uname -m) != x86_64 ]] \
        || die "ldd did not list /lib64/ld-linux-x86-64.so.2; refusing to build an image that cannot start"
fi

cat >"$rootfs/etc/passwd" <<PASSWD
root:x:0:0:root:/:/sbin/nologin
amphi:x:$uid:$gid:Amphi node:/var/lib/amphi:/sbin/nologin
PASSWD
cat >"$rootfs/etc/group" <<GROUP
root:x:0:
amphi:x:$gid:
GROUP
# glibc resolves host names itself (nss files+dns are built into libc since 2.34); say so
# explicitly so it never tries to dlopen an NSS module the image does not have.
cat >"$rootfs/etc/nsswitch.conf" <<'NSS'
passwd: files
group:  files
hosts:  files dns
NSS

cp "$here/Dockerfile" "$ctx/Dockerfile"

revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
echo "==> docker build -t $image"
docker build -t "$image" --label "org.opencontainers.image.revision=$revision" "$ctx"

if [[ ${SKIP_SMOKE:-0} != 1 ]]; then
    echo "==> smoke test: docker run --rm $image --help"
    docker run --rm "$image" --help >/dev/null || die "the image does not start"
fi
echo "==> built $image"
docker image ls "$image"
