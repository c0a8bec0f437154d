#!/usr/bin/env bash
# Throughput benchmark of `artifactstore serve` against plain cp+sync on the same disk.
# See bench/README.md for what is measured and how to read the ratios.
#
# Environment (all optional):
#   ARTIFACTSTORE_BIN   use this binary instead of building target/release/artifactstore
#   BENCH_DIR           parent of the temporary work dir (default /tmp); all files of the
#                       benchmark (source, copies, server data dir) live on its disk
#   BENCH_SIZE_MIB      size of the large file in MiB (default 1024)
#   BENCH_RUNS          repetitions of each large-file measurement; the median is reported
#                       (default 1)
#   BENCH_SMALL_COUNT   number of small files (default 1000)
#   BENCH_SMALL_KIB     size of each small file in KiB (default 4)
#   BENCH_JOBS          --jobs for the CLI small-file upload (default 8)
#   BENCH_TIMEOUT       upper bound in seconds for any single step (default 900)
#   BENCH_KEEP=1        keep the work dir (prints its path) instead of deleting it
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

BENCH_DIR=${BENCH_DIR:-/tmp}
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
RUNS=${BENCH_RUNS:-1}
SMALL_COUNT=${BENCH_SMALL_COUNT:-1000}
SMALL_KIB=${BENCH_SMALL_KIB:-4}
JOBS=${BENCH_JOBS:-8}
T=${BENCH_TIMEOUT:-900}
KEEP=${BENCH_KEEP:-0}

for pair in SIZE_MIB:BENCH_SIZE_MIB RUNS:BENCH_RUNS SMALL_COUNT:BENCH_SMALL_COUNT SMALL_KIB:BENCH_SMALL_KIB \
    JOBS:BENCH_JOBS T:BENCH_TIMEOUT; do
    v=${pair%%:*}
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench: ${pair#*:} must be a positive integer (got '${!v}')" >&2; exit 2; }
done
for tool in curl python3 sha256sum timeout awk cp sync tar; do
    command -v "$tool" >/dev/null || { echo "bench: needs $tool" >&2; exit 2; }
done

SIZE_BYTES=$((SIZE_MIB * 1048576))
SMALL_BYTES=$((SMALL_KIB * 1024))
WORK=""
SERVER_PID=""

log() { printf '%s\n' "$*" >&2; }
die() { log "bench: ERROR: $*"; exit 1; }

cleanup() {
    local rc=$?
    set +e
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    if [[ $rc -ne 0 && -n $WORK && -s $WORK/server.err ]]; then
        log "--- last lines of the server's stderr ---"
        tail -n 20 "$WORK/server.err" >&2
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ $KEEP == 1 ]]; then
            log "bench: work dir kept: $WORK"
        else
            rm -rf -- "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
mibps() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", (s > 0) ? n / 1048576 / s : 0 }'; }
per_s() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", (s > 0) ? n / s : 0 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# Runs "$@" (a command or one of the functions below, each bounded by the step timeout)
# and prints the elapsed seconds on stdout.
timed() {
    local t0 t1
    t0=$(now_ns)
    "$@"
    t1=$(now_ns)
    secs "$t0" "$t1"
}

# ---------------------------------------------------------------- 1. the binary
if [[ -n ${ARTIFACTSTORE_BIN:-} ]]; then
    BIN=$ARTIFACTSTORE_BIN
    [[ -x $BIN ]] || die "ARTIFACTSTORE_BIN=$BIN is not an executable file"
else
    log "bench: building the release binary (cargo build --release -p artifactstore)"
    (cd "$ROOT" && timeout 3600 cargo build --release -p artifactstore) >&2
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/artifactstore
    [[ -x $BIN ]] || die "no binary at $BIN after the build"
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

# ---------------------------------------------------------------- 2. work dir and data
mkdir -p "$BENCH_DIR"
avail_kib=$(df -Pk "$BENCH_DIR" | awk 'NR == 2 { print $4 }')
need_kib=$(( (3 * SIZE_BYTES + 3 * SMALL_COUNT * (SMALL_BYTES + 4096)) / 1024 + 512 * 1024 ))
(( avail_kib >= need_kib )) || die "$BENCH_DIR has $((avail_kib / 1024)) MiB free, needs about $((need_kib / 1024)) MiB"
WORK=$(mktemp -d "$BENCH_DIR/artifactstore-bench.XXXXXX")
DATA=$WORK/data
SRC=$WORK/big.bin
FS_DESC=$(df -PT "$WORK" | awk 'NR == 2 { print $1 " (" $2 ") mounted on " $7 }')

