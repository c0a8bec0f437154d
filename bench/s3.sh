#!/usr/bin/env bash
# S3 mode of the benchmark: `artifactstore serve --backend s3` on a throwaway Garage and
# Ceph RGW (scripts/s3-fixture.sh) against boto3, `aws s3 cp` and rclone moving the same
# file to the same bucket directly, and parallel downloads through the server, by its
# redirect to the store (`[s3] download = "redirect"`) and by boto3. See bench/README.md
# ("S3 mode").
#
# Environment (all optional):
#   ARTIFACTSTORE_BIN    use this binary instead of building target/release/artifactstore
#   BENCH_S3_STORES      stores to run, in order (default "garage ceph"; also s3s)
#   BENCH_S3_METHODS     direct clients besides boto3 in the upload/download table
#                        (default "aws rclone"; "boto3" for none: the server and boto3
#                        always run)
#   BENCH_DIR            parent of the temporary work dir (default /tmp)
#   BENCH_SIZE_MIB       size of the file in MiB (default 1024); a fresh file every round
#   BENCH_RUNS           rounds; the median of each measurement is reported (default 3)
#   BENCH_PARALLEL       number of parallel downloads in the parallel phase (default 4)
#   BENCH_TIMEOUT        bound in seconds of any one step (default 900)
#   BENCH_STORE_TIMEOUT  bound in seconds of one store's whole run, fixture included
#                        (default 7200)
#   ARTIFACTSTORE_FIXTURE_PORT  the fixture's S3 port (default 19600, see s3-fixture.sh)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
RUNS=${BENCH_RUNS:-3}
PAR=${BENCH_PARALLEL:-4}
T=${BENCH_TIMEOUT:-900}
STORE_T=${BENCH_STORE_TIMEOUT:-7200}
BENCH_DIR=${BENCH_DIR:-/tmp}
for v in SIZE_MIB RUNS PAR T STORE_T; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench-s3: $v must be a positive integer (got '${!v}')" >&2; exit 2; }
done
SIZE_BYTES=$((SIZE_MIB * 1048576))

