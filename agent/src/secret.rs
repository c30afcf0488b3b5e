//! A string that must never reach a log line, an error message or a panic.
//!
//! Tokens, refresh tokens, client secrets and the per-boot API secret all travel in
//! [`Secret`]. It has no `Display`, its `Debug` prints `[redacted]`, and its memory is
//! zeroed on drop. Reading the value is an explicit, greppable call to [`Secret::expose`].

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A secret string. Cloning copies the secret (the copy is zeroed on drop too).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a value; the caller gives up its plain copy.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret itself, for the few places that must send or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short, non-reversible fingerprint (first 12 hex chars of SHA-256) that logs,
    /// audit records and status may show to tell two tokens apart.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    /// Compares with another secret in constant time (for the API guard, on every request).
    /// Length is not secret (64 hex chars for our own secrets). `constant_time_eq` folds
    /// whole words behind one optimisation barrier; `subtle`'s slice comparison put a barrier
    /// on every byte and was 6 % of a cache hit's instructions (callgrind).
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        constant_time_eq::constant_time_eq(self.0.as_bytes(), other)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2-token");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn fingerprint_is_stable_and_short() {
        let a = Secret::new("abc");
        assert_eq!(a.fingerprint(), "ba7816bf8f01");
        assert_ne!(a.fingerprint(), Secret::new("abd").fingerprint());
    }

    #[test]
    fn constant_time_compare() {
        let s = Secret::new("0123");
        assert!(s.ct_eq(b"0123"));
        assert!(!s.ct_eq(b"0124"));
        assert!(!s.ct_eq(b"012"));
    }
}
