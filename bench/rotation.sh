#!/usr/bin/env bash
# Rotation under load: `artifactstore serve --backend s3` on web-identity credentials
# from `artifactstore vend serve` (Garage driver) with 6-second leases, renewed about
# once a second, while 8 clients upload and download continuously (small files and
# two- and three-part multipart files) until BENCH_ROTATIONS rotations — against the
# peer measured in the same run: the same load on the fixture's static Garage keys
# (nothing rotates), BENCH_STATIC_SECS before and as long after the rotating phase.
# Prints requests/s, p50/p99 and the p99 of requests in flight while a rotation
# happened, with and without rotation, and the ratios.
#
# The load is the live test `rotation::load` of the vend test binary, the one CI runs,
# with the static-key phases around it (ARTIFACTSTORE_BENCH_STATIC_SECS): seconds-long leases need the lease-floor test hook, which only
# test builds of the binary have (feature `test-lease-floor`, see crates/cli/Cargo.toml).
#
# Environment (all optional):
#   BENCH_ROTATIONS   rotations to run the rotating phase for (default 100)
#   BENCH_STATIC_SECS seconds of each of the two static-key phases (default 60)
#   BENCH_PROFILE     cargo profile of the test build: release (default) or dev (the
#                     build CI's tests already have: quicker to get, slower server)
#   BENCH_TIMEOUT     bound in seconds of the whole measurement (default 1200)
# Needs what the vend tests need: Garage's cached binary (scripts/s3-fixture.sh), node
# with tests/oidc's npm packages (installed here when missing), curl.
set -euo pipefail
cd "$(dirname "$0")/.."

rotations=${BENCH_ROTATIONS:-100}
static_secs=${BENCH_STATIC_SECS:-60}
profile=${BENCH_PROFILE:-release}
t=${BENCH_TIMEOUT:-1200}
for v in rotations static_secs t; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench-rotation: $v must be a positive integer (got '${!v}')" >&2; exit 2; }
done
case $profile in
  release) cargo_profile=(--release) ;;
  dev) cargo_profile=() ;;
  *) echo "bench-rotation: BENCH_PROFILE must be release or dev (got '$profile')" >&2; exit 2 ;;
esac

[ -d tests/oidc/node_modules/oauth2-mock-server ] || npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
echo "bench-rotation: building the vend test binary ($profile)" >&2
cargo test --locked "${cargo_profile[@]}" -q -p artifactstore --test vend --no-run >&2

out=$(mktemp)
trap 'rm -f "$out"' EXIT
load() {
  echo "bench-rotation: load before: $(cut -d' ' -f1-3 /proc/loadavg), rustc processes: $(pgrep -c rustc || true)" >&2
  timeout --foreground "$t" scripts/s3-fixture.sh garage -- env \
    ARTIFACTSTORE_REQUIRE_LIVE_S3=1 \
    ARTIFACTSTORE_BENCH_ROTATIONS="$rotations" \
    ARTIFACTSTORE_BENCH_STATIC_SECS="$static_secs" \
    ARTIFACTSTORE_ROTATION_LOAD_OUT="$out" \
    cargo test --locked "${cargo_profile[@]}" -q -p artifactstore --test vend -- \
    --exact rotation::load::eight_clients_lose_nothing_across_a_hundred_rotations --nocapture >&2
  echo "bench-rotation: load after: $(cut -d' ' -f1-3 /proc/loadavg), rustc processes: $(pgrep -c rustc || true)" >&2
}
load

python3 - "$out" "$profile" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
r, s = d["rotation"], d["static"]
ratio = lambda a, b: f"{a / b:.2f}x" if b else "n/a"
print(f"\nrotation under load ({r['clients']} clients, {sys.argv[2]} build): {r['seconds']:.0f} s rotating, "
      f"{s['seconds']:.0f} s on static keys (half before, half after: "
      f"{d['static_before']['requests_per_sec']} and {d['static_after']['requests_per_sec']} requests/s)")
print(f"{'':24}{'rotating':>12}{'static keys':>14}{'ratio':>9}")
rows = [
    ("rotations", "rotations", None),
    ("requests", "requests", None),
    ("failed requests", "failures", None),
    ("uploads read back ok", "reads_verified", None),
    ("MiB moved", "mib", None),
    ("requests/s", "requests_per_sec", True),
    ("p50 ms", "p50_ms", True),
    ("p99 ms", "p99_ms", True),
]
for label, key, with_ratio in rows:
    print(f"{label:24}{r[key]:>12}{s[key]:>14}{ratio(r[key], s[key]) if with_ratio else '':>9}")
print(f"{'p99 ms around a rotation':24}{r['around_rotation_p99_ms']:>12}"
      f"   ({r['around_rotation_requests']} requests in flight while the credential changed)")
print(f"{'p99 ms away from one':24}{r['away_from_rotation_p99_ms']:>12}")
print(f"{'  files <= 1 MiB only':24}{r['small_around_rotation_p99_ms']:>12} around, "
      f"{r['small_away_from_rotation_p99_ms']} away")
print(f"forced refreshes (a key refused upstream, request retried): {r['forced_refreshes']:.0f}")
PY
