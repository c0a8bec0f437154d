#!/usr/bin/env bash
# Runs a command against a throwaway S3-compatible server on 127.0.0.1 with one-run
# generated credentials, then stops the server and removes its files (on exit, error,
# SIGINT or SIGTERM). The command's exit code is returned.
#
#   scripts/s3-fixture.sh garage -- cargo test -p artifactstore-blob
#   scripts/s3-fixture.sh rustfs -- cargo test -p artifactstore-blob
#   scripts/s3-fixture.sh ceph -- cargo test -p artifactstore-blob
#   scripts/s3-fixture.sh moto -- ...     moto's server in auth mode (PyPI moto[server])
#   scripts/s3-fixture.sh s3s -- ...      s3s-fs (the in-process test store, as a server)
#
# The command sees (secrets only through file: references, never as values):
#   ARTIFACTSTORE_S3_ENDPOINT_URL            http://127.0.0.1:<port>
#   ARTIFACTSTORE_S3_REGION                  us-east-1
#   ARTIFACTSTORE_S3_BUCKET                  the bucket (created; the key has read, write, owner)
#   ARTIFACTSTORE_S3_ACCESS_KEY_ID_REF       file:<dir>/access_key_id
#   ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF   file:<dir>/secret_access_key
#   ARTIFACTSTORE_FIXTURE_SERVER             garage | rustfs | ceph
#   ARTIFACTSTORE_FIXTURE_SERVER_VERSION     the server's version
#   ARTIFACTSTORE_FIXTURE_VIRTUAL_HOST_DOMAIN  (garage, ceph) s3.localhost: the store also
#                                            answers <bucket>.s3.localhost (resolve it to
#                                            127.0.0.1 yourself: storage compat
#                                            --virtual-host-domain does)
#   ARTIFACTSTORE_FIXTURE_DIR                <dir>: the temporary directory (server.log is there;
#                                            Ceph's daemon logs are in <dir>/log)
#   ARTIFACTSTORE_FIXTURE_GARAGE_ADMIN_URL        (garage) http://127.0.0.1:<port+3>
#   ARTIFACTSTORE_FIXTURE_GARAGE_ADMIN_TOKEN_REF  (garage) file:<dir>/admin_token
#   ARTIFACTSTORE_FIXTURE_STS_URL            (ceph, moto) the STS (and IAM) endpoint: the S3 endpoint
#   ARTIFACTSTORE_FIXTURE_ROLE_ARN           (ceph, moto) a role the key may assume, allowed s3:*
#   ARTIFACTSTORE_FIXTURE_CEPH_CONF          (ceph) <dir>/ceph.conf, for `ceph -c` / `radosgw-admin -c`
#   ARTIFACTSTORE_FIXTURE_CEPH_USER_ARN      (ceph) arn:aws:iam:::user/<uid>, the key's user (for
#                                            a role's trust policy)
# On Ceph the key is also IAM-capable: its user has the caps roles=*, oidc-provider=* and
# user-policy=* (CreateRole, PutRolePolicy, CreateOpenIDConnectProvider, PutUserPolicy), and
# RGW's STS is on (AssumeRole, AssumeRoleWithWebIdentity; a per-run `rgw sts key`).
#
# Settings (environment):
#   ARTIFACTSTORE_FIXTURE_PORT    S3 API port (default 19000); Garage also uses port+1 (RPC)
#                                 and port+3 (admin API); Ceph uses port+1 (monitor) and four
#                                 free ports of port+4..port+11 (the OSD). Everything binds
#                                 127.0.0.1 only; a port in use fails the start with its holder.
#   ARTIFACTSTORE_S3_BUCKET       bucket to create (default artifactstore-test)
#   ARTIFACTSTORE_CACHE           where server binaries are cached and built
#                                 (default ~/.cache/artifact-store; bin/garage-<v>, bin/rustfs-<v>)
#   ARTIFACTSTORE_FIXTURE_BUILD_RUSTFS=1   build RustFS when its cached binary is missing
#                                 (71 minutes wall on 2 cores, measured 2026-12-01 with the
#                                 build settings below; 5 GB of disk); otherwise the RustFS run is
#                                 skipped with exit code 77.
#   ARTIFACTSTORE_FIXTURE_TIMEOUT seconds to wait for the server to become ready (default 120)
#
# A missing Garage binary is built with cargo (about 25 minutes on 2 cores). Ceph RGW comes
# from Debian's packages (Ceph 16.2): when they are missing the run fails and names them
# (apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common). It runs
# one monitor, one bluestore OSD on an 8 GiB sparse file in <dir> (only what is written takes
# disk space) and one radosgw, all without authentication between them (loopback only).

# shellcheck disable=SC2317,SC2329 # cleanup() and on_signal() run from traps
set -euo pipefail

GARAGE_VERSION=2.5.0
RUSTFS_VERSION=1.0.1
CEPH_PACKAGES="ceph-mon ceph-osd radosgw ceph-common"
CEPH_USER=artifactstore-fixture
REGION=us-east-1
# Garage and Ceph also answer virtual-host requests for <bucket>.$VHOST_DOMAIN.
VHOST_DOMAIN=s3.localhost
EXIT_SKIPPED=77
orig_umask=$(umask)

