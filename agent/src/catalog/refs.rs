//! Entity references (`[kind:][namespace/]name`), parsed the way Backstage parses them.
//!
//! Owner changes, outbox keys and `by-refs` lookups all compare references, so they are
//! normalised here once: kind and namespace lowercased, defaults filled in.

use super::finding::{cut, excerpt};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A fully qualified entity reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityRef {
    /// Lowercased kind (`component`, `group`, ...).
    pub kind: String,
    /// Lowercased namespace.
    pub namespace: String,
    /// Name as written.
    pub name: String,
}

impl EntityRef {
    /// Builds a reference, normalising kind and namespace.
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.to_ascii_lowercase(),
            namespace: namespace.to_ascii_lowercase(),
            name: name.to_string(),
        }
    }

    /// The key used to compare references (Backstage compares them case-insensitively).
    pub fn key(&self) -> String {
        self.to_string().to_ascii_lowercase()
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.kind, self.namespace, self.name)
    }
}

/// Why a reference could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// An empty part (`:x`, `a:/b`, `a/`).
    #[error("entity reference {} is not of the form [<kind>:][<namespace>/]<name>", excerpt(.0))]
    Shape(String),
    /// No kind given and the field has no default kind.
    #[error(
        "entity reference {} has no kind, and this field has no default kind (write e.g. \"component:{}\")",
        excerpt(.0),
        cut(.0)
    )]
    MissingKind(String),
    /// A part breaks Backstage's format rules, so the reference can never resolve.
    #[error(
        "entity reference {}: {part} {} is not valid; expected {expected}",
        excerpt(reference),
        excerpt(value)
    )]
    Format {
        /// The reference as written.
        reference: String,
        /// `kind`, `namespace` or `name`.
        part: &'static str,
        /// The offending part.
        value: String,
        /// What it should look like.
        expected: &'static str,
    },
}

/// Parses `[kind:][namespace/]name` with the defaults of the field it appears in.
pub fn parse_ref(
    text: &str,
    default_kind: Option<&str>,
    default_namespace: &str,
) -> Result<EntityRef, RefError> {
    let slash = text.find('/');
    let mut colon = text.find(':');
    if let (Some(s), Some(c)) = (slash, colon)
        && s < c
    {
        colon = None;
    }
    let kind = colon.map(|c| &text[..c]);
    let namespace = slash.map(|s| &text[colon.map_or(0, |c| c + 1)..s]);
    let name_start = match (colon, slash) {
        (_, Some(s)) => s + 1,
        (Some(c), None) => c + 1,
        (None, None) => 0,
    };
    let name = &text[name_start..];
    if kind == Some("") || namespace == Some("") || name.is_empty() || name.contains('/') {
        return Err(RefError::Shape(text.to_string()));
    }
    let kind = match kind.or(default_kind) {
        Some(k) => k,
        None => return Err(RefError::MissingKind(text.to_string())),
    };
    let namespace = namespace.unwrap_or(default_namespace);
    let fmt_err = |part, value: &str, expected| RefError::Format {
        reference: text.to_string(),
        part,
        value: value.to_string(),
        expected,
    };
    if !is_valid_kind(kind) {
        return Err(fmt_err("kind", kind, KIND_EXPECTED));
    }
    if !is_valid_namespace(namespace) {
        return Err(fmt_err("namespace", namespace, NAMESPACE_EXPECTED));
    }
    if !is_valid_object_name(name) {
        return Err(fmt_err("name", name, NAME_EXPECTED));
    }
    Ok(EntityRef::new(kind, namespace, name))
}

/// What a kind looks like, for messages.
pub const KIND_EXPECTED: &str = "1-63 letters and digits, starting with a letter";
/// What a namespace looks like, for messages.
pub const NAMESPACE_EXPECTED: &str =
    "1-63 lowercase letters, digits and single dashes, no dash at either end";
/// What a name looks like, for messages.
pub const NAME_EXPECTED: &str =
    "1-63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit";

/// Backstage's `isValidKind`: `^[a-zA-Z][a-z0-9A-Z]*$`, 1-63 chars.
pub fn is_valid_kind(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric())
}

/// Backstage's `isValidObjectName`: `^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`, 1-63 chars.
pub fn is_valid_object_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Backstage's `isValidNamespace` (a DNS label): `^[a-z0-9]+(?:-[a-z0-9]+)*$`, 1-63 chars.
pub fn is_valid_namespace(s: &str) -> bool {
    is_dns_label(s)
}

/// `^[a-z0-9]+(?:-[a-z0-9]+)*$`, 1-63 chars.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--")
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A DNS subdomain: dot-separated DNS labels, at most 253 chars.
pub fn is_dns_subdomain(s: &str) -> bool {
    (1..=253).contains(&s.len()) && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in() {
        let r = parse_ref("team-a", Some("group"), "default").unwrap();
        assert_eq!(r.to_string(), "group:default/team-a");
        let r = parse_ref("User:ops/jane", Some("group"), "default").unwrap();
        assert_eq!(r.to_string(), "user:ops/jane");
        let r = parse_ref("other/team", Some("group"), "x").unwrap();
        assert_eq!(r.to_string(), "group:other/team");
    }

    #[test]
    fn shapes_and_formats_are_checked() {
        assert!(matches!(
            parse_ref(":x", Some("group"), "default"),
            Err(RefError::Shape(_))
        ));
        assert!(matches!(
            parse_ref("a/b/c", Some("group"), "default"),
            Err(RefError::Shape(_))
        ));
        assert!(matches!(
            parse_ref("svc", None, "default"),
            Err(RefError::MissingKind(_))
        ));
        assert!(matches!(
            parse_ref("group:Bad_NS/x", None, "default"),
            Err(RefError::Format {
                part: "namespace",
                ..
            })
        ));
        assert!(matches!(
            parse_ref("jane@example.com", Some("user"), "default"),
            Err(RefError::Format { part: "name", .. })
        ));
    }

    #[test]
    fn format_predicates() {
        assert!(is_valid_object_name("a"));
        assert!(is_valid_object_name("pay_ments.v2-x"));
        assert!(!is_valid_object_name("-a"));
        assert!(!is_valid_object_name(&"a".repeat(64)));
        assert!(is_valid_namespace("team-1"));
        assert!(!is_valid_namespace("Team"));
        assert!(!is_valid_namespace("a--b"));
        assert!(is_valid_kind("Component"));
        assert!(!is_valid_kind("1x"));
        assert!(is_dns_subdomain("backstage.io"));
    }
}
