#!/usr/bin/env bash
# Credential vending throughput, with peers measured in the same run:
#   - token checks and token checks + role decisions per second, in process, two
#     worker threads, keys cached (RS256, the issuer's default) — peer: python joserfc
#     verifying the same token with the same key (one thread);
#   - vend round trips end to end on the garage driver (POST /v1/credentials: token
#     check, decision, two synced audit lines, lease rows, Garage CreateKey +
#     AllowBucketKey), sequential, p50/p99 — peer: the same two Garage admin calls made
#     directly;
#   - a legitimate client's vend latency (paced, one every 40 ms) alone and while 32
#     connections from 127.0.0.2-9 send refused tokens, on the default rate limits,
#     printed as a ratio, with the audit lines the flood added.
# Runs a throwaway Garage (scripts/s3-fixture.sh) and the test OIDC issuer (tests/oidc).
#   BENCH_SECONDS (default 6) for the in-process phases, BENCH_N (default 300) round trips,
#   BENCH_FLOOD_N (default 100) paced vends per flood phase.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${ARTIFACTSTORE_FIXTURE_GARAGE_ADMIN_URL:-}" ]; then
  cargo build --release -q -p artifactstore
  cargo build --release -q -p artifactstore-vend --example vend_bench
  [ -d tests/oidc/node_modules/oauth2-mock-server ] || npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
  exec scripts/s3-fixture.sh garage -- "$0" "$@"
fi

seconds=${BENCH_SECONDS:-6}
n=${BENCH_N:-300}
flood_n=${BENCH_FLOOD_N:-100}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

node tests/oidc/issuer.mjs 0 > "$tmp/issuer.out" &
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/issuer.out" ] && break; sleep 0.1; done
issuer=$(awk '{print $2}' "$tmp/issuer.out")

export ARTIFACTSTORE_VEND_ISSUER=$issuer
export ARTIFACTSTORE_VEND_AUDIENCE=artifactstore-bench
export ARTIFACTSTORE_VEND_BUCKET=$ARTIFACTSTORE_S3_BUCKET
export ARTIFACTSTORE_VEND_AUDIT_LOG=$tmp/audit.log
export ARTIFACTSTORE_VEND_DATABASE_URL="sqlite://$tmp/leases.db?mode=rwc"
export ARTIFACTSTORE_VEND_GARAGE_ADMIN_URL=$ARTIFACTSTORE_FIXTURE_GARAGE_ADMIN_URL
export ARTIFACTSTORE_VEND_GARAGE_ADMIN_TOKEN_REF=$ARTIFACTSTORE_FIXTURE_GARAGE_ADMIN_TOKEN_REF

curl -s -X POST "$issuer/token" -d grant_type=client_credentials \
  --data-urlencode 'claims={"sub":"bench","aud":"artifactstore-bench","groups":["artifact-writers"]}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])' > "$tmp/token"
curl -s "$issuer/jwks" > "$tmp/jwks.json"

echo "== in process: token checks and decisions (${seconds} s, 2 threads)"
target/release/examples/vend_bench decide examples/vend-garage.toml "$tmp/token" "$seconds" | tee "$tmp/decide.json"

echo "== peer: python joserfc, same token and key (1 thread, 3 s)"
python3 - "$tmp/token" "$tmp/jwks.json" "$issuer" > "$tmp/peer.json" <<'PY'
import json, sys, time
from joserfc import jwt
from joserfc.jwk import KeySet
token = open(sys.argv[1]).read().strip()
keys = KeySet.import_key_set(json.load(open(sys.argv[2])))
claims = jwt.JWTClaimsRegistry(iss={"essential": True, "value": sys.argv[3]},
                               aud={"essential": True, "value": "artifactstore-bench"})
n, start = 0, time.perf_counter()
while time.perf_counter() - start < 3:
    t = jwt.decode(token, keys, algorithms=["RS256"])
    claims.validate(t.claims)
    n += 1
print(json.dumps({"token_checks_per_second": n / (time.perf_counter() - start)}))
PY
cat "$tmp/peer.json"

