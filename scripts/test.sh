#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test of every crate.
# Services a test needs are started by .ci/run (and by the fixture scripts it calls);
# the tests in this workspace that need nothing else always run.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