say() { echo "s3-fixture: $*" >&2; }
die() { say "error: $*"; exit 1; }
usage() {
  echo "usage: $0 <garage|rustfs|ceph|moto|s3s> -- <command> [args...]" >&2
  exit 2
}

# ---- teardown (installed first, so that a signal at any point is handled) -------------

tmp=
server_pid=
daemon_pids=() # Ceph's daemons (monitor, OSD, radosgw), in start order
daemon_names=()
cmd_pid= # the child being waited for (build, helper or the command), in its own group

alive() { kill -0 -- "$1" 2>/dev/null; } # pid, or -pgid for a whole process group

stop_pid() { # pid [group]: TERM, wait up to 10 s, then KILL
  local pid=$1 target=$1 i
  [ "${2:-}" = group ] && target=-$1
  kill -TERM -- "$target" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    alive "$target" || alive "$pid" || break
    sleep 0.1
  done
  if alive "$target" || alive "$pid"; then
    say "pid $pid did not stop within 10 s; killing it"
    kill -KILL -- "$target" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT
  trap '' INT TERM # finish the teardown even when signalled again
  [ -n "$cmd_pid" ] && stop_pid "$cmd_pid" group
  [ -n "$server_pid" ] && stop_pid "$server_pid"
  local i
  for ((i = ${#daemon_pids[@]} - 1; i >= 0; i--)); do # the last started first
    stop_pid "${daemon_pids[i]}"
  done
  [ -z "$tmp" ] || rm -rf "$tmp"
  exit "$rc"
}

on_signal() {
  local sig=$1 code=$2 i
  trap '' INT TERM
  say "received SIG$sig; stopping"
  if [ -n "$cmd_pid" ] && alive "$cmd_pid"; then
    # Forward the signal to the child's process group first; cleanup() escalates.
    disown "$cmd_pid" 2>/dev/null || true # no "Terminated" job report
    kill -s "$sig" -- "-$cmd_pid" 2>/dev/null || kill -s "$sig" "$cmd_pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      alive "-$cmd_pid" || alive "$cmd_pid" || break
      sleep 0.1
    done
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM

# Runs a command in its own process group and waits for it: a signal to this script then
# interrupts the wait at once and is forwarded to the whole group by on_signal().
run_child() {
  local rc=0
  set -m
  "$@" &
  cmd_pid=$!
  set +m
  wait "$cmd_pid" || rc=$?
  cmd_pid=
  return "$rc"
}

# ---- arguments and settings --------------------------------------------------------

[ $# -ge 1 ] || usage
server=$1
shift
case "$server" in
  garage | rustfs | ceph | moto | s3s) ;;
  -h | --help) usage ;;
  *) say "unknown server '$server'"; usage ;;
esac
[ "${1:-}" = "--" ] || usage
shift
[ $# -ge 1 ] || usage

CACHE=${ARTIFACTSTORE_CACHE:-$HOME/.cache/artifact-store}
port=${ARTIFACTSTORE_FIXTURE_PORT:-19000}
bucket=${ARTIFACTSTORE_S3_BUCKET:-artifactstore-test}
timeout=${ARTIFACTSTORE_FIXTURE_TIMEOUT:-120}
case "$port" in '' | *[!0-9]*) die "ARTIFACTSTORE_FIXTURE_PORT must be a number, not '$port'" ;; esac
case "$timeout" in '' | *[!0-9]*) die "ARTIFACTSTORE_FIXTURE_TIMEOUT must be a number of seconds" ;; esac
if [ "$port" -lt 1024 ] || [ "$port" -gt 65532 ]; then
  die "ARTIFACTSTORE_FIXTURE_PORT must be in 1024..65532"
fi
[ -n "$bucket" ] || die "ARTIFACTSTORE_S3_BUCKET is empty"
rpc_port=$((port + 1))
admin_port=$((port + 3))
mon_port=$((port + 1))
msgr_min=$((port + 4)) msgr_max=$((port + 11))
if [ "$server" = ceph ] && [ "$msgr_max" -gt 65535 ]; then
  die "ARTIFACTSTORE_FIXTURE_PORT must be at most 65524 for ceph (it uses port+1..port+11)"
fi

for tool in python3 curl openssl; do
  command -v "$tool" >/dev/null || die "'$tool' is required"
done
python3 -c 'import boto3' 2>/dev/null || die "python3 with boto3 is required (pip install boto3)"

# Never send loopback traffic through a proxy (ours and the command's).
export NO_PROXY="127.0.0.1${NO_PROXY:+,$NO_PROXY}"
export no_proxy="127.0.0.1${no_proxy:+,$no_proxy}"

# ---- server binaries (cached outside the repository, built only when missing) ------

# Builds <crate>@<version> into the cache, one build at a time per crate.
build_into_cache() {
  local crate=$1 version=$2 dest=$3
  shift 3
  mkdir -p "$CACHE/bin" "$CACHE/build" "$CACHE/install"
  exec 9>"$CACHE/build/$crate.lock"
  if ! flock -n 9; then
    say "another build of $crate is running; waiting for it"
    run_child flock 9
  fi
  if [ ! -x "$dest" ]; then
    say "building $crate $version into $dest (this takes a long time; output follows)"
    # A test fixture needs a working server, not the fastest one: a lower opt-level,
    # no LTO, many codegen units and no debug info roughly halve the build on 2 cores.
    run_child env CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=off \
      CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_INCREMENTAL=0 \
      cargo install "$crate@$version" --locked "$@" \
      --root "$CACHE/install/$crate-$version" --target-dir "$CACHE/build/$crate" >&2
    install -m 755 "$CACHE/install/$crate-$version/bin/$crate" "$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
  fi
  exec 9>&-
}

rustfs_skip_banner() {
  cat >&2 <<EOF

################################################################################
##                                                                            ##
##   RustFS live tests are NOT being run.                                     ##
##                                                                            ##
################################################################################
  The cached RustFS binary is absent:
      $1
  To build it once (71 minutes and 5 GB of disk on 2 cores, measured 2026-12-01):
      ARTIFACTSTORE_FIXTURE_BUILD_RUSTFS=1 $0 rustfs -- true
  which runs
      apt-get install -y protobuf-compiler
      CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=off \\
      CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_INCREMENTAL=0 \\
      cargo install rustfs@$RUSTFS_VERSION --locked --ignore-rust-version \\
          --no-default-features --bin rustfs \\
          --root "$CACHE/install/rustfs-$RUSTFS_VERSION" --target-dir "$CACHE/build/rustfs"
  and copies the binary to the path above.
  Exiting with code $EXIT_SKIPPED (skipped).
################################################################################

EOF
}

case "$server" in
  garage)
    server_bin=$CACHE/bin/garage-$GARAGE_VERSION
    if [ ! -x "$server_bin" ]; then
      command -v cargo >/dev/null || die "$server_bin is missing and cargo is not installed to build it"
      build_into_cache garage "$GARAGE_VERSION" "$server_bin"
    fi
    server_version=$GARAGE_VERSION
    ;;
  rustfs)
    server_bin=$CACHE/bin/rustfs-$RUSTFS_VERSION
    if [ ! -x "$server_bin" ]; then
      if [ "${ARTIFACTSTORE_FIXTURE_BUILD_RUSTFS:-}" != 1 ]; then
        rustfs_skip_banner "$server_bin"
        exit "$EXIT_SKIPPED"
      fi
      command -v cargo >/dev/null || die "cargo is required to build RustFS"
      if ! command -v protoc >/dev/null; then
        sudo=()
        [ "$(id -u)" = 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get install -y protobuf-compiler >&2 \
          || { "${sudo[@]}" apt-get update >&2 && "${sudo[@]}" apt-get install -y protobuf-compiler >&2; }
      fi
      # The crate declares rust-version 1.98.1 but builds on ours; without its default
      # features (ftps, webdav, gcs) and its CLI binary the build is shorter.
      build_into_cache rustfs "$RUSTFS_VERSION" "$server_bin" --ignore-rust-version \
        --no-default-features --bin rustfs
    fi
    server_version=$RUSTFS_VERSION
    ;;
  ceph)
    missing=()
    for tool in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool ceph-authtool; do
      command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if [ ${#missing[@]} -gt 0 ]; then
      die "Ceph is not installed (missing: ${missing[*]}); install its Debian packages with
    apt-get install -y --no-install-recommends $CEPH_PACKAGES"
    fi
    server_version=$(ceph-mon --version 2>/dev/null | awk '{print $3}')
    ;;
  moto)
    python3 -c 'import moto.server, flask' 2>/dev/null \
      || die "moto's server is not installed (pip install 'moto[server]')"
    server_version=$(python3 -c 'import moto; print(moto.__version__)')
    ;;
  s3s)
    command -v cargo >/dev/null || die "cargo is required to build the s3s-fs example server"
    server_version=$(sed -n 's/^s3s-fs = "=\(.*\)"$/\1/p' "$(dirname "$0")/../crates/blob/Cargo.toml")
    ;;