# The round trips below hold $n live leases of one subject at once: raise its cap; and
# turn the one subject's rate limit off (the client limit is what the flood meets).
sed "s/^per_subject = .*/per_subject = $((n + 2 * flood_n + 10))/" examples/vend-garage.toml > "$tmp/vend.toml"
printf '\n[rate_limits]\nper_subject_per_sec = 0\n' >> "$tmp/vend.toml"
target/release/artifactstore vend serve --config "$tmp/vend.toml" --listen 127.0.0.1:0 \
  > "$tmp/vend.out" 2> "$tmp/vend.err" &
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/vend.out" ] && break; sleep 0.1; done
url=$(awk '{print $NF}' "$tmp/vend.out")
if [ -z "$url" ]; then echo "vend serve did not start:" >&2; cat "$tmp/vend.err" >&2; exit 1; fi
for _ in $(seq 100); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.1; done

echo "== end to end: $n sequential vend round trips on the garage driver"
target/release/examples/vend_bench http "$url" "$tmp/token" "$n" | tee "$tmp/http.json"
echo "== peer: $n direct Garage CreateKey + AllowBucketKey"
admin_token_file=${ARTIFACTSTORE_FIXTURE_GARAGE_ADMIN_TOKEN_REF#file:}
target/release/examples/vend_bench garage "$ARTIFACTSTORE_FIXTURE_GARAGE_ADMIN_URL" "$admin_token_file" \
  "$ARTIFACTSTORE_S3_BUCKET" "$n" | tee "$tmp/garage.json"
target/release/artifactstore vend audit verify "$tmp/audit.log"

# A second service on its own audit log and lease store, with the default client limit.
ARTIFACTSTORE_VEND_AUDIT_LOG=$tmp/flood-audit.log \
ARTIFACTSTORE_VEND_DATABASE_URL="sqlite://$tmp/flood-leases.db?mode=rwc" \
  target/release/artifactstore vend serve --config "$tmp/vend.toml" --listen 127.0.0.1:0 \
  > "$tmp/flood.out" 2> "$tmp/flood.err" &
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/flood.out" ] && break; sleep 0.1; done
flood_url=$(awk '{print $NF}' "$tmp/flood.out")
for _ in $(seq 100); do curl -sf "$flood_url/readyz" >/dev/null && break; sleep 0.1; done
echo "== flood: $flood_n paced vends alone, then $flood_n during a 32-connection flood of refused tokens"
target/release/examples/vend_bench flood "$flood_url" "$tmp/token" "$flood_n" 32 | tee "$tmp/flood.json"
# The windows of the flood close within a second of their 60 s; shutting down closes them too.
kill -TERM "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
wc -l < "$tmp/flood-audit.log" > "$tmp/flood-lines"

python3 - "$tmp" <<'PY'
import json, sys
d = lambda name: json.load(open(f"{sys.argv[1]}/{name}.json"))
decide, peer, http, garage = d("decide"), d("peer"), d("http"), d("garage")
flood = d("flood")
flood_lines = int(open(f"{sys.argv[1]}/flood-lines").read())
print()
print(f"token checks/s        {decide['token_checks_per_second']:>10.0f}   "
      f"joserfc {peer['token_checks_per_second']:.0f}/s   ratio {decide['token_checks_per_second'] / peer['token_checks_per_second']:.2f}x")
print(f"checks+decisions/s    {decide['decisions_per_second']:>10.0f}")
print(f"vend round trips/s    {http['per_second']:>10.1f}   p50 {http['p50_ms']:.2f} ms  p99 {http['p99_ms']:.2f} ms")
print(f"garage direct/s       {garage['per_second']:>10.1f}   p50 {garage['p50_ms']:.2f} ms  p99 {garage['p99_ms']:.2f} ms")
print(f"vend / garage direct  {http['per_second'] / garage['per_second']:>10.2f}x")
a, f = flood["alone"], flood["during"]
print(f"vend alone            p50 {a['p50_ms']:.2f} ms  p99 {a['p99_ms']:.2f} ms")
print(f"vend during flood     p50 {f['p50_ms']:.2f} ms  p99 {f['p99_ms']:.2f} ms   "
      f"({flood['connections']} connections, {flood['flood_per_second']:.0f} refused/s, "
      f"{flood['flood_rate_limited']} of {flood['flood_requests']} rate limited)")
print(f"flood / alone         p50 {flood['p50_ratio']:.2f}x  p99 {flood['p99_ratio']:.2f}x   "
      f"audit lines of the flood service: {flood_lines} for {flood['flood_requests']} refusals "
      f"and {4 * a['n']} allow/issue lines")
PY
