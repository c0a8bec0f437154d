//! The break-glass credential, kept only as an argon2id hash in the PHC string format
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`). A hash that is not argon2id, or
//! whose cost is below the minimums here, is refused at start-up: a weak hash of the
//! one credential that bypasses every role rule would be the cheapest way in.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use artifactstore_model::secret::Secret;

/// Memory cost floor in KiB (19 MiB, OWASP's minimum for argon2id).
pub const MIN_MEMORY_KIB: u32 = 19_456;
/// Passes at that memory.
pub const MIN_ITERATIONS: u32 = 2;
/// Salt of at least 8 bytes (11 characters of unpadded base64).
const MIN_SALT_CHARS: usize = 11;
/// Output of at least 16 bytes.
const MIN_OUTPUT_BYTES: usize = 16;
/// A credential shorter than this is refused by `hash`: it is the only thing standing
/// between anyone who can reach the service and a lease on a break-glass role.
pub const MIN_CREDENTIAL_CHARS: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    #[error("not a PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash): {0}")]
    Malformed(String),
    #[error("the hash is {0}, not argon2id")]
    NotArgon2id(String),
    #[error("argon2 version {0:?} is not 19 (0x13)")]
    Version(Option<u32>),
    #[error(
        "parameters too weak: need m >= {MIN_MEMORY_KIB} KiB, t >= {MIN_ITERATIONS}, p >= 1, a salt of at least 8 bytes and a hash of at least {MIN_OUTPUT_BYTES} bytes (got {0})"
    )]
    Weak(String),
    #[error("the credential must be at least {MIN_CREDENTIAL_CHARS} characters")]
    CredentialTooShort,
    #[error(
        "the credential starts or ends with whitespace, which the service (Authorization header) and --credential-file trim: it could never be used"
    )]
    SurroundingWhitespace,
}

/// A checked argon2id PHC string. Held as a [`Secret`]: the hash is what an offline
/// guesser needs, so it is never logged or serialized either.
#[derive(Clone, Debug)]
pub struct CredentialHash(Secret);

impl CredentialHash {
    /// Checks `phc` (algorithm, version, cost floors) and keeps it.
    pub fn parse(phc: &Secret) -> Result<Self, HashError> {
        let text = phc.expose().trim();
        let parsed = PasswordHash::new(text).map_err(|e| HashError::Malformed(e.to_string()))?;
        if parsed.algorithm != argon2::ARGON2ID_IDENT {
            return Err(HashError::NotArgon2id(parsed.algorithm.to_string()));
        }
        if parsed.version != Some(Version::V0x13 as u32) {
            return Err(HashError::Version(parsed.version));
        }
        let params = Params::try_from(&parsed).map_err(|e| HashError::Malformed(e.to_string()))?;
        let salt = parsed.salt.map(|s| s.as_str().len()).unwrap_or(0);
        let output = parsed.hash.map(|h| h.len()).unwrap_or(0);
        if params.m_cost() < MIN_MEMORY_KIB
            || params.t_cost() < MIN_ITERATIONS
            || params.p_cost() < 1
            || salt < MIN_SALT_CHARS
            || output < MIN_OUTPUT_BYTES
        {
            return Err(HashError::Weak(format!(
                "m={}, t={}, p={}, salt {salt} chars, hash {output} bytes",
                params.m_cost(),
                params.t_cost(),
                params.p_cost()
            )));
        }
        Ok(CredentialHash(Secret::new(text)))
    }

    /// Whether `credential` is the one hashed. CPU- and memory-heavy (that is the
    /// point): callers run it on a blocking thread, a bounded number at a time.
    pub fn verify(&self, credential: &Secret) -> bool {
        let Ok(parsed) = PasswordHash::new(self.0.expose()) else {
            return false;
        };
        // The parameters come from the hash itself; the comparison is constant-time.
        Argon2::default()
            .verify_password(credential.expose().as_bytes(), &parsed)
            .is_ok()
    }
}

/// The PHC string of `credential` with this module's minimum cost and a fresh random
/// salt, for `artifactstore vend hash-credential`.
/// The credential is taken as it is: one with surrounding whitespace is refused, since
/// the service reads the credential of a request trimmed (as `--credential-file` reads
/// its file) and so could never match it.
pub fn hash(credential: &Secret) -> Result<String, HashError> {
    let text = credential.expose();
    if text.trim() != text {
        return Err(HashError::SurroundingWhitespace);
    }
    if credential.expose().chars().count() < MIN_CREDENTIAL_CHARS {
        return Err(HashError::CredentialTooShort);
    }
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).expect("system randomness");
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Malformed(e.to_string()))?;
    let params = Params::new(MIN_MEMORY_KIB, MIN_ITERATIONS, 1, Some(32))
        .map_err(|e| HashError::Malformed(e.to_string()))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(credential.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIAL: &str = "correct horse battery staple";

    #[test]
    fn a_hash_verifies_its_credential_and_nothing_else() {
        let phc = hash(&Secret::new(CREDENTIAL)).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let h = CredentialHash::parse(&Secret::new(phc.clone())).unwrap();
        assert!(h.verify(&Secret::new(CREDENTIAL)));
        assert!(!h.verify(&Secret::new("correct horse battery stapl")));
        assert!(!h.verify(&Secret::new("")));
        // Two hashes of one credential differ (fresh salt) and both verify.
        let again = hash(&Secret::new(CREDENTIAL)).unwrap();
        assert_ne!(phc, again);
        assert!(
            CredentialHash::parse(&Secret::new(again))
                .unwrap()
                .verify(&Secret::new(CREDENTIAL))
        );
        assert!(
            !format!("{h:?}").contains("argon2id"),
            "the hash stays out of logs"
        );
    }

    /// The service trims the credential it is sent: one hashed with surrounding
    /// whitespace could never verify, so it is not hashed.
    #[test]
    fn credentials_with_surrounding_whitespace_are_not_hashed() {
        for padded in [
            format!(" {CREDENTIAL}"),
            format!("{CREDENTIAL} "),
            format!("{CREDENTIAL}\t"),
            format!("{CREDENTIAL}\n"),
        ] {
            assert_eq!(
                hash(&Secret::new(padded.clone())),
                Err(HashError::SurroundingWhitespace),
                "{padded:?}"
            );
        }
        // Inside, whitespace is part of the credential.
        assert!(hash(&Secret::new(CREDENTIAL)).is_ok());
    }

    #[test]
    fn short_credentials_are_not_hashed() {
        assert_eq!(
            hash(&Secret::new("short")),
            Err(HashError::CredentialTooShort)
        );
    }

    #[test]
    fn anything_but_a_strong_argon2id_hash_is_refused() {
        let strong = hash(&Secret::new(CREDENTIAL)).unwrap();
        let parse = |s: &str| CredentialHash::parse(&Secret::new(s));
        assert!(matches!(parse("hunter2"), Err(HashError::Malformed(_))));
        assert!(matches!(parse(""), Err(HashError::Malformed(_))));
        // A plain SHA-256 of the credential, hex.
        assert!(matches!(
            parse("5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"),
            Err(HashError::Malformed(_))
        ));
        // argon2i and argon2d are not argon2id.
        let argon2i = strong.replacen("$argon2id$", "$argon2i$", 1);
        assert!(matches!(parse(&argon2i), Err(HashError::NotArgon2id(_))));
        let argon2d = strong.replacen("$argon2id$", "$argon2d$", 1);
        assert!(matches!(parse(&argon2d), Err(HashError::NotArgon2id(_))));
        // The old version 0x10.
        let old = strong.replacen("v=19", "v=16", 1);
        assert!(matches!(parse(&old), Err(HashError::Version(Some(16)))));
        // Cheap parameters.
        for weak in ["m=4096,t=2,p=1", "m=19456,t=1,p=1"] {
            let w = strong.replacen("m=19456,t=2,p=1", weak, 1);
            assert!(matches!(parse(&w), Err(HashError::Weak(_))), "{weak}");
        }
        // A short salt.
        let mut parts: Vec<&str> = strong.split('$').collect();
        parts[4] = "c2FsdA";
        assert!(matches!(parse(&parts.join("$")), Err(HashError::Weak(_))));
        // Surrounding whitespace (a file with a trailing newline) is fine.
        assert!(parse(&format!("{strong}\n")).is_ok());
    }
}