esac

# ---- ports --------------------------------------------------------------------------

port_free() {
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
PY
}
check_port() {
  port_free "$1" && return 0
  say "error: port 127.0.0.1:$1 ($2) is already in use:"
  ss -ltnp "sport = :$1" 2>/dev/null | sed 's/^/    /' >&2 || true
  say "stop that process or choose other ports with ARTIFACTSTORE_FIXTURE_PORT=<port>"
  exit 1
}
check_port "$port" "S3 API"
if [ "$server" = garage ]; then
  check_port "$rpc_port" "Garage RPC, S3 port + 1"
  check_port "$admin_port" "Garage admin API, S3 port + 3"
fi
if [ "$server" = ceph ]; then
  check_port "$mon_port" "Ceph monitor, S3 port + 1"
  # The OSD binds its four messengers to the first free ports of its range.
  free=0
  for ((p = msgr_min; p <= msgr_max; p++)); do
    port_free "$p" && free=$((free + 1))
  done
  if [ "$free" -lt 4 ]; then
    say "error: the Ceph OSD needs 4 free ports in 127.0.0.1:$msgr_min..$msgr_max (S3 port + 4..11), only $free are; in use:"
    ss -ltnp "( sport >= :$msgr_min and sport <= :$msgr_max )" 2>/dev/null | sed 's/^/    /' >&2 || true
    say "stop those processes or choose other ports with ARTIFACTSTORE_FIXTURE_PORT=<port>"
    exit 1
  fi
