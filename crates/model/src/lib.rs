//! Names, digests and version states shared by every layer of artifact-store.
//!
//! Everything a client can put in a URL is validated here, once, so that the
//! blob store and the metadata index only ever see well-formed values.

pub mod api;
pub mod clock;
pub mod metrics;
pub mod secret;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// Why a name, a path or a digest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} is longer than {max} bytes")]
    TooLong { kind: &'static str, max: usize },
    #[error("{kind} contains {what}; allowed: {allowed}")]
    BadChar {
        kind: &'static str,
        what: String,
        allowed: &'static str,
    },
    #[error("{kind} must start with a letter or a digit")]
    BadStart { kind: &'static str },
    #[error("'{0}' is reserved and cannot be used as a version name")]
    Reserved(String),
    #[error("path {0}")]
    BadPath(&'static str),
    #[error("digest must look like sha256:<64 lowercase hex digits>")]
    BadDigest,
}

/// The only digest algorithm artifact-store speaks: SHA-256, written `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    pub const PREFIX: &'static str = "sha256:";

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The digest of a byte slice; for streams use [`Hasher`].
    pub fn of(data: &[u8]) -> Self {
        Digest(sha2::Sha256::digest(data).into())
    }

    /// Parses the 64 lowercase hex digits without the `sha256:` prefix.
    pub fn from_hex(s: &str) -> Result<Self, NameError> {
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(NameError::BadDigest);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| NameError::BadDigest)?;
        Ok(Digest(out))
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Incremental SHA-256 over a stream of chunks.
#[derive(Default, Clone)]
pub struct Hasher(sha2::Sha256);

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

impl FromStr for Digest {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let hex = s.strip_prefix(Self::PREFIX).ok_or(NameError::BadDigest)?;
        Digest::from_hex(hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Limits and character sets of each name part. Documented in docs/API.md.
pub mod limits {
    pub const NAMESPACE_MAX: usize = 64;
    pub const NAME_MAX: usize = 128;
    pub const VERSION_MAX: usize = 128;
    pub const PATH_MAX: usize = 1024;
    pub const PATH_SEGMENT_MAX: usize = 255;
}

const SIMPLE_ALLOWED: &str = "ASCII letters, digits, '.', '_' and '-'";
const VERSION_ALLOWED: &str = "ASCII letters, digits, '.', '_', '-' and '+'";

fn check_simple(
    kind: &'static str,
    s: &str,
    max: usize,
    extra: &[u8],
    allowed: &'static str,
) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if s.len() > max {
        return Err(NameError::TooLong { kind, max });
    }
    if let Some(c) = s.chars().find(|c| {
        !(c.is_ascii_alphanumeric()
            || matches!(c, '.' | '_' | '-')
            || (c.is_ascii() && extra.contains(&(*c as u8))))
    }) {
        return Err(NameError::BadChar {
            kind,
            what: format!("{c:?}"),
            allowed,
        });
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(NameError::BadStart { kind });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $ty(String);

        impl $ty {
            pub fn parse(s: &str) -> Result<Self, NameError> {
                let check: fn(&str) -> Result<(), NameError> = $check;
                check(s)?;
                Ok($ty(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A tenant: `[A-Za-z0-9._-]`, starting with a letter or digit, at most 64 bytes.
    Namespace,
    "namespace",
    |s| check_simple("namespace", s, limits::NAMESPACE_MAX, &[], SIMPLE_ALLOWED)
);
name_type!(
    /// A package or producer: `[A-Za-z0-9._-]`, starting with a letter or digit, at most 128 bytes.
    Name,
    "name",
    |s| check_simple("name", s, limits::NAME_MAX, &[], SIMPLE_ALLOWED)
);
name_type!(
    /// A release or run id: `[A-Za-z0-9._+-]`, starting with a letter or digit, at most
    /// 128 bytes; `latest` (any case) is reserved for the alias.
    Version,
    "version",
    |s| {
        check_simple("version", s, limits::VERSION_MAX, b"+", VERSION_ALLOWED)?;
        if s.eq_ignore_ascii_case(LATEST) {
            return Err(NameError::Reserved(s.to_owned()));
        }
        Ok(())
    }
);
name_type!(
    /// A file inside a version: `/`-separated segments of printable UTF-8, at most 1024 bytes
    /// in all and 255 per segment; no empty, `.` or `..` segment, no leading or trailing `/`,
    /// no backslash, no control character and no invisible formatting character (bidi controls, zero-width characters, BOM).
    FilePath,
    "path",
    check_path
);

/// The alias that resolves to the newest complete version.
pub const LATEST: &str = "latest";

fn check_path(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { kind: "path" });
    }
    if s.len() > limits::PATH_MAX {
        return Err(NameError::TooLong {
            kind: "path",
            max: limits::PATH_MAX,
        });
    }
    if s.starts_with('/') {
        return Err(NameError::BadPath("must not start with '/'"));
    }
    if s.contains('\\') {
        return Err(NameError::BadPath("must not contain a backslash"));
    }
    if s.chars().any(char::is_control) {
        return Err(NameError::BadPath("must not contain control characters"));
    }
    if s.chars().any(is_format_char) {
        return Err(NameError::BadPath(
            "must not contain invisible formatting characters (bidi controls, zero-width characters, BOM)",
        ));
    }
    for seg in s.split('/') {
        match seg {
            "" => return Err(NameError::BadPath("must not contain empty segments")),
            "." | ".." => return Err(NameError::BadPath("must not contain '.' or '..' segments")),
            s if s.len() > limits::PATH_SEGMENT_MAX => {
                return Err(NameError::BadPath("segments must be at most 255 bytes"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Unicode's format characters (general category Cf): bidirectional controls,
/// zero-width characters, the BOM and their kin. They are invisible, so a path holding
/// one can pass for another (`report\u{202E}lmth.exe`); paths refuse them all.
pub fn is_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// A failure of a store itself — the blob store or the metadata database — not of the
/// request nor of this program: what the server answers as 503 or 507 rather than as an
/// internal error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreFault {
    /// The store does not answer, answers too late, drops the connection, says it is
    /// overloaded, fails (5xx), or its disk fails (`EIO`, a file system remounted
    /// read-only): worth trying again later.
    Unavailable,
    /// The store has no room: a full disk (`ENOSPC`), an exhausted quota (`EDQUOT`), an
    /// object store out of capacity or over its quota, a database whose disk is full.
    Full,
}

/// What a version selector in a URL names: a concrete version or the `latest` alias.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionRef {
    Latest,
    Exact(Version),
}

impl VersionRef {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s == LATEST {
            Ok(VersionRef::Latest)
        } else {
            Version::parse(s).map(VersionRef::Exact)
        }
    }
}

/// The life of a version: open while files are uploaded, complete once its file set is
/// frozen, deleted once tombstoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    Open,
    Complete,
    Deleted,
}

impl VersionState {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Open => "open",
            VersionState::Complete => "complete",
            VersionState::Deleted => "deleted",
        }
    }
}

impl FromStr for VersionState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(VersionState::Open),
            "complete" => Ok(VersionState::Complete),
            "deleted" => Ok(VersionState::Deleted),
            other => Err(format!("unknown version state {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_and_rejects_junk() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        for bad in [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:abc",
            "md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
        let mut h = Hasher::new();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.finish(), Digest::of(b"hello world"));
    }

    #[test]
    fn names_follow_the_documented_charset() {
        assert!(Namespace::parse("ci").is_ok());
        assert!(Name::parse("open-cmis-tck").is_ok());
        assert!(Version::parse("2026-11-29.1").is_ok());
        assert!(Version::parse("1.0.0+build.5").is_ok());
        assert!(Namespace::parse("").is_err());
        assert!(Namespace::parse("-x").is_err());
        assert!(Namespace::parse("a/b").is_err());
        assert!(Name::parse("a b").is_err());
        assert!(Namespace::parse(&"a".repeat(65)).is_err());
        assert!(Namespace::parse(&"a".repeat(64)).is_ok());
        assert!(matches!(
            Version::parse("latest"),
            Err(NameError::Reserved(_))
        ));
        assert!(matches!(
            Version::parse("LATEST"),
            Err(NameError::Reserved(_))
        ));
        assert_eq!(VersionRef::parse("latest").unwrap(), VersionRef::Latest);
    }

    #[test]
    fn paths_reject_traversal_and_oddities() {
        for ok in [
            "a",
            "reports/cmis-summary.md",
            "a/b/c d/é.txt",
            "..a/b..",
            ".hidden",
        ] {
            assert!(FilePath::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "./a", "a/./b", "../a", "a/../b", "a/..", "a\\b", "a\u{0}b",
            "a\nb", "a\u{7f}b",
        ] {
            assert!(FilePath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(FilePath::parse(&format!("{}/b", "a".repeat(256))).is_err());
        for invisible in [
            '\u{202E}',
            '\u{200B}',
            '\u{FEFF}',
            '\u{2066}',
            '\u{E0041}',
            '\u{00AD}',
        ] {
            let p = format!("reports/sum{invisible}mary.md");
            assert!(
                matches!(FilePath::parse(&p), Err(NameError::BadPath(m)) if m.contains("invisible")),
                "{p:?}"
            );
        }
        assert!(FilePath::parse("reports/ünïcödé/日本語.md").is_ok());
        assert!(FilePath::parse(&"a/".repeat(600)).is_err());
    }
}

/// A number in `0..n` (0 when `n` is 0), to spread timers such as refresh jitter so that
/// replicas do not act in step. Not for secrets or tokens: it is SipHash of a counter
/// under the process's random std hash keys — uniform enough for jitter, and needs no
/// randomness dependency here.
pub fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher as _};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    if n == 0 {
        return 0;
    }
    let mut h = KEYS
        .get_or_init(std::collections::hash_map::RandomState::new)
        .build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish() % n
}

#[cfg(test)]
mod random_tests {
    #[test]
    fn random_below_stays_in_range_and_varies() {
        assert_eq!(super::random_below(0), 0);
        assert_eq!(super::random_below(1), 0);
        let draws: Vec<u64> = (0..200).map(|_| super::random_below(10)).collect();
        assert!(draws.iter().all(|&d| d < 10));
        let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
        assert!(distinct.len() >= 8, "{distinct:?}");
    }
}
