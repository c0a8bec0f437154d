//! Test hook (feature `test-crash-points`, which only test builds enable): kills the
//! process at a named point of the mint saga, so that live tests can check what crash
//! reconciliation makes of what is left behind. A build without the feature has
//! neither this module nor any call into it.

/// The variable naming the point to die at.
pub const TEST_HOOK_CRASH_AT_ENV: &str = "ARTIFACTSTORE_TEST_HOOK_CRASH_AT";

/// Points of the mint saga ([`crate::service`]'s `issue`), in the order it passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// The allow line is on disk; no lease row yet.
    AfterAllow,
    /// The lease row is recorded pending; nothing minted.
    AfterLeaseRow,
    /// The driver minted; the row does not know the key yet.
    AfterMint,
    /// The row is active with its key; nothing answered, no `lease.issued` line.
    AfterActivate,
}

impl Point {
    pub fn as_str(self) -> &'static str {
        match self {
            Point::AfterAllow => "after-allow",
            Point::AfterLeaseRow => "after-lease-row",
            Point::AfterMint => "after-mint",
            Point::AfterActivate => "after-activate",
        }
    }
}

/// Dies here, by SIGKILL, when [`TEST_HOOK_CRASH_AT_ENV`] names `point`: no
/// destructor, no compensation task, no flush runs — as when the machine or an
/// operator kills the service.
pub fn at(point: Point) {
    if std::env::var(TEST_HOOK_CRASH_AT_ENV).as_deref() != Ok(point.as_str()) {
        return;
    }
    eprintln!("test hook: killing the process at {}", point.as_str());
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &std::process::id().to_string()])
        .status();
    // `kill` missing or refused: abort, which runs no destructor either.
    std::process::abort();
}