log() { printf 'bench-s3: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
mibps() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", (s > 0) ? n / 1048576 / s : 0 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
tmo() { timeout --foreground "$T" "$@"; } # keeps the process group: Ctrl-C reaches the step

WORK="" SERVER_PID="" BG_PIDS=()
cleanup() {
    local rc=$? p
    set +e
    trap - EXIT INT TERM
    for p in "${BG_PIDS[@]}" "$SERVER_PID"; do
        [[ -n $p ]] && kill -TERM "$p" 2>/dev/null
    done
    if [[ -n $SERVER_PID ]]; then
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
        [[ $rc -ne 0 && -s $WORK/server.err ]] && { log "--- last lines of the server's stderr ---"; tail -n 20 "$WORK/server.err" >&2; }
    fi
    [[ -n $WORK && -d $WORK ]] && rm -rf -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ================================================================ outer part
if [[ ${1:-} != --inner ]]; then
    tools=(curl python3 sha256sum timeout awk)
    for m in ${BENCH_S3_METHODS:-aws rclone}; do
        case $m in server | boto3) ;; aws | rclone) tools+=("$m") ;; *) die "unknown method '$m' in BENCH_S3_METHODS" ;; esac
    done
    for tool in "${tools[@]}"; do
        command -v "$tool" >/dev/null || die "needs $tool"
    done
    python3 -c 'import boto3' 2>/dev/null || die "needs python3 with boto3"
    if [[ -n ${ARTIFACTSTORE_BIN:-} ]]; then
        BIN=$ARTIFACTSTORE_BIN
    else
        log "building the release binary (cargo build --release --locked -p artifactstore)"
        (cd "$ROOT" && timeout 3600 cargo build --release --locked -p artifactstore) >&2
        BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/artifactstore BIN_BUILT=1
    fi
    [[ -x $BIN ]] || die "no executable at $BIN"
    export ARTIFACTSTORE_BIN BENCH_DIR BENCH_S3_METHODS
    ARTIFACTSTORE_BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
    WORK=$(mktemp -d "$BENCH_DIR/artifactstore-bench-s3.XXXXXX")
    export BENCH_S3_BIN_DESC
    BENCH_S3_BIN_DESC="$ARTIFACTSTORE_BIN, built $(date -u -r "$ARTIFACTSTORE_BIN" '+%F %T') UTC"
    [[ -z ${BIN_BUILT:-} ]] || BENCH_S3_BIN_DESC+=" from $(cd "$ROOT" && git describe --always --dirty 2>/dev/null)"
    log "binary $BENCH_S3_BIN_DESC"
    failed=()
    for store in ${BENCH_S3_STORES:-garage ceph}; do
        log "=== $store: starting the fixture"
        rc=0
        BENCH_S3_REPORT=$WORK/$store.txt ARTIFACTSTORE_FIXTURE_PORT=${ARTIFACTSTORE_FIXTURE_PORT:-19600} \
            ARTIFACTSTORE_S3_BUCKET=artifactstore-bench \
            timeout --foreground "$STORE_T" "$ROOT/scripts/s3-fixture.sh" "$store" -- \
            bash "$HERE/s3.sh" --inner || rc=$?
        ((rc == 130 || rc == 143)) && exit "$rc"
        ((rc == 0)) || { log "$store FAILED (exit $rc)"; failed+=("$store"); }
    done
    echo
    for store in ${BENCH_S3_STORES:-garage ceph}; do cat "$WORK/$store.txt" 2>/dev/null || true; done
    ((${#failed[@]} == 0)) || die "failed: ${failed[*]}"
    exit 0
fi

# ================================================================ inner part (in the fixture)
: "${ARTIFACTSTORE_S3_ENDPOINT_URL:?run through scripts/s3-fixture.sh}" "${BENCH_S3_REPORT:?}"
STORE="$ARTIFACTSTORE_FIXTURE_SERVER $ARTIFACTSTORE_FIXTURE_SERVER_VERSION"
BUCKET=$ARTIFACTSTORE_S3_BUCKET
EP=$ARTIFACTSTORE_S3_ENDPOINT_URL
ref_value() { case $1 in file:*) cat -- "${1#file:}" ;; env:*) printenv -- "${1#env:}" ;; *) return 1 ;; esac; }
WORK=$(mktemp -d "$BENCH_DIR/artifactstore-bench-s3-$ARTIFACTSTORE_FIXTURE_SERVER.XXXXXX")
avail_kib=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
((avail_kib / 1024 > (PAR + 2) * SIZE_MIB + 512)) || die "$WORK has $((avail_kib / 1024)) MiB free, needs $(((PAR + 2) * SIZE_MIB + 512))"
SRC=$WORK/src.bin RUN_ID=$(date +%s)-$$
SERVER_PREFIX=bench-server-$RUN_ID/ DIRECT_PREFIX=bench-direct-$RUN_ID
busy() { echo "load $(cut -d' ' -f1-3 /proc/loadavg), $(pgrep -c -x rustc || true) rustc"; } # another build running?
BUSY_START=$(busy)

# ---- the server, with a prefix of its own; it redirects downloads to the store, and the
# proxy path is measured with ?redirect=0 (the same server, the same object)
server_env=(env)
while IFS= read -r name; do [[ $name == ARTIFACTSTORE_URL || $name == AWS_* ]] && server_env+=(-u "$name"); done < <(compgen -e)
"${server_env[@]}" RUST_LOG=info NO_COLOR=1 ARTIFACTSTORE_S3_PREFIX="$SERVER_PREFIX" ARTIFACTSTORE_S3_DOWNLOAD=redirect "$ARTIFACTSTORE_BIN" serve --backend s3 \
    --listen 127.0.0.1:0 --data-dir "$WORK/data" >"$WORK/server.out" 2>"$WORK/server.err" </dev/null &