fi

# ---- temporary directory ------------------------------------------------------------------

tmp=$(mktemp -d "${TMPDIR:-/tmp}/artifactstore-s3.XXXXXX")
chmod 700 "$tmp"

fail_start() {
  say "error: $*"
  if [ -s "$tmp/setup.log" ]; then
    say "---- setup output ----"
    tail -n 20 "$tmp/setup.log" >&2
  fi
  if [ -s "$tmp/server.log" ]; then
    say "---- last lines of the $server server log ----"
    tail -n 40 "$tmp/server.log" >&2
  fi
  local f
  for f in "$tmp"/log/ceph-mon.*.log "$tmp"/log/ceph-osd.*.log "$tmp"/log/ceph-client.rgw.*.log; do
    [ -s "$f" ] || continue
    say "---- last lines of ${f#"$tmp"/} ----"
    grep -E '^[0-9]{4}-' "$f" | tail -n 15 >&2 || true # not the multi-line database statistics
  done
  exit 1
}

server_alive() {
  local i
  if [ -n "$server_pid" ]; then
    kill -0 "$server_pid" 2>/dev/null || fail_start "the $server server exited during start-up"
  fi
  for i in "${!daemon_pids[@]}"; do
    kill -0 "${daemon_pids[i]}" 2>/dev/null || fail_start "Ceph's ${daemon_names[i]} exited during start-up"
  done
}

# Secret files: created with mode 600 and written straight from the generator.
umask 077
new_secret() { # file bytes
  openssl rand -hex "$2" | tr -d '\n' >"$1"
}

started=$(date +%s%N)
elapsed() { echo "$((($(date +%s%N) - started) / 1000000)) ms"; }

# Waits until `curl` on the URL answers with one of the given HTTP codes.
wait_http() { # url what codes...
  local url=$1 what=$2 code deadline=$((SECONDS + timeout))
  shift 2
  while :; do
    server_alive
    code=$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' --max-time 2 "$url" || true)
    for c in "$@"; do [ "$code" = "$c" ] && return 0; done
    [ "$SECONDS" -lt "$deadline" ] || fail_start "$what: $url still answers HTTP '$code' after ${timeout}s"
    sleep 0.2
  done
}

# Runs python3 with the fixture directory and endpoint; helpers read secrets from files.
fixture_py() {
  FIXTURE_DIR=$tmp FIXTURE_ENDPOINT=http://127.0.0.1:$port FIXTURE_ADMIN=http://127.0.0.1:$admin_port \
    FIXTURE_BUCKET=$bucket FIXTURE_REGION=$REGION FIXTURE_TIMEOUT=$timeout run_child python3 -
}

# A bounded S3 round trip with the key: the bucket must be listable.
S3_CLIENT_PY='
import os, sys, time
for v in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(v, None)
import boto3
from botocore.config import Config
d = os.environ["FIXTURE_DIR"]
def read(name):
    with open(os.path.join(d, name)) as f:
        return f.read().strip()
def s3():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["FIXTURE_ENDPOINT"],
        region_name=os.environ["FIXTURE_REGION"],
        aws_access_key_id=read("access_key_id"),
        aws_secret_access_key=read("secret_access_key"),
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 1},
            connect_timeout=2,
            read_timeout=10,
        ),
    )
def retry(what, fn):
    deadline = time.monotonic() + float(os.environ["FIXTURE_TIMEOUT"])
    while True:
        try:
            return fn()
        except Exception as e:  # keep trying until the deadline
            if time.monotonic() > deadline:
                sys.exit("%s failed: %s" % (what, e))
            time.sleep(0.3)
'

wait_s3_ready() {
  fixture_py >>"$tmp/setup.log" 2>&1 <<PY || fail_start "the S3 API did not accept the key on bucket '$bucket'"
$S3_CLIENT_PY
c = s3()
retry("ListObjectsV2", lambda: c.list_objects_v2(Bucket=os.environ["FIXTURE_BUCKET"], MaxKeys=1))
PY
}

# CreateBucket with the key, for stores whose keys may create buckets (RustFS, Ceph RGW).
create_bucket_s3() {
  fixture_py >>"$tmp/setup.log" 2>&1 <<PY || fail_start "creating bucket '$bucket' on $server failed"
$S3_CLIENT_PY
c = s3()
def create():
    try:
        c.create_bucket(Bucket=os.environ["FIXTURE_BUCKET"])
    except c.exceptions.BucketAlreadyOwnedByYou:
        pass
retry("CreateBucket", create)
PY
}

# ---- moto (auth mode) and s3s-fs --------------------------------------------------------

