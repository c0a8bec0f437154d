#!/usr/bin/env bash
# Runs CMD with the S3 backend on short-lived credentials: inside
# `scripts/s3-fixture.sh garage`, starts the test OIDC issuer (tests/oidc) and
# `artifactstore vend serve` on examples/vend-garage.toml (Garage driver), writes a
# token for the role ci-writer, and exports
#   ARTIFACTSTORE_S3_CREDENTIALS_SOURCE=web-identity
#   ARTIFACTSTORE_S3_WEB_IDENTITY_TOKEN_FILE, ARTIFACTSTORE_S3_STS_ENDPOINT_URL,
#   ARTIFACTSTORE_S3_ROLE_ARN
# so that every `artifactstore serve --backend s3` (and `storage verify`) in CMD reaches
# Garage only with vended credentials. The fixture's static keys stay exported for tests
# that inspect the bucket directly; the explicit source makes the server ignore them.
#   scripts/s3-fixture.sh garage -- scripts/vend-fixture.sh -- CMD...
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "--" ] && shift
[ -n "${ARTIFACTSTORE_FIXTURE_GARAGE_ADMIN_URL:-}" ] || { echo "vend-fixture: run inside scripts/s3-fixture.sh garage" >&2; exit 2; }
[ -d tests/oidc/node_modules/oauth2-mock-server ] || npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
# The binary the test build made (scripts/test.sh runs `cargo test` first): building it
# here would be a third build configuration, since the test build's dev-dependency
# features are not unified into a plain `cargo build`.
bin=${ARTIFACTSTORE_BIN:-target/debug/artifactstore}
[ -x "$bin" ] || { echo "vend-fixture: $bin not found; run 'cargo test --workspace' first or set ARTIFACTSTORE_BIN" >&2; exit 2; }

dir=$(mktemp -d)
chmod 700 "$dir"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

node tests/oidc/issuer.mjs 0 > "$dir/issuer.out" &
pids+=($!)
for _ in $(seq 100); do [ -s "$dir/issuer.out" ] && break; sleep 0.1; done
issuer=$(awk '{print $2}' "$dir/issuer.out")
[ -n "$issuer" ] || { echo "vend-fixture: the OIDC issuer did not start" >&2; exit 1; }

# The example as shipped, but for the per-subject lease cap: every server the suites
# start is one more live lease of the one CI subject, more than the example's 50.
sed 's/^per_subject = .*/per_subject = 1000/' examples/vend-garage.toml > "$dir/vend.toml"

ARTIFACTSTORE_VEND_ISSUER=$issuer \
ARTIFACTSTORE_VEND_AUDIENCE=artifactstore \
ARTIFACTSTORE_VEND_BUCKET=$ARTIFACTSTORE_S3_BUCKET \
ARTIFACTSTORE_VEND_AUDIT_LOG=$dir/vend-audit.log \
ARTIFACTSTORE_VEND_DATABASE_URL="sqlite://$dir/vend-leases.db?mode=rwc" \
ARTIFACTSTORE_VEND_GARAGE_ADMIN_URL=$ARTIFACTSTORE_FIXTURE_GARAGE_ADMIN_URL \
ARTIFACTSTORE_VEND_GARAGE_ADMIN_TOKEN_REF=$ARTIFACTSTORE_FIXTURE_GARAGE_ADMIN_TOKEN_REF \
  "$bin" vend serve --config "$dir/vend.toml" --listen 127.0.0.1:0 \
  > "$dir/vend.out" 2> "$dir/vend.err" &
pids+=($!)
for _ in $(seq 100); do [ -s "$dir/vend.out" ] && break; sleep 0.1; done
vend=$(awk '{print $NF}' "$dir/vend.out")
[ -n "$vend" ] || { echo "vend-fixture: vend serve did not start:" >&2; cat "$dir/vend.err" >&2; exit 1; }
for _ in $(seq 100); do curl -sf "$vend/readyz" >/dev/null && break; sleep 0.1; done

# A token that lives 4 hours, long enough for the slowest test run.
now=$(date +%s)
curl -sf -X POST "$issuer/token" -d grant_type=client_credentials \
  --data-urlencode "claims={\"sub\":\"artifactstore-ci\",\"aud\":\"artifactstore\",\"groups\":[\"artifact-writers\"],\"exp\":$((now + 14400))}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])' > "$dir/token"
chmod 600 "$dir/token"

export ARTIFACTSTORE_S3_CREDENTIALS_SOURCE=web-identity
export ARTIFACTSTORE_S3_WEB_IDENTITY_TOKEN_FILE=$dir/token
export ARTIFACTSTORE_S3_STS_ENDPOINT_URL=$vend
export ARTIFACTSTORE_S3_ROLE_ARN=arn:aws:iam::000000000000:role/ci-writer
export ARTIFACTSTORE_FIXTURE_VEND_URL=$vend
export ARTIFACTSTORE_FIXTURE_ISSUER_URL=$issuer
echo "vend-fixture: S3 credentials from web identity at $vend (issuer $issuer)" >&2
"$@"