SERVER_PID=$!
BASE=""
for _ in $(seq 300); do
    BASE=$(sed -n 's/^artifactstore listening on //p' "$WORK/server.out" 2>/dev/null | head -n1)
    [[ -n $BASE ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited during start-up"
    sleep 0.1
done
[[ -n $BASE ]] || die "the server did not print its address within 30 s"
curl -sS -f --retry 30 --retry-delay 1 --retry-all-errors --max-time 10 -o /dev/null "$BASE/readyz" || die "server not ready"
log "$STORE at $EP; server pid $SERVER_PID at $BASE, prefix $SERVER_PREFIX"

# ---- direct clients: boto3 (helper below), aws s3 cp, rclone; secrets never printed
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=$ARTIFACTSTORE_S3_REGION
AWS_ACCESS_KEY_ID=$(ref_value "$ARTIFACTSTORE_S3_ACCESS_KEY_ID_REF") || die "cannot read the access key reference"
AWS_SECRET_ACCESS_KEY=$(ref_value "$ARTIFACTSTORE_S3_SECRET_ACCESS_KEY_REF") || die "cannot read the secret key reference"
export AWS_REQUEST_CHECKSUM_CALCULATION=when_required AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
export AWS_CONFIG_FILE=$WORK/aws.config AWS_SHARED_CREDENTIALS_FILE=$WORK/aws.credentials
printf '[default]\ns3 =\n    addressing_style = path\n' >"$AWS_CONFIG_FILE"
export RCLONE_CONFIG=$WORK/rclone.conf RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
    RCLONE_CONFIG_BENCH_ENDPOINT=$EP RCLONE_CONFIG_BENCH_REGION=$AWS_DEFAULT_REGION RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true
: >"$RCLONE_CONFIG"
rclone_() { # rclone 1.60 refuses every remote while AWS_CA_BUNDLE is set
    (export RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
        tmo env -u AWS_CA_BUNDLE rclone -q copyto "$@")
}
PY=$WORK/boto3_helper.py
cat >"$PY" <<'EOF'
import multiprocessing as mp, os, signal, sys, time
import boto3
from botocore.config import Config
B = os.environ["ARTIFACTSTORE_S3_BUCKET"]
def client():  # default TransferConfig; checksums only when required; keys from the environment
    return boto3.client("s3", endpoint_url=os.environ["ARTIFACTSTORE_S3_ENDPOINT_URL"],
                        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))
def down(key, path, barrier=None, q=None):
    c = client()
    if barrier: barrier.wait()
    t0 = time.monotonic(); c.download_file(B, key, path); t1 = time.monotonic()
    if q: q.put((t0, t1))
    return t1 - t0
cmd, *a = sys.argv[1:]
if cmd == "up":
    c = client(); t0 = time.monotonic(); c.upload_file(a[0], B, a[1]); print(f"{time.monotonic() - t0:.3f}")
elif cmd == "down":
    print(f"{down(a[0], a[1]):.3f}")
elif cmd == "pdown":  # N processes, started together after a barrier; prints the span first start .. last end
    key, n, prefix = a[0], int(a[1]), a[2]
    ctx = mp.get_context("fork"); bar = ctx.Barrier(n); q = ctx.Queue()
    ps = [ctx.Process(target=down, args=(key, f"{prefix}{i}", bar, q)) for i in range(n)]
    for p in ps: p.start()
    signal.signal(signal.SIGTERM, lambda *_: ([p.kill() for p in ps], sys.exit(143)))
    spans = [q.get() for _ in ps]
    for p in ps: p.join()
    if any(p.exitcode for p in ps): sys.exit("a parallel download failed")
    print(f"{max(s[1] for s in spans) - min(s[0] for s in spans):.3f}")
elif cmd == "rm":
    c = client()
    for k in a: c.delete_object(Bucket=B, Key=k)
EOF
boto3_() { tmo python3 "$PY" "$@"; }

# ---- one timed step per function; each prints its seconds
srv_up() {
    local t0 t1 code
    t0=$(now_ns)
    code=$(curl -sS --max-time "$T" -T "$SRC" -H "X-Artifact-Digest: sha256:$HEX" -H "Content-Type: application/octet-stream" \
        -o "$WORK/put.json" -w '%{http_code}' "$BASE/v1/artifacts/bench/s3/r$1/big.bin")
    t1=$(now_ns)
    [[ $code == 201 ]] || { log "server PUT -> HTTP $code: $(head -c 500 "$WORK/put.json")"; return 1; }
    curl -sS -f --max-time 60 -X POST -o /dev/null "$BASE/v1/artifacts/bench/s3/r$1/complete" >&2 || return 1
    secs "$t0" "$t1"
}
FILE_URL() { echo "$BASE/v1/artifacts/bench/s3/r$1/big.bin"; }
srv_down() { local t0; t0=$(now_ns); curl -sS -f --max-time "$T" -o "$2" "$(FILE_URL "$1")?redirect=0" >&2 && secs "$t0" "$(now_ns)"; }
srv_pdown() { # round file-prefix [curl options...]: PAR curls at once, ?redirect=0 unless -L
    local t0 i rc=0 r=$1 f=$2 url
    shift 2
    url=$(FILE_URL "$r")
    [[ ${1:-} == -L ]] || url+="?redirect=0"
    t0=$(now_ns) BG_PIDS=()
    trap 'kill "${BG_PIDS[@]}" 2>/dev/null; exit 130' INT TERM # this runs in $(...): stop the curls
    for ((i = 0; i < PAR; i++)); do
        curl -sS -f --max-time "$T" "$@" -o "$f$i" "$url" >&2 &
        BG_PIDS+=($!)
    done
    for i in "${BG_PIDS[@]}"; do wait "$i" || rc=1; done
    BG_PIDS=()
    ((rc == 0)) && secs "$t0" "$(now_ns)"
}
timed_cmd() { local t0; t0=$(now_ns); "$@" >&2 && secs "$t0" "$(now_ns)"; } # whole process, start-up included
key_of() { echo "$DIRECT_PREFIX/$1/r$2.bin"; }
step() { # method direction round file -> seconds
    local m=$1 d=$2 r=$3 f=$4 k
    k=$(key_of "$m" "$r")
    case $m-$d in
        server-up) srv_up "$r" ;;           server-down) srv_down "$r" "$f" ;;  server-pdown) srv_pdown "$r" "$f" ;;
        redirect-pdown) srv_pdown "$r" "$f" -L ;;
        boto3-up) boto3_ up "$f" "$k" ;;    boto3-down) boto3_ down "$k" "$f" ;; boto3-pdown) boto3_ pdown "$k" "$PAR" "$f" ;;
        aws-up) timed_cmd tmo aws --endpoint-url "$EP" s3 cp --only-show-errors --no-progress "$f" "s3://$BUCKET/$k" ;;
        aws-down) timed_cmd tmo aws --endpoint-url "$EP" s3 cp --only-show-errors --no-progress "s3://$BUCKET/$k" "$f" ;;
        rclone-up) timed_cmd rclone_ "$f" "bench:$BUCKET/$k" ;;
        rclone-down) timed_cmd rclone_ "bench:$BUCKET/$k" "$f" ;;
    esac
}
check() { # files... : each must hash to $HEX; then removed
    local f got
    for f in "$@"; do
        got=$(tmo sha256sum "$f" | cut -d' ' -f1)
        [[ $got == "$HEX" ]] || die "$f hashes to $got, expected $HEX"
        rm -f -- "$f"
    done
}

