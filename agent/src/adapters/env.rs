//! `stagepass env` and `stagepass exec`: the environment tools read their credentials from.
//!
//! Variables (documented in docs/tools.md):
//! - `AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:PORT/v1/aws/credentials/NAME` and
//!   `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=<runtime dir>/api-secret`: every AWS SDK and the
//!   CLI then fetch role NAME's credentials from the agent, sending the per-boot secret;
//! - `STAGEPASS_API_URL=http://127.0.0.1:PORT`: where scripts find the agent;
//! - `exec` only: `STAGEPASS_TOKEN_<PROFILE>` per `--profile`, the name upper-cased with every
//!   character outside `[A-Z0-9]` turned into `_` (`backstage-dev` -> `STAGEPASS_TOKEN_BACKSTAGE_DEV`).

use std::collections::BTreeMap;
use std::path::Path;

/// Prefix of the per-profile token variables `exec` sets.
pub const TOKEN_VAR_PREFIX: &str = "STAGEPASS_TOKEN_";

/// The variable holding `profile`'s token under `exec`.
pub fn token_var(profile: &str) -> String {
    let mut name = String::from(TOKEN_VAR_PREFIX);
    name.extend(profile.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    name
}

/// Which AWS role the `AWS_*` variables point at: the only one, else `default`, else the
/// first by name. Returns the chosen name and the others (to mention them).
pub fn pick_aws_role<'a>(
    roles: impl IntoIterator<Item = &'a String>,
    asked: Option<&str>,
) -> Result<Option<(String, Vec<String>)>, String> {
    let names: Vec<String> = roles.into_iter().cloned().collect();
    if let Some(a) = asked {
        if !names.iter().any(|n| n == a) {
            return Err(format!(
                "no AWS role {a:?} configured (configured: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
        let others = names.iter().filter(|n| *n != a).cloned().collect();
        return Ok(Some((a.to_string(), others)));
    }
    let Some(first) = names
        .iter()
        .find(|n| *n == "default")
        .or_else(|| names.first())
        .cloned()
    else {
        return Ok(None);
    };
    let others = names.iter().filter(|n| **n != first).cloned().collect();
    Ok(Some((first, others)))
}

/// The variables that point tools at the agent: API URL, and the AWS pair for `aws_role`.
pub fn agent_vars(
    port: u16,
    secret_file: &Path,
    aws_role: Option<&str>,
) -> BTreeMap<String, String> {
    let base = format!("http://127.0.0.1:{port}");
    let mut vars = BTreeMap::new();
    if let Some(role) = aws_role {
        vars.insert(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI".into(),
            format!(
                "{base}/v1/aws/credentials/{}",
                super::token::encode_segment(role)
            ),
        );
        vars.insert(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE".into(),
            secret_file.display().to_string(),
        );
    }
    vars.insert("STAGEPASS_API_URL".into(), base);
    vars
}

/// Quotes a value for POSIX sh: single quotes, with `'` written as `'\''`.
pub fn sh_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// `export NAME='value'` lines for `eval "$(stagepass env)"`.
pub fn exports(vars: &BTreeMap<String, String>) -> String {
    vars.iter()
        .map(|(k, v)| format!("export {k}={}\n", sh_quote(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_var_names() {
        assert_eq!(token_var("backstage"), "STAGEPASS_TOKEN_BACKSTAGE");
        assert_eq!(
            token_var("backstage-dev.x"),
            "STAGEPASS_TOKEN_BACKSTAGE_DEV_X"
        );
    }

    #[test]
    fn exports_exact_bytes() {
        let vars = agent_vars(
            7391,
            Path::new("/run/user/1000/stagepass/api-secret"),
            Some("dev"),
        );
        assert_eq!(
            exports(&vars),
            "export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE='/run/user/1000/stagepass/api-secret'\n\
             export AWS_CONTAINER_CREDENTIALS_FULL_URI='http://127.0.0.1:7391/v1/aws/credentials/dev'\n\
             export STAGEPASS_API_URL='http://127.0.0.1:7391'\n"
        );
        let none = agent_vars(1, Path::new("/s"), None);
        assert_eq!(none.len(), 1);
    }

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote("$(rm)"), "'$(rm)'");
    }

    #[test]
    fn aws_role_choice() {
        let names = ["b".to_string(), "default".to_string(), "a".to_string()];
        assert_eq!(pick_aws_role(&names, None).unwrap().unwrap().0, "default");
        let two = ["b".to_string(), "a".to_string()];
        let (first, others) = pick_aws_role(&two, None).unwrap().unwrap();
        assert_eq!((first.as_str(), others.len()), ("b", 1));
        assert_eq!(pick_aws_role(&two, Some("a")).unwrap().unwrap().0, "a");
        assert!(pick_aws_role(&two, Some("c")).unwrap_err().contains("b, a"));
        assert_eq!(pick_aws_role(&[], None).unwrap(), None);
    }
}
