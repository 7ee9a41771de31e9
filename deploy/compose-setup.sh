#!/usr/bin/env bash
# Prepares deploy/cluster/ for deploy/compose.yaml: a county CA for `hoboksar`, and for each
# of the six offices a folder deploy/cluster/<name>/ with node.crt, node.key, ca.crt,
# amphi.toml and data/.
#
#   deploy/compose-setup.sh            # create what is missing; rewrite the amphi.toml files
#   deploy/compose-setup.sh --reset    # delete deploy/cluster/ (CA, certificates, ALL DATA) first
#
# Then:  docker-compose -f deploy/compose.yaml up -d     (or `docker compose ...`)
#
# Uses the `amphi` binary from $AMPHI, else target/release/amphi (built if missing).
# Re-running keeps the CA, certificates and data; a certificate is re-issued only when it is
# missing or was issued by a different CA.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cluster=$here/cluster
ca_dir=$cluster/ca
county=hoboksar

die() { echo "compose-setup.sh: $*" >&2; exit 1; }

reset=0
for arg in "$@"; do
    case $arg in
        --reset) reset=1 ;;
        -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

amphi=${AMPHI:-${CARGO_TARGET_DIR:-$root/target}/release/amphi}
if [[ ! -x $amphi ]]; then
    [[ -z ${AMPHI:-} ]] || die "AMPHI=$AMPHI is not executable"
    echo "==> cargo build --release -p amphi-node"
    (cd "$root" && cargo build --release -p amphi-node)
fi

if [[ $reset == 1 && -e $cluster ]]; then
    echo "==> deleting $cluster (stop the cluster first: docker-compose -f deploy/compose.yaml down)"
    rm -rf "$cluster"
fi
mkdir -p "$cluster"

# name (= container hostname and folder) | org path | parent's name (empty for the county)
offices=(
    "hoboksar|hoboksar|"
    "chagantolgay|hoboksar/chagantolgay|hoboksar"
    "hoboksar-town|hoboksar/hoboksar-town|hoboksar"
    "bayin|hoboksar/chagantolgay/bayin|chagantolgay"
    "tebke|hoboksar/chagantolgay/tebke|chagantolgay"
    "xingfu|hoboksar/hoboksar-town/xingfu|hoboksar-town"
)
org_of() {
    local o
    for o in "${offices[@]}"; do
        IFS='|' read -r n org _ <<<"$o"
        [[ $n == "$1" ]] && { echo "$org"; return; }
    done
    die "no office named $1"
}

# The county CA (its key never goes into a container).
if [[ ! -f $ca_dir/ca.key ]]; then
    echo "==> amphi ca init --dir $ca_dir --org $county"
    "$amphi" ca init --dir "$ca_dir" --org "$county"
fi

# Containers run as uid 10001 (the image's `amphi` user) when this script runs as root: the
# office folders are handed to that uid. Otherwise the containers run as the calling user,
# so that the files (node.key is 0600, admin.token too) stay readable on both sides.
if [[ $(id -u) == 0 ]]; then
    run_uid=10001 run_gid=10001
else
    run_uid=$(id -u) run_gid=$(id -g)
fi

for o in "${offices[@]}"; do
    IFS='|' read -r name org parent <<<"$o"
    dir=$cluster/$name
    if [[ ! -f $dir/node.crt || ! -f $dir/node.key ]] || ! cmp -s "$dir/ca.crt" "$ca_dir/ca.crt"; then
        echo "==> amphi ca issue --org $org --out $dir"
        "$amphi" ca issue --ca "$ca_dir" --org "$org" --out "$dir"
    fi
    mkdir -p "$dir/data"
    {
        echo "# Written by deploy/compose-setup.sh for the container \`$name\` ($org)."
        echo "# Mounted read-only at /etc/amphi; data/ beside it is mounted at /var/lib/amphi."
        echo "data_dir = \"/var/lib/amphi\""
        echo "listen = \"0.0.0.0:7400\""
        echo "admin = \"0.0.0.0:8400\""
        echo "cert = \"node.crt\""
        echo "key = \"node.key\""
        echo "ca = \"ca.crt\""
        if [[ -n $parent ]]; then
            echo
            echo "# The parent office, by container hostname on the compose network."
            echo "[[peers]]"
            echo "addr = \"$parent:7400\""
            echo "org = \"$(org_of "$parent")\""
        fi
    } >"$dir/amphi.toml.tmp"
    mv "$dir/amphi.toml.tmp" "$dir/amphi.toml"
    if [[ $(id -u) == 0 ]]; then
        chown -R "$run_uid:$run_gid" "$dir"
    fi
    chmod 0700 "$dir/data"
done

# docker-compose / docker compose read deploy/.env (the compose file's folder).
cat >"$here/.env" <<ENV
# Written by deploy/compose-setup.sh: the uid:gid the containers run as.
AMPHI_UID=$run_uid
AMPHI_GID=$run_gid
ENV

echo
echo "Cluster prepared in $cluster. Next:"
echo "  docker-compose -f deploy/compose.yaml up -d"
echo "Admin ports on this host (token: deploy/cluster/<name>/data/admin.token, made at first start):"
port=8400
for o in "${offices[@]}"; do
    IFS='|' read -r name org _ <<<"$o"
    printf '  http://127.0.0.1:%d/  %-14s %s\n' "$port" "$name" "$org"
    port=$((port + 1))
done
