#!/usr/bin/env bash
# The whole test suite:
#   1. formatting and lints;
#   2. every test of every crate (fs, SQLite, in-process S3), with PostgreSQL too when
#      its server binaries are installed (scripts/with-postgres.sh starts a throwaway one),
#      and the browser at /ui/ in headless Chromium (tests/ui);
#   3. the live S3 stage: the S3 backend's conformance suite, the end-to-end suite on
#      `serve --backend s3` (two replicas on one PostgreSQL and one bucket included),
#      the kill test and `storage verify`, against a real Garage
#      started by scripts/s3-fixture.sh (its binary is built once, ~25 min, and cached
#      in ~/.cache/artifact-store), then against Ceph RGW (Debian packages, started by
#      `scripts/s3-fixture.sh ceph`) and on Ceph's STS (the vend `sts` driver under
#      enforced session policies, the server on web-identity and assume-role credentials
#      straight from it), then against RustFS when its binary is cached;
#      the same suites again with the server on web-identity credentials vended by
#      `artifactstore vend serve` (scripts/vend-fixture.sh); and credential vending on
#      its Garage driver (real OIDC issuer, unmodified boto3); and the compatibility
#      matrix (`storage compat` on Garage, Ceph RGW, s3s-fs and moto) checked against
#      docs/compatibility.md by scripts/compat-matrix.sh --check.
# The vending tests need node (tests/oidc: npm oauth2-mock-server, installed here when
# missing) and python3 with boto3 and moto[server]; this script makes them required,
# so a missing one fails instead of skipping.
# ARTIFACTSTORE_SKIP_LIVE=1 skips stage 3 (say so when you report results).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d tests/oidc/node_modules/oauth2-mock-server ]; then
  npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
fi
export ARTIFACTSTORE_REQUIRE_VEND_DEPS=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# With PostgreSQL installed, tests run with a throwaway server (scripts/with-postgres.sh).
with_pg=()
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  with_pg=(scripts/with-postgres.sh --)
else
  echo "test.sh: PostgreSQL server binaries not installed: PostgreSQL tests NOT run" >&2
fi

"${with_pg[@]}" cargo test --workspace --locked

# The end-to-end HTTP API and CLI suites once more with [auth] on: every server the tests
# start trusts one static token that grants everything, and every client sends it.
ARTIFACTSTORE_TEST_AUTH=1 cargo test --locked -p artifactstore --test e2e -- http_api:: cli::

# The browser at /ui/, end to end in Debian's headless Chromium (tests/ui: npm
# playwright-core) against the debug binary; required, so a missing Chromium fails.
if ! command -v chromium >/dev/null; then
  echo "test.sh: chromium is not installed (apt-get install chromium): the browser tests cannot run" >&2
  exit 1
fi
cargo build --locked -p artifactstore
if [ ! -d tests/ui/node_modules/playwright-core ]; then
  npm ci --prefix tests/ui --no-audit --no-fund --loglevel=error
fi
ARTIFACTSTORE_BIN="${CARGO_TARGET_DIR:-target}/debug/artifactstore" node --test tests/ui/

if [ "${ARTIFACTSTORE_SKIP_LIVE:-0}" = 1 ]; then
  echo "test.sh: ARTIFACTSTORE_SKIP_LIVE=1: live S3 tests NOT run" >&2
  exit 0
fi

# The e2e binary (crates/cli/tests/e2e) holds the HTTP API, CLI, kill and storage
# verify tests, every one of which runs here.
live_tests=(cargo test --locked
  -p artifactstore-blob --test s3
  -p artifactstore --test e2e)

echo "== live S3: Garage"
"${with_pg[@]}" scripts/s3-fixture.sh garage -- env ARTIFACTSTORE_REQUIRE_LIVE_S3=1 ARTIFACTSTORE_TEST_BACKEND=s3 "${live_tests[@]}"

echo "== live S3 on short-lived credentials: web identity at the vend service (Garage driver)"
"${with_pg[@]}" scripts/s3-fixture.sh garage -- scripts/vend-fixture.sh -- env ARTIFACTSTORE_REQUIRE_LIVE_S3=1 ARTIFACTSTORE_TEST_BACKEND=s3 "${live_tests[@]}"

echo "== live credential vending: Garage driver"
scripts/s3-fixture.sh garage -- env ARTIFACTSTORE_REQUIRE_LIVE_S3=1 cargo test --locked -p artifactstore --test vend -- live:: rotation:: crash:: break_glass:: admin::

echo "== live S3: Ceph RGW"
"${with_pg[@]}" scripts/s3-fixture.sh ceph -- env ARTIFACTSTORE_REQUIRE_LIVE_S3=1 ARTIFACTSTORE_TEST_BACKEND=s3 "${live_tests[@]}"

echo "== live STS: Ceph RGW (the vend sts driver, and the web-identity and assume-role sources)"
scripts/s3-fixture.sh ceph -- env ARTIFACTSTORE_REQUIRE_LIVE_S3=1 cargo test --locked -p artifactstore --test vend -- ceph::

echo "== compatibility matrix: docs/compatibility.md is what every store here answers today"
scripts/compat-matrix.sh --check

echo "== live S3: RustFS"
set +e
"${with_pg[@]}" scripts/s3-fixture.sh rustfs -- env ARTIFACTSTORE_REQUIRE_LIVE_S3=1 ARTIFACTSTORE_TEST_BACKEND=s3 "${live_tests[@]}"
rc=$?
set -e
if [ "$rc" = 77 ]; then
  echo "test.sh: RustFS binary not cached: RustFS live tests NOT run (see scripts/s3-fixture.sh)" >&2
elif [ "$rc" != 0 ]; then
  exit "$rc"
fi
