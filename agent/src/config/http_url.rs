//! A URL a credential is sent to (an IdP issuer, STS, Backstage), checked once, where the
//! config is read, so no consumer can meet a bad one late (each still parses the text it
//! keeps: the issuer must stay byte for byte as written).

use serde::{Deserialize, Deserializer};

/// An `http` or `https` URL with a host and no `user:password@`, plain `http` only to this
/// machine ([`crate::cleartext`]).
///
/// Keeps the text as written: an issuer is compared byte for byte with the one its discovery
/// document names, and parsing would normalise it (a trailing `/`, a lowercased host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    text: String,
}

impl HttpUrl {
    /// The name this type gives serde, so a schema probe (the docs check) can tell that it
    /// wants a URL and not any string.
    pub const SERDE_NAME: &'static str = "HttpUrl";

    /// Parses and checks `text`; the error says what is wrong without repeating a password.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text)
            .map_err(|e| format!("{:?} is not a URL: {e}", past_any_at(text)))?;
        if !url.username().is_empty() || url.password().is_some() {
            let mut shown = url.clone();
            // Both setters only fail for URLs without a host, which http(s) URLs always have.
            let _ = shown.set_username("");
            let _ = shown.set_password(None);
            return Err(format!(
                "{shown} carries a user name or password (user:password@): it would be sent \
                 with every request and shown in logs; give the credential through a profile"
            ));
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "{text:?} is not an http(s) URL (scheme {:?})",
                url.scheme()
            ));
        }
        crate::cleartext::check(text)?;
        Ok(Self {
            text: text.to_string(),
        })
    }

    /// The URL as written in the config.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// `text` from its last `@` on (`…@host/path`): what a message may quote of a string that
/// did not parse as a URL, which may hold a `user:password@` the parser could not find.
fn past_any_at(text: &str) -> String {
    match text.rsplit_once('@') {
        Some((_, rest)) => format!("…@{rest}"),
        None => text.to_string(),
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HttpUrl;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an http(s) URL")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<HttpUrl, E> {
                HttpUrl::parse(s).map_err(E::custom)
            }
            fn visit_newtype_struct<D2: Deserializer<'de>>(
                self,
                d: D2,
            ) -> Result<HttpUrl, D2::Error> {
                let s = String::deserialize(d)?;
                HttpUrl::parse(&s).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_newtype_struct(Self::SERDE_NAME, V)
    }
}

#[cfg(test)]
mod tests {
    use super::HttpUrl;

    #[test]
    fn keeps_the_text_and_refuses_what_cannot_carry_a_credential() {
        let u = HttpUrl::parse("https://IDP.example/realms/x").unwrap();
        assert_eq!(u.as_str(), "https://IDP.example/realms/x");
        assert!(HttpUrl::parse("http://127.0.0.1:7007").is_ok());
        assert!(HttpUrl::parse("ftp://idp.example").is_err());
        assert!(HttpUrl::parse("idp.example").is_err());
        let e = HttpUrl::parse("https://bob:hunter2@idp.example/").unwrap_err();
        assert!(e.contains("user name or password"), "{e}");
        assert!(!e.contains("hunter2") && !e.contains("bob"), "{e}");
        let e = HttpUrl::parse("http://idp.example").unwrap_err();
        assert!(e.contains("clear text"), "{e}");
        // Refused for another reason first, the credential is still not repeated.
        let e = HttpUrl::parse("ftp://bob:hunter2@idp.example/").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let e = HttpUrl::parse("https://bob:hunter2@idp example/").unwrap_err();
        assert!(e.contains("not a URL") && !e.contains("hunter2"), "{e}");
    }
}