# shellcheck disable=SC2206 # the list is words
METHODS=(server boto3 ${BENCH_S3_METHODS:-aws rclone})
mapfile -t METHODS < <(printf '%s\n' "${METHODS[@]}" | awk '!seen[$0]++') # server, boto3 first, once each
declare -A SEC # SEC[method-direction] = "s1 s2 ..."
for r in $(seq "$RUNS"); do
    log "round $r/$RUNS: writing $SIZE_MIB MiB of random bytes"
    tmo head -c "$SIZE_BYTES" /dev/urandom >"$SRC"
    HEX=$(tmo sha256sum "$SRC" | cut -d' ' -f1)
    sync
    # Rotate who goes first, so that no method always meets the same state of the store.
    for i in "${!METHODS[@]}"; do
        m=${METHODS[(i + r - 1) % ${#METHODS[@]}]}
        su=$(step "$m" up "$r" "$SRC") || die "$m upload failed"
        sync
        sd=$(step "$m" down "$r" "$WORK/dl.bin") || die "$m download failed"
        check "$WORK/dl.bin"
        SEC[$m-up]+="$su " SEC[$m-down]+="$sd "
        msg="round $r $m: up $su s, down $sd s"
        if [[ $m == server || $m == boto3 ]]; then
            par_files=()
            for ((j = 0; j < PAR; j++)); do par_files+=("$WORK/par.$j"); done
            # The server's object both ways: through the server, and by its redirect.
            ways=("$m")
            if [[ $m == server ]]; then
                code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 60 "$(FILE_URL "$r")") || die "redirect check failed"
                [[ $code == 307 ]] || die "the server answered a file GET $code, not 307 (is [s3] download = \"redirect\" in effect?)"
                ways+=(redirect)
            fi
            for w in "${ways[@]}"; do
                sync
                sp=$(step "$w" pdown "$r" "$WORK/par.") || die "$w parallel download failed"
                SEC[$w-pdown]+="$sp "
                check "${par_files[@]}"
                msg+=", $PAR parallel downloads ($w) $sp s"
            done
        fi
        log "$msg (sha256 verified)"
        if [[ $m != server ]]; then # free the store's space (Ceph's OSD is an 8 GiB file)
            boto3_ rm "$(key_of "$m" "$r")" || die "delete of $(key_of "$m" "$r") failed"
            if [[ $ARTIFACTSTORE_FIXTURE_SERVER == ceph ]]; then
                tmo radosgw-admin -c "$ARTIFACTSTORE_FIXTURE_CEPH_CONF" gc process --include-all >/dev/null 2>&1 \
                    || log "radosgw-admin gc process failed (space is freed later)"
            fi
        fi
        sync
    done
done
RSS_PEAK_KIB=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$SERVER_PID/status")

# ---- report
declare -A MIB
for k in "${!SEC[@]}"; do
    n=$SIZE_BYTES
    [[ $k == *-pdown ]] && n=$((SIZE_BYTES * PAR))
    # shellcheck disable=SC2086 # word splitting of the list of seconds is intended
    MIB[$k]=$(mibps "$n" "$(median ${SEC[$k]})")
done
best() { # direction -> "MiB/s method" of the fastest direct client
    local m b="0 none"
    for m in "${METHODS[@]:1}"; do
        awk -v a="${MIB[$m-$1]}" -v b="${b% *}" 'BEGIN { exit !(a > b) }' && b="${MIB[$m-$1]} $m"
    done
    echo "$b"
}
read -r BU BUM < <(best up)
read -r BD BDM < <(best down)
{
    printf '\n=== S3 mode: %s — %s MiB, median of %s round(s) ===\n' "$STORE" "$SIZE_MIB" "$RUNS"
    printf 'binary %s\nserver %s on %s, prefix %s\nmachine %s CPUs; %s at start, %s at end\n' "${BENCH_S3_BIN_DESC:-$ARTIFACTSTORE_BIN}" \
        "$BASE" "$EP" "$SERVER_PREFIX" "$(nproc)" "$BUSY_START" "$(busy)"
    printf '%-26s %14s %16s   %s\n' method "upload MiB/s" "download MiB/s" "seconds per round (up | down)"
    for m in "${METHODS[@]}"; do
        case $m in server) n="artifactstore proxy (curl)" ;; boto3) n="boto3 upload/download_file" ;; aws) n="aws s3 cp" ;; rclone) n="rclone copyto" ;; esac
        printf '%-26s %14s %16s   %s| %s\n' "$n" "${MIB[$m-up]}" "${MIB[$m-down]}" "${SEC[$m-up]}" "${SEC[$m-down]}"
    done
    printf 'ratio server / best direct: upload %s (vs %s), download %s (vs %s)\n' \
        "$(ratio "${MIB[server-up]}" "$BU")" "$BUM" "$(ratio "${MIB[server-down]}" "$BD")" "$BDM"
    printf '%s parallel downloads of one file, aggregate MiB/s: through the server (proxy) %s, by its redirect (curl -L) %s, boto3 direct %s\n' \
        "$PAR" "${MIB[server-pdown]}" "${MIB[redirect-pdown]}" "${MIB[boto3-pdown]}"
    printf '  ratios: redirect/proxy %s, redirect/boto3 %s, proxy/boto3 %s   (s: proxy %s| redirect %s| boto3 %s)\n' \
        "$(ratio "${MIB[redirect-pdown]}" "${MIB[server-pdown]}")" "$(ratio "${MIB[redirect-pdown]}" "${MIB[boto3-pdown]}")" \
        "$(ratio "${MIB[server-pdown]}" "${MIB[boto3-pdown]}")" "${SEC[server-pdown]}" "${SEC[redirect-pdown]}" "${SEC[boto3-pdown]}"
    printf 'server peak RSS (VmHWM) after the transfers: %s MiB\n' "$(awk -v k="$RSS_PEAK_KIB" 'BEGIN { printf "%.1f", k / 1024 }')"
} >"$BENCH_S3_REPORT"
log "$STORE done"
