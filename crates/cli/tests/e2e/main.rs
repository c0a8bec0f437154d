//! The end-to-end tests of the `artifactstore` binary, in one test binary: the HTTP API,
//! the client commands and fsck, SIGKILL during uploads, `storage verify`, and S3
//! downloads redirected to the store. With `ARTIFACTSTORE_TEST_BACKEND=s3` (inside
//! scripts/s3-fixture.sh) the servers run on the live S3 store.

#[path = "../common/mod.rs"]
mod common;

mod audit;
mod auth;
mod auth_tokens;
mod cli;
mod crash;
mod fault_proxy;
mod gc;
mod get_version;
mod http_api;
mod listener_limits;
mod quota;
mod retention;
mod s3_redirect;
mod stalled_uploads;
mod storage_compat;
mod storage_verify;
mod store_faults;
mod tls;
mod tokens;
