//! Secrets out of recorded command lines, by value.
//!
//! The audit log and syslog record the caller's command line, and the README's own
//! `curl -H "Authorization: Bearer $(cat .../api-secret)"` puts the live API secret there.
//! Guessing flag names (`-H`, `--header`, `--token`) misses the next tool, so every word
//! that holds a value the agent knows to be secret (the API secret, the tokens it holds) is
//! replaced whole. A command line cut at its length limit may end in the first characters
//! of a secret: that last word goes too.

use std::borrow::Cow;

/// What a redacted word becomes.
pub const REDACTED: &str = "[redacted]";

/// Shorter values are not matched (they would hide ordinary words, and are no secret).
const MIN_SECRET: usize = 8;

/// A cut word that ends with this much of a secret's start is redacted too.
const MIN_PREFIX: usize = 4;

/// `cmdline` (words joined by spaces, maybe cut and ending in `…`) with every word that
/// contains one of `secrets` replaced by [`REDACTED`].
pub fn cmdline<'a>(cmdline: &'a str, secrets: &[&str]) -> Cow<'a, str> {
    let secrets: Vec<&str> = secrets
        .iter()
        .copied()
        .filter(|s| s.len() >= MIN_SECRET)
        .collect();
    let cut = cmdline.ends_with('…');
    let words: Vec<&str> = cmdline.split(' ').collect();
    let last = words.len().saturating_sub(1);
    let mut changed = false;
    let out: Vec<&str> = words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let whole = secrets.iter().any(|s| w.contains(s));
            let partial =
                cut && i == last && ends_with_a_secret_start(w.trim_end_matches('…'), &secrets);
            if whole || partial {
                changed = true;
                REDACTED
            } else {
                w
            }
        })
        .collect();
    if changed {
        Cow::Owned(out.join(" "))
    } else {
        Cow::Borrowed(cmdline)
    }
}

fn ends_with_a_secret_start(word: &str, secrets: &[&str]) -> bool {
    secrets.iter().any(|s| {
        (MIN_PREFIX..=s.len().min(word.len()))
            .any(|k| s.is_char_boundary(k) && word.ends_with(&s[..k]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "k3Yq9vXb0d7f2a1c";

    #[test]
    fn every_word_holding_a_secret_is_replaced_whole() {
        let line =
            format!("curl -s -H Authorization: Bearer {SECRET} http://127.0.0.1:7391/v1/token/x");
        assert_eq!(
            cmdline(&line, &[SECRET]),
            "curl -s -H Authorization: Bearer [redacted] http://127.0.0.1:7391/v1/token/x"
        );
        let glued = format!("tool --token={SECRET}x run");
        assert_eq!(cmdline(&glued, &[SECRET]), "tool [redacted] run");
        assert_eq!(
            cmdline("git credential fill", &[SECRET]),
            "git credential fill"
        );
        // Short values (an empty env token, say) never match.
        assert_eq!(cmdline("a b c", &["b"]), "a b c");
    }

    #[test]
    fn a_secret_cut_at_the_length_limit_is_redacted_too() {
        let line = format!("curl -H Bearer {}…", &SECRET[..6]);
        assert_eq!(cmdline(&line, &[SECRET]), "curl -H Bearer [redacted]");
        // Not cut: a word that merely shares a start is kept.
        let line = format!("curl {}", &SECRET[..6]);
        assert_eq!(cmdline(&line, &[SECRET]), line);
    }
}