log "bench: writing $SIZE_MIB MiB of random bytes to $SRC"
timeout "$T" head -c "$SIZE_BYTES" /dev/urandom >"$SRC"
[[ $(stat -c %s "$SRC") -eq $SIZE_BYTES ]] || die "short random file"
HEX=$(timeout "$T" sha256sum "$SRC" | cut -d' ' -f1)
DIGEST="sha256:$HEX"
sync

# ---------------------------------------------------------------- server
server_env=(env)
while IFS= read -r name; do
    [[ $name == ARTIFACTSTORE_* ]] && server_env+=(-u "$name")
done < <(compgen -e)
server_env+=(RUST_LOG=info)

"${server_env[@]}" "$BIN" serve --listen 127.0.0.1:0 --data-dir "$DATA" \
    >"$WORK/server.out" 2>"$WORK/server.err" </dev/null &
SERVER_PID=$!
BASE=""
for _ in $(seq 300); do
    BASE=$(grep -m1 -o 'http://127\.0\.0\.1:[0-9]*' "$WORK/server.out" 2>/dev/null || true)
    [[ -n $BASE ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited during start-up"
    sleep 0.1
done
[[ -n $BASE ]] || die "the server did not print its address within 30 s"
log "bench: server pid $SERVER_PID at $BASE, data dir $DATA"

vm_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$SERVER_PID/status"; }

# Mean server-side time of the file PUT route (sum and count from /metrics).
put_route_stats() {
    curl -sS --max-time 10 "$BASE/metrics" | awk '
        BEGIN { r = "{route=\"/v1/artifacts/{namespace}/{name}/{version}/{*path}\"} " }
        index($0, "artifactstore_http_request_duration_seconds_sum" r) == 1 { s = $2 }
        index($0, "artifactstore_http_request_duration_seconds_count" r) == 1 { c = $2 }
        END { printf "%s %s\n", (s == "" ? 0 : s), (c == "" ? 0 : c) }'
}

cp_sync() { timeout "$T" cp -- "$1" "$2" && timeout "$T" sync; }
curl_put() {
    local code
    code=$(curl -sS --max-time "$T" -T "$SRC" -H "X-Artifact-Digest: $DIGEST" \
        -H "Content-Type: application/octet-stream" -o "$WORK/put.json" -w '%{http_code}' "$1")
    [[ $code == 201 ]] || { log "PUT $1 -> HTTP $code: $(head -c 500 "$WORK/put.json")"; return 1; }
}
curl_get_sync() { curl -sS -f --max-time "$T" -o "$2" "$1" && timeout "$T" sync; }

cached_pct() {  # share of a file resident in the page cache, if fincore is available
    if command -v fincore >/dev/null; then
        fincore -nb -o RES "$1" 2>/dev/null | awk -v n="$2" '{ printf "%.0f%%", ($1 / n) * 100 }'
    else
        printf 'unknown'
    fi
}

# ---------------------------------------------------------------- 3+4. large file
up_peer=() up_srv=() down_peer=() down_srv=() null_peer=() null_srv=()
SRC_CACHED=$(cached_pct "$SRC" "$SIZE_BYTES")
for run in $(seq "$RUNS"); do
    url="$BASE/v1/artifacts/bench/big/r$run/big.bin"
    # New bytes every run: the same content again would be deduplicated (hashed and
    # compared, never written), which measures something else.
    if (( run > 1 )); then
        printf 'run %08d' "$run" | dd of="$SRC" bs=1 seek=0 conv=notrunc status=none
        DIGEST="sha256:$(timeout "$T" sha256sum "$SRC" | cut -d' ' -f1)"
    fi
    # Alternate who goes first so that neither side always meets a warmer/colder disk.
    if (( run % 2 )); then order="peer server"; else order="server peer"; fi
    for who in $order; do
        sync
        if [[ $who == peer ]]; then
            s=$(timed cp_sync "$SRC" "$WORK/cp-dest.bin") || die "cp+sync failed"
            up_peer+=("$s")
            rm -f -- "$WORK/cp-dest.bin"
        else
            s=$(timed curl_put "$url") || die "upload failed"
            up_srv+=("$s")
        fi
        sync
    done
    log "bench: run $run upload: cp+sync ${up_peer[-1]} s, server ${up_srv[-1]} s"
done
curl -sS -f --max-time 60 -X POST -o /dev/null "$BASE/v1/artifacts/bench/big/r1/complete" \
    || die "complete of bench/big@r1 failed"

BLOB=$DATA/blobs/sha256/${HEX:0:2}/$HEX
[[ -f $BLOB ]] || die "stored blob not found at $BLOB"
[[ $(stat -c %s "$BLOB") -eq $SIZE_BYTES ]] || die "stored blob has the wrong size"
BLOB_CACHED=$(cached_pct "$BLOB" "$SIZE_BYTES")
for run in $(seq "$RUNS"); do
    url="$BASE/v1/artifacts/bench/big/r1/big.bin"
    if (( run % 2 )); then order="peer server"; else order="server peer"; fi
    for who in $order; do
        sync
        if [[ $who == peer ]]; then
            s=$(timed cp_sync "$BLOB" "$WORK/cp-down.bin") || die "cp+sync of the blob failed"
            down_peer+=("$s")
            rm -f -- "$WORK/cp-down.bin"
        else
            s=$(timed curl_get_sync "$url" "$WORK/download.bin") || die "download failed"
            down_srv+=("$s")
            got=$(timeout "$T" sha256sum "$WORK/download.bin" | cut -d' ' -f1)
            [[ $got == "$HEX" ]] || die "downloaded file hashes to $got, expected $HEX"
            rm -f -- "$WORK/download.bin"
        fi
        sync
    done
    # The same without the client's write: what the server itself delivers, against
    # reading the blob from the page cache. A client's own write path (curl writes 16 KiB
    # at a time) can cost more than the server's whole answer.
    for who in $order; do
        if [[ $who == peer ]]; then
            s=$(timed sh -c 'cat -- "$1" >/dev/null' _ "$BLOB") || die "cat of the blob failed"
            null_peer+=("$s")
        else
            s=$(timed curl -sS -f --max-time "$T" -o /dev/null "$url") || die "download to /dev/null failed"
            null_srv+=("$s")
        fi
    done
    log "bench: run $run download: cp+sync ${down_peer[-1]} s, server ${down_srv[-1]} s (sha256 verified); to /dev/null: cat ${null_peer[-1]} s, server ${null_srv[-1]} s"
done
RSS_AFTER_BIG=$(vm_kib VmHWM)

m_up_peer=$(median "${up_peer[@]}")
m_up_srv=$(median "${up_srv[@]}")
m_down_peer=$(median "${down_peer[@]}")
m_down_srv=$(median "${down_srv[@]}")
UP_PEER=$(mibps "$SIZE_BYTES" "$m_up_peer")
UP_SRV=$(mibps "$SIZE_BYTES" "$m_up_srv")
DOWN_PEER=$(mibps "$SIZE_BYTES" "$m_down_peer")
DOWN_SRV=$(mibps "$SIZE_BYTES" "$m_down_srv")
UP_RATIO=$(ratio "$UP_SRV" "$UP_PEER")
DOWN_RATIO=$(ratio "$DOWN_SRV" "$DOWN_PEER")
m_null_peer=$(median "${null_peer[@]}")
m_null_srv=$(median "${null_srv[@]}")
NULL_PEER=$(mibps "$SIZE_BYTES" "$m_null_peer")
NULL_SRV=$(mibps "$SIZE_BYTES" "$m_null_srv")
NULL_RATIO=$(ratio "$NULL_SRV" "$NULL_PEER")

# ---------------------------------------------------------------- 6. small files
# Each run uploads fresh files (new bytes, a new version), so nothing is deduplicated.
small_peer=(); small_fsync=(); small_cli=(); small_py=()
read -r m_sum0 m_cnt0 < <(put_route_stats)
for run in $(seq "$RUNS"); do
    log "bench: run $run small files: writing 3 x $SMALL_COUNT files of $SMALL_KIB KiB"
    for d in small-cp small-cli-$run small-py; do
        rm -rf -- "${WORK:?}/$d"
        timeout "$T" python3 "$HERE/smallfiles.py" gen "$WORK/$d" "$SMALL_COUNT" "$SMALL_BYTES"
    done
    sync

    s=$(timed timeout "$T" sh -c 'cp -r -- "$1" "$2" && sync' _ "$WORK/small-cp" "$WORK/small-cp-dest") || die "cp -r failed"
    small_peer+=("$s")
    rm -rf -- "$WORK/small-cp-dest"
    sync

    s=$(timeout "$T" python3 "$HERE/smallfiles.py" fsync-peer "$WORK/small-cp" "$WORK/small-fsync-dest") \
        || die "fsync peer failed"
    small_fsync+=("${s##*seconds=}")
    rm -rf -- "$WORK/small-fsync-dest"
    sync

    cli_put() {
        timeout "$T" env ARTIFACTSTORE_URL="$BASE" "$BIN" put "bench/small@cli-$run" "$WORK/small-cli-$run" \
            --jobs "$JOBS" >"$WORK/cli.out" 2>"$WORK/cli.err"
    }
    s=$(timed cli_put) || { cat "$WORK/cli.err" >&2; die "CLI put failed"; }
    small_cli+=("$s")
    added=$(grep -c '^added ' "$WORK/cli.out" || true)
    [[ $added -eq $SMALL_COUNT ]] || die "CLI reported $added files added, expected $SMALL_COUNT"
    sync

    s=$(timeout "$T" python3 "$HERE/smallfiles.py" upload "$BASE" bench small "py-$run" "$WORK/small-py" 60) \
        || die "python keep-alive upload failed"
    [[ $s == "files=$SMALL_COUNT "* ]] || die "python upload reported '$s'"
    small_py+=("${s##*seconds=}")
    log "bench: run $run small files: cp -r+sync ${small_peer[-1]} s, fsync loop ${small_fsync[-1]} s, CLI ${small_cli[-1]} s, keep-alive ${small_py[-1]} s"
done
read -r m_sum1 m_cnt1 < <(put_route_stats)

# Check the server recorded what we sent.
for run in $(seq "$RUNS"); do
    for v in "cli-$run" "py-$run"; do
        n=$(curl -sS -f --max-time 60 "$BASE/v1/artifacts/bench/small/$v" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["file_count"])')
        [[ $n -eq $SMALL_COUNT ]] || die "bench/small@$v holds $n files, expected $SMALL_COUNT"
    done
done

SMALL_PEER_S=$(median "${small_peer[@]}")
SMALL_FSYNC_S=$(median "${small_fsync[@]}")
SMALL_CLI_S=$(median "${small_cli[@]}")
SMALL_PY_S=$(median "${small_py[@]}")
SMALL_PEER=$(per_s "$SMALL_COUNT" "$SMALL_PEER_S")
SMALL_FSYNC=$(per_s "$SMALL_COUNT" "$SMALL_FSYNC_S")
SMALL_CLI=$(per_s "$SMALL_COUNT" "$SMALL_CLI_S")
SMALL_PY=$(per_s "$SMALL_COUNT" "$SMALL_PY_S")
SRV_MS=$(awk -v a="$m_sum0" -v b="$m_sum1" -v c="$m_cnt0" -v d="$m_cnt1" 'BEGIN { printf "%.2f", (d > c) ? (b - a) / (d - c) * 1000 : 0 }')

# ---------------------------------------------------------------- 7. whole versions as tar
# The server's `?format=tar` of a version against `tar -cf` of the same files on disk:
# the CLI's small-file version of run 1, and the large file's version. Both write the
# archive to a file (page cache; no sync on either side); the archive's member count is
# checked afterwards, not timed.
complete_version() {
    curl -sS -f --max-time 60 -X POST -o /dev/null "$BASE/v1/artifacts/$1/complete" \
        || die "complete of $1 failed"
}
complete_version bench/small/cli-1
mkdir -p "$WORK/tar-big" && ln -f "$BLOB" "$WORK/tar-big/big.bin"  # bench/big@r1's bytes
tar_small_peer=(); tar_small_srv=(); tar_big_peer=(); tar_big_srv=()
for run in $(seq "$RUNS"); do
    if (( run % 2 )); then order="peer server"; else order="server peer"; fi
    for who in $order; do
        rm -f -- "$WORK/out.tar"
        if [[ $who == peer ]]; then
            s=$(timed timeout "$T" tar -cf "$WORK/out.tar" -C "$WORK/small-cli-1" .) || die "tar of the small files failed"
            tar_small_peer+=("$s")
            rm -f -- "$WORK/out.tar"
            s=$(timed timeout "$T" tar -cf "$WORK/out.tar" -C "$WORK/tar-big" .) || die "tar of the large file failed"
            tar_big_peer+=("$s")
        else
            s=$(timed curl -sS -f --max-time "$T" -o "$WORK/out.tar" "$BASE/v1/artifacts/bench/small/cli-1?format=tar") \
                || die "format=tar of the small files failed"
            n=$(tar -tf "$WORK/out.tar" | grep -vc '/$' || true)
            [[ $n -eq $SMALL_COUNT ]] || die "format=tar held $n files, expected $SMALL_COUNT"
            tar_small_srv+=("$s")
            rm -f -- "$WORK/out.tar"
            s=$(timed curl -sS -f --max-time "$T" -o "$WORK/out.tar" "$BASE/v1/artifacts/bench/big/r1?format=tar") \
                || die "format=tar of the large file failed"
            tar_big_srv+=("$s")
        fi
    done
done
rm -f -- "$WORK/out.tar"
TAR_SMALL_PEER=$(per_s "$SMALL_COUNT" "$(median "${tar_small_peer[@]}")")
TAR_SMALL_SRV=$(per_s "$SMALL_COUNT" "$(median "${tar_small_srv[@]}")")
TAR_BIG_PEER=$(mibps "$SIZE_BYTES" "$(median "${tar_big_peer[@]}")")
TAR_BIG_SRV=$(mibps "$SIZE_BYTES" "$(median "${tar_big_srv[@]}")")

# ---------------------------------------------------------------- 5+7. RSS, stop
RSS_PEAK=$(vm_kib VmHWM)
RSS_NOW=$(vm_kib VmRSS)
kill -TERM "$SERVER_PID"
stopped=0
for _ in $(seq 300); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then stopped=1; break; fi
    sleep 0.1
done
(( stopped )) || die "the server did not stop within 30 s of SIGTERM"
server_rc=0
wait "$SERVER_PID" || server_rc=$?
SERVER_PID=""
[[ $server_rc -eq 0 ]] || die "the server exited with status $server_rc after SIGTERM"

# ---------------------------------------------------------------- report
MEM_AVAIL_MIB=$(awk '/^MemAvailable:/ { printf "%d", $2 / 1024 }' /proc/meminfo)
runs_note=""
(( RUNS > 1 )) && runs_note=" (median of $RUNS runs)"
cat <<EOF

==================== artifactstore benchmark ====================
binary      $BIN
disk        $FS_DESC
host        $(nproc) CPUs, ${MEM_AVAIL_MIB} MiB RAM available at the end
server      $BASE (loopback), fresh data dir, SQLite index

large file: $SIZE_MIB MiB of random bytes$runs_note
  peer  upload   = cp FILE DEST && sync        $(printf '%8.1f' "$UP_PEER") MiB/s  (${m_up_peer} s)
  peer  download = cp BLOB NEW && sync         $(printf '%8.1f' "$DOWN_PEER") MiB/s  (${m_down_peer} s)
  upload   $(printf '%8.1f' "$UP_SRV") MiB/s  ratio vs cp+sync $UP_RATIO   (${m_up_srv} s; curl -T, answered after fsync)
  download $(printf '%8.1f' "$DOWN_SRV") MiB/s  ratio vs cp+sync $DOWN_RATIO   (${m_down_srv} s; curl -o FILE && sync; sha256 verified)
  delivery (no client write): cat BLOB >/dev/null $(printf '%8.1f' "$NULL_PEER") MiB/s, server to curl -o /dev/null $(printf '%8.1f' "$NULL_SRV") MiB/s, ratio $NULL_RATIO
  runs (s): upload peer [${up_peer[*]}] server [${up_srv[*]}]
            download peer [${down_peer[*]}] server [${down_srv[*]}]
            to /dev/null cat [${null_peer[*]}] server [${null_srv[*]}]
  page cache: source file ${SRC_CACHED} resident before the upload, stored blob
              ${BLOB_CACHED} resident before the download. Reads on both sides come
              from RAM; no cache drop was attempted (needs root). Only writes+sync hit
              the disk.

small files: $SMALL_COUNT x $SMALL_KIB KiB$runs_note
  peer  cp -r DIR DEST && sync        $(printf '%8.1f' "$SMALL_PEER") files/s  (${SMALL_PEER_S} s)
  peer  fsync loop, one file at a time $(printf '%7.1f' "$SMALL_FSYNC") files/s  (${SMALL_FSYNC_S} s; write+fsync+rename+fsync(dir), python)
  CLI   put --jobs $JOBS                   $(printf '%8.1f' "$SMALL_CLI") files/s  ratio vs fsync loop $(ratio "$SMALL_CLI" "$SMALL_FSYNC"), vs cp -r+sync $(ratio "$SMALL_CLI" "$SMALL_PEER")  (${SMALL_CLI_S} s)
  python keep-alive, 1 connection     $(printf '%8.1f' "$SMALL_PY") files/s  ratio vs fsync loop $(ratio "$SMALL_PY" "$SMALL_FSYNC"), vs cp -r+sync $(ratio "$SMALL_PY" "$SMALL_PEER")  (${SMALL_PY_S} s)
  mean server time per PUT, both clients: ${SRV_MS} ms (from /metrics)
  runs (s): cp -r [${small_peer[*]}] fsync loop [${small_fsync[*]}] CLI [${small_cli[*]}] keep-alive [${small_py[*]}]

whole version as tar (?format=tar, curl -o FILE) vs tar -cf FILE of the same files on disk$runs_note
  $SMALL_COUNT x $SMALL_KIB KiB   tar $(printf '%8.1f' "$TAR_SMALL_PEER") files/s   server $(printf '%8.1f' "$TAR_SMALL_SRV") files/s   ratio $(ratio "$TAR_SMALL_SRV" "$TAR_SMALL_PEER")
  1 x $SIZE_MIB MiB        tar $(printf '%8.1f' "$TAR_BIG_PEER") MiB/s     server $(printf '%8.1f' "$TAR_BIG_SRV") MiB/s     ratio $(ratio "$TAR_BIG_SRV" "$TAR_BIG_PEER")

server memory
  peak RSS (VmHWM) after the large file      $(kib_to_mib "$RSS_AFTER_BIG") MiB
  peak RSS (VmHWM) right before SIGTERM      $(kib_to_mib "$RSS_PEAK") MiB   (VmRSS then $(kib_to_mib "$RSS_NOW") MiB)
  stopped on SIGTERM with status $server_rc

summary
  upload   $(printf '%8.1f' "$UP_SRV") MiB/s  ratio vs cp+sync $UP_RATIO
  download $(printf '%8.1f' "$DOWN_SRV") MiB/s  ratio vs cp+sync $DOWN_RATIO
  delivery $(printf '%8.1f' "$NULL_SRV") MiB/s  ratio vs cat $NULL_RATIO (no client write)
  small files CLI --jobs $JOBS $(printf '%8.1f' "$SMALL_CLI") files/s  ratio vs fsync loop $(ratio "$SMALL_CLI" "$SMALL_FSYNC")
  small files keep-alive   $(printf '%8.1f' "$SMALL_PY") files/s  ratio vs fsync loop $(ratio "$SMALL_PY" "$SMALL_FSYNC")
  tar of a version         small files ratio $(ratio "$TAR_SMALL_SRV" "$TAR_SMALL_PEER"), large file ratio $(ratio "$TAR_BIG_SRV" "$TAR_BIG_PEER")
  peak RSS                 $(kib_to_mib "$RSS_PEAK") MiB
=================================================================
EOF