# moto checks signatures only after its first INITIAL_NO_AUTH_ACTION_COUNT calls: these six
# make the user, its key, its policy, a role it may assume and the bucket.
start_moto() {
  set -m
  (cd "$tmp" && exec env INITIAL_NO_AUTH_ACTION_COUNT=6 python3 -m moto.server -H 127.0.0.1 -p "$port") \
    </dev/null >"$tmp/server.log" 2>&1 &
  server_pid=$!
  set +m
  wait_http "http://127.0.0.1:$port/moto-api/" "moto" 200
  fixture_py >>"$tmp/setup.log" 2>&1 <<'PY' || fail_start "bootstrapping moto's user, role and bucket failed"
import json, os
import boto3
d, endpoint = os.environ["FIXTURE_DIR"], os.environ["FIXTURE_ENDPOINT"]
anon = dict(endpoint_url=endpoint, region_name=os.environ["FIXTURE_REGION"],
            aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam = boto3.client("iam", **anon)
compact = lambda doc: json.dumps(doc, separators=(",", ":"))
allow = lambda action: compact({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": action, "Resource": "*"}]})
iam.create_user(UserName="fixture")
iam.put_user_policy(UserName="fixture", PolicyName="all", PolicyDocument=allow("*"))
key = iam.create_access_key(UserName="fixture")["AccessKey"]
trust = compact({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
    "Principal": {"AWS": "arn:aws:iam::123456789012:user/fixture"}, "Action": "sts:AssumeRole"}]})
role = iam.create_role(RoleName="fixture", AssumeRolePolicyDocument=trust)["Role"]
iam.put_role_policy(RoleName="fixture", PolicyName="s3", PolicyDocument=allow("s3:*"))
boto3.client("s3", **anon).create_bucket(Bucket=os.environ["FIXTURE_BUCKET"])
for name, value in (("access_key_id", key["AccessKeyId"]), ("secret_access_key", key["SecretAccessKey"]),
                    ("role_arn", role["Arn"])):
    with open(os.path.join(d, name), "w") as f:
        f.write(value)
PY
  wait_s3_ready
}

start_s3s() {
  mkdir -m 700 "$tmp/root"
  new_secret "$tmp/access_key_id" 10
  new_secret "$tmp/secret_access_key" 20
  local repo
  repo=$(cd "$(dirname "$0")/.." && pwd)
  run_child cargo build --locked -q --manifest-path "$repo/Cargo.toml" -p artifactstore-blob \
    --example s3s_fs_server >>"$tmp/setup.log" 2>&1 || fail_start "building the s3s-fs example server failed"
  set -m
  (cd "$tmp" && exec "$repo/target/debug/examples/s3s_fs_server" "$tmp/root" "$port" \
    "$tmp/access_key_id" "$tmp/secret_access_key") </dev/null >"$tmp/server.log" 2>&1 &
  server_pid=$!
  set +m
  wait_http "http://127.0.0.1:$port/" "s3s-fs" 403
  create_bucket_s3
  wait_s3_ready
}

# ---- Garage ---------------------------------------------------------------------------

start_garage() {
  local cfg=$tmp/garage.toml node_id
  mkdir -m 700 "$tmp/meta" "$tmp/data"
  new_secret "$tmp/rpc_secret" 32
  new_secret "$tmp/admin_token" 32
  cat >"$cfg" <<EOF
metadata_dir = "$tmp/meta"
data_dir = "$tmp/data"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret_file = "$tmp/rpc_secret"

[s3_api]
api_bind_addr = "127.0.0.1:$port"
s3_region = "$REGION"
root_domain = ".$VHOST_DOMAIN"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token_file = "$tmp/admin_token"
EOF

  # Garage reads GARAGE_* variables (secrets, config path, RPC host) ahead of its config
  # file: keep the caller's out of the server and CLI.
  local clean_env=(-u RUST_LOG) v
  for v in $(compgen -e); do
    case "$v" in GARAGE_*) clean_env+=(-u "$v") ;; esac
  done
  garage() { (cd "$tmp" && env "${clean_env[@]}" NO_COLOR=1 "$server_bin" -c "$cfg" "$@"); }

  set -m # own process group: a Ctrl-C meant for the command does not reach the server
  (cd "$tmp" && exec env "${clean_env[@]}" NO_COLOR=1 RUST_LOG=garage=info,netapp=info \
    "$server_bin" -c "$cfg" server) </dev/null >"$tmp/server.log" 2>&1 &
  server_pid=$!
  set +m

  # The admin API answers /health with 503 until the layout is applied: any answer is "up".
  wait_http "http://127.0.0.1:$admin_port/health" "Garage admin API" 200 503

  node_id=$(garage node id -q 2>>"$tmp/setup.log") || fail_start "garage node id failed"
  node_id=${node_id%%@*}
  [ -n "$node_id" ] || fail_start "garage node id printed nothing"
  {
    garage layout assign -z dc1 -c 1G "$node_id" &&
      garage layout apply --version 1
  } >>"$tmp/setup.log" 2>&1 || fail_start "garage layout assign/apply failed"

  wait_http "http://127.0.0.1:$admin_port/health" "Garage cluster health" 200

  # Bucket, key and grant through the v2 admin API; the token and the new secret key
  # stay in files (the secret is written by Python, never printed or passed as an argument).
  fixture_py >>"$tmp/setup.log" 2>&1 <<'PY' || fail_start "creating the bucket and key through the Garage admin API failed"
import json, os, sys, time, urllib.error, urllib.request
d = os.environ["FIXTURE_DIR"]
with open(os.path.join(d, "admin_token")) as f:
    token = f.read().strip()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
deadline = time.monotonic() + float(os.environ["FIXTURE_TIMEOUT"])
def call(endpoint, body):
    req = urllib.request.Request(
        os.environ["FIXTURE_ADMIN"] + "/v2/" + endpoint,
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
        method="POST",
    )
    while True:
        try:
            with opener.open(req, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            detail = "HTTP %d %s" % (e.code, e.read().decode(errors="replace")[:500])
            retryable = e.code >= 500
        except OSError as e:
            detail, retryable = str(e), True
        if not retryable or time.monotonic() > deadline:
            sys.exit("POST /v2/%s: %s" % (endpoint, detail))
        print("POST /v2/%s: %s; retrying" % (endpoint, detail), file=sys.stderr)
        time.sleep(0.5)
def write_secret(name, value):
    fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
b = call("CreateBucket", {"globalAlias": os.environ["FIXTURE_BUCKET"]})
k = call("CreateKey", {"name": "artifactstore-fixture", "neverExpires": True})
write_secret("access_key_id", k["accessKeyId"])
write_secret("secret_access_key", k["secretAccessKey"])
call("AllowBucketKey", {"bucketId": b["id"], "accessKeyId": k["accessKeyId"],
                        "permissions": {"read": True, "write": True, "owner": True}})
print("bucket %s (%s), key %s: read, write, owner" % (os.environ["FIXTURE_BUCKET"], b["id"], k["accessKeyId"]))
PY

  wait_s3_ready
}

# ---- RustFS (MinIO-compatible) ----------------------------------------------------------
# Untested here: no RustFS binary was available when this was written. The options follow
# RustFS's documented CLI/environment (volume directory as argument, --address,
# RUSTFS_ACCESS_KEY / RUSTFS_SECRET_KEY); check "$server_bin --help" if start-up fails.

start_rustfs() {
  mkdir -m 700 "$tmp/data" "$tmp/logs"
  new_secret "$tmp/access_key_id" 10
  new_secret "$tmp/secret_access_key" 20
  # Root credentials reach the server through its environment only (not its command line).
  set -m # own process group: a Ctrl-C meant for the command does not reach the server
  (
    cd "$tmp"
    RUSTFS_ACCESS_KEY=$(<"$tmp/access_key_id")
    RUSTFS_SECRET_KEY=$(<"$tmp/secret_access_key")
    export RUSTFS_ACCESS_KEY RUSTFS_SECRET_KEY
    export RUSTFS_ADDRESS=127.0.0.1:$port RUSTFS_CONSOLE_ENABLE=false \
      RUSTFS_OBS_LOG_DIRECTORY=$tmp/logs NO_COLOR=1
    exec "$server_bin" --address "127.0.0.1:$port" "$tmp/data"
  ) </dev/null >"$tmp/server.log" 2>&1 &
  server_pid=$!
  set +m

  wait_http "http://127.0.0.1:$port/minio/health/live" "RustFS health" 200

  create_bucket_s3

  wait_s3_ready
}

# ---- Ceph RGW (Debian packages) ---------------------------------------------------------
# One monitor, one OSD and one radosgw, every path (data, logs, sockets, pid files, keyring)
# under the temporary directory, cephx off (nothing but loopback can reach them), and a pool
# size of one with few placement groups so that a single OSD serves every pool RGW creates.

ceph_clean_env=()
for v in $(compgen -e); do
  case "$v" in CEPH_*) ceph_clean_env+=(-u "$v") ;; esac # CEPH_ARGS, CEPH_CONF: not the caller's
