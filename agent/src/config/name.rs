//! What a profile or role name may be: the agent routes it in a URL path segment and the
//! CLI takes it as an argument, so both check with this one rule.

/// 1-64 of `A-Z a-z 0-9 - _ .`, not starting with a dot (no `..` path games, no hidden
/// files when a name becomes a file name).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_are_short_plain_and_never_hidden() {
        for ok in ["gh", "backstage-prod", "a.b_c", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "..", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
