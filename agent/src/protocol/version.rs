//! The agent says its version on every answer, and a client refuses another one: the CLI
//! and the agent are one program, and after an upgrade that replaced the binary but not the
//! running agent, an old agent would otherwise answer a new CLI in a shape it half reads.

/// The answer header that carries the agent's version.
pub const HEADER: &str = "stagepass-version";

/// This build's version, the agent's and the CLI's alike.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `None` when `agent` (the header's value, if any) is this build's version; else what to
/// call the agent's version in the refusal.
pub fn mismatch(agent: Option<&[u8]>) -> Option<String> {
    match agent {
        Some(v) if v == VERSION.as_bytes() => None,
        Some(v) => Some(String::from_utf8_lossy(v).chars().take(40).collect()),
        None => Some("unknown (older than 0.1.0's version check)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_version_passes() {
        assert_eq!(mismatch(Some(VERSION.as_bytes())), None);
        assert_eq!(mismatch(Some(b"9.9.9")).as_deref(), Some("9.9.9"));
        assert!(mismatch(None).is_some());
    }
}