done

# A Ceph tool on the fixture's cluster, bounded in time and interruptible like any child.
ceph_tool() { # tool args...
  run_child timeout 60 env "${ceph_clean_env[@]}" "$1" -c "$tmp/ceph.conf" "${@:2}"
}

# Starts one Ceph daemon in the foreground, in its own process group (a Ctrl-C meant for the
# command does not reach it); its stdout and stderr go to server.log, its log to log/.
start_daemon() { # name command args...
  local name=$1
  shift
  set -m
  (cd "$tmp" && exec env "${ceph_clean_env[@]}" "$@" -c "$tmp/ceph.conf" -f) \
    </dev/null >>"$tmp/server.log" 2>&1 &
  daemon_pids+=("$!")
  daemon_names+=("$name")
  set +m
}

# Forgets the daemon started last (it exited; its pid is reaped already).
forget_last_daemon() {
  unset 'daemon_pids[-1]' 'daemon_names[-1]'
}

# Where the start-up time goes, in setup.log.
stage() { echo "stage: $(elapsed): $*" >>"$tmp/setup.log"; }

start_ceph() {
  local conf=$tmp/ceph.conf fsid osd_uuid osd_id try deadline
  mkdir -m 700 "$tmp/run" "$tmp/log" "$tmp/crash" "$tmp/mon" "$tmp/osd" "$tmp/rgw"
  fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
  osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
  # `rgw sts key` encrypts the session tokens RGW hands out: 16 characters, new every run.
  new_secret "$tmp/sts_key" 8
  cat >"$conf" <<EOC
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$mon_port
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr2 = false
ms bind ipv6 = false
ms bind port min = $msgr_min
ms bind port max = $msgr_max
auth cluster required = none
auth service required = none
auth client required = none
run dir = $tmp/run
admin socket = $tmp/run/\$cluster-\$name.\$pid.asok
pid file = $tmp/run/\$cluster-\$name.pid
log file = $tmp/log/\$cluster-\$name.log
mon cluster log file = $tmp/log/\$cluster.log
crash dir = $tmp/crash
keyring = $tmp/keyring
mon data = $tmp/mon/\$cluster-\$id
# A throwaway monitor on a nearly full disk is fine (by default it refuses to start with
# less than 5% of the file system free).
mon data avail warn = 0
mon data avail crit = -1
osd data = $tmp/osd/\$cluster-\$id
# bluestore on a sparse file, not memstore: memstore keeps objects in RAM, and once it is
# full every request hangs.
osd objectstore = bluestore
bluestore block path = $tmp/osd/block
bluestore block create = true
bluestore block size = 8589934592
osd memory target = 1073741824
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd crush chooseleaf type = 0
# The monitor batches map changes for a second by default; each pool RGW creates at its first
# start waits for one, so the start took about 10 s longer.
paxos propose interval = 0.1
paxos min wait = 0.01
# The OSD's own crush update at start races its first monitor map ("wrong fsid") and kills
# it; the fixture places the OSD in the crush map itself.
osd crush update on start = false
osd class update on start = false

[client.rgw.fixture]
rgw frontends = beast endpoint=127.0.0.1:$port
rgw dns name = $VHOST_DOMAIN
rgw data = $tmp/rgw
rgw sts key = $(<"$tmp/sts_key")
rgw s3 auth use sts = true
EOC

  {
    env "${ceph_clean_env[@]}" ceph-authtool --create-keyring "$tmp/keyring" --gen-key -n mon. \
      --cap mon 'allow *' &&
      env "${ceph_clean_env[@]}" monmaptool --create --fsid "$fsid" \
        --addv a "[v1:127.0.0.1:$mon_port]" "$tmp/monmap" &&
      ceph_tool ceph-mon --mkfs -i a --monmap "$tmp/monmap"
  } >>"$tmp/setup.log" 2>&1 || fail_start "creating the Ceph monitor failed"
  stage "monitor created"
  start_daemon monitor ceph-mon -i a

  deadline=$((SECONDS + timeout))
  until ceph_tool ceph --connect-timeout 5 -s >>"$tmp/setup.log" 2>&1; do
    server_alive
    [ "$SECONDS" -lt "$deadline" ] || fail_start "the Ceph monitor did not answer within ${timeout}s"
    sleep 0.5
  done

  stage "monitor answers"
  ceph_tool ceph osd new "$osd_uuid" >"$tmp/osd_id" 2>>"$tmp/setup.log" \
    || fail_start "ceph osd new failed"
  osd_id=$(<"$tmp/osd_id")
  case "$osd_id" in '' | *[!0-9]*) fail_start "ceph osd new printed '$osd_id', not an OSD id" ;; esac
  mkdir -m 700 "$tmp/osd/ceph-$osd_id"
  ceph_tool ceph-osd -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >>"$tmp/setup.log" 2>&1 \
    || fail_start "creating the Ceph OSD (ceph-osd --mkfs) failed"
  ceph_tool ceph osd crush add "osd.$osd_id" 1.0 root=default >>"$tmp/setup.log" 2>&1 \
    || fail_start "ceph osd crush add failed"

  stage "OSD created"
  # The first start right after the monitor often exits ("wrong fsid"); a later one works.
  deadline=$((SECONDS + timeout))
  for try in 1 2 3 4 5; do
    start_daemon "OSD" ceph-osd -i "$osd_id"
    while kill -0 "${daemon_pids[-1]}" 2>/dev/null; do
      ceph_tool ceph osd stat -f json >"$tmp/osd_stat" 2>>"$tmp/setup.log" || true
      grep -q '"num_up_osds":1[,}]' "$tmp/osd_stat" && break 2
      kill -0 "${daemon_pids[0]}" 2>/dev/null || fail_start "Ceph's monitor exited during start-up"
      [ "$SECONDS" -lt "$deadline" ] || fail_start "the Ceph OSD was not up within ${timeout}s"
      sleep 0.5
    done
    wait "${daemon_pids[-1]}" 2>/dev/null || true
    forget_last_daemon
    say "the Ceph OSD exited during start-up (attempt $try); starting it again"
    [ "$try" -lt 5 ] || fail_start "the Ceph OSD exited during start-up $try times"
    sleep 1
  done

  stage "OSD up"
  # RGW creates its pools and zone on its first start (about 1 s), then answers GET / 200.
  start_daemon radosgw radosgw -n client.rgw.fixture
  wait_http "http://127.0.0.1:$port/" "Ceph RGW" 200
  stage "RGW answers"

  # The user's keys go from radosgw-admin's output to the two secret files, never printed.
  ceph_tool radosgw-admin user create --uid="$CEPH_USER" \
    --display-name="artifactstore fixture" --caps="roles=*;oidc-provider=*;user-policy=*" \
    >"$tmp/user.json" 2>>"$tmp/setup.log" || fail_start "radosgw-admin user create failed"
  fixture_py >>"$tmp/setup.log" 2>&1 <<'PY' || fail_start "reading the new user's keys failed"
import json, os
d = os.environ["FIXTURE_DIR"]
path = os.path.join(d, "user.json")
with open(path) as f:
    user = json.load(f)
os.remove(path)
key = user["keys"][0]
for name, value in (("access_key_id", key["access_key"]), ("secret_access_key", key["secret_key"])):
    fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
print("user %s, key %s, caps %s" % (user["user_id"], key["access_key"],
      ", ".join("%s=%s" % (c["type"], c["perm"]) for c in user["caps"])))
PY
  stage "user created"

  create_bucket_s3
  stage "bucket created"

  # A role the user may assume (IAM CreateRole; RGW wants compact policy JSON).
  FIXTURE_USER_ARN=arn:aws:iam:::user/$CEPH_USER fixture_py >>"$tmp/setup.log" 2>&1 <<PY \
    || fail_start "creating the fixture's IAM role failed"
$S3_CLIENT_PY
import json
iam = boto3.client("iam", endpoint_url=os.environ["FIXTURE_ENDPOINT"], region_name=os.environ["FIXTURE_REGION"],
                   aws_access_key_id=read("access_key_id"), aws_secret_access_key=read("secret_access_key"))
compact = lambda doc: json.dumps(doc, separators=(",", ":"))
trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
         "Principal": {"AWS": [os.environ["FIXTURE_USER_ARN"]]}, "Action": ["sts:AssumeRole"]}]}
role = iam.create_role(RoleName="artifactstore-fixture", AssumeRolePolicyDocument=compact(trust))["Role"]
iam.put_role_policy(RoleName="artifactstore-fixture", PolicyName="s3", PolicyDocument=compact(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]}]}))
with open(os.path.join(os.environ["FIXTURE_DIR"], "role_arn"), "w") as f:
    f.write(role["Arn"])
PY
  stage "role created"

  wait_s3_ready
}

# ---- run --------------------------------------------------------------------------------

case "$server" in
  garage) start_garage ;;
  rustfs) start_rustfs ;;
  ceph) start_ceph ;;
  moto) start_moto ;;
  s3s) start_s3s ;;
esac
say "$server $server_version ready on http://127.0.0.1:$port, bucket '$bucket', in $(elapsed) (files: $tmp)"

export ARTIFACTSTORE_S3_ENDPOINT_URL=http://127.0.0.1:$port
export ARTIFACTSTORE_S3_REGION=$REGION
export ARTIFACTSTORE_S3_BUCKET=$bucket
export ARTIFACTSTORE_S3_ACCESS_KEY_ID_REF=file:$tmp/access_key_id
export ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF=file:$tmp/secret_access_key
export ARTIFACTSTORE_FIXTURE_SERVER=$server
export ARTIFACTSTORE_FIXTURE_SERVER_VERSION=$server_version
export ARTIFACTSTORE_FIXTURE_DIR=$tmp
case "$server" in
  garage | ceph) export ARTIFACTSTORE_FIXTURE_VIRTUAL_HOST_DOMAIN=$VHOST_DOMAIN ;;
esac
if [ "$server" = garage ]; then
  export ARTIFACTSTORE_FIXTURE_GARAGE_ADMIN_URL=http://127.0.0.1:$admin_port
  export ARTIFACTSTORE_FIXTURE_GARAGE_ADMIN_TOKEN_REF=file:$tmp/admin_token
fi
if [ "$server" = ceph ] || [ "$server" = moto ]; then
  export ARTIFACTSTORE_FIXTURE_STS_URL=http://127.0.0.1:$port
  export ARTIFACTSTORE_FIXTURE_ROLE_ARN
  ARTIFACTSTORE_FIXTURE_ROLE_ARN=$(<"$tmp/role_arn")
fi
if [ "$server" = ceph ]; then
  export ARTIFACTSTORE_FIXTURE_CEPH_CONF=$tmp/ceph.conf
  export ARTIFACTSTORE_FIXTURE_CEPH_USER_ARN=arn:aws:iam:::user/$CEPH_USER
fi
umask "$orig_umask"

rc=0
if [ -t 0 ]; then
  # On a terminal the command runs in the foreground and handles Ctrl-C itself (an
  # interactive shell survives it); this script then returns the command's status.
  trap ':' INT
  "$@" || rc=$?
  trap 'on_signal INT 130' INT
else
  # Otherwise the command runs in its own process group and waits are interruptible:
  # INT/TERM sent to this script are forwarded to the whole group, then teardown runs.
  run_child "$@" || rc=$?
fi
exit "$rc"
