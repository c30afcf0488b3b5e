//! Per-profile policy: which callers get a profile's tokens ([`Policies::check`]), how old a
//! login may get and how long a handed-out token is advertised to live ([`limits`]).
//!
//! Rules come from `[profiles.NAME.policy]`:
//!
//! ```toml
//! [profiles.github.policy]
//! allow = [
//!   { name = "git", exe = ["/usr/bin/git", "/usr/lib/git-core/*"] },
//!   { exe = ["/usr/bin/python3*"], parent = ["/usr/bin/make"], uid = [1000] },
//! ]
//! max_grant_age = "12h"
//! max_token_lifetime = "1h"
//! ```
//!
//! Within a rule every matcher given must match; a caller needs one matching rule. Without
//! `allow` every caller of our uid is served (the default, so upgrading changes nothing).
//! Executable and parent matchers need an identified caller: an unidentified one never
//! matches them, so it is refused wherever rules exist (never guessed into a rule).

pub mod limits;

use crate::attest::Attestation;
use crate::config::{AllowRule, Config};
use globset::GlobSet;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One compiled allow rule.
#[derive(Debug)]
struct Rule {
    name: Arc<str>,
    exe: Option<GlobSet>,
    uid: Vec<u32>,
    parent: Option<GlobSet>,
}

/// The compiled set of a rule's globs; none when the rule gives none (no constraint).
fn globs(list: &crate::config::ExeGlobs) -> Option<GlobSet> {
    (!list.is_empty()).then(|| list.set().clone())
}

impl Rule {
    fn compile(i: usize, r: &AllowRule) -> Self {
        Self {
            name: r
                .name
                .clone()
                .unwrap_or_else(|| format!("allow[{i}]"))
                .into(),
            exe: globs(&r.exe),
            uid: r.uid.clone(),
            parent: globs(&r.parent),
        }
    }

    fn matches(&self, c: &Attestation) -> bool {
        let identified = c.identified();
        if let Some(set) = &self.exe
            && !(identified && c.exe.as_deref().is_some_and(|e| set.is_match(e)))
        {
            return false;
        }
        if let Some(set) = &self.parent
            && !(identified && c.chain.iter().any(|a| set.is_match(&a.exe)))
        {
            return false;
        }
        if !self.uid.is_empty() && !c.uid.is_some_and(|u| self.uid.contains(&u)) {
            return false;
        }
        true
    }
}

/// What the policy decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Served; the rule that allowed it (`default` without rules). A reference: cloning the
    /// shared name on every request would bounce its count between cores.
    Allow(&'a Arc<str>),
    /// Refused; the rule set that refused and a message for the caller.
    Deny {
        /// `profiles.NAME.policy.allow`.
        rule: String,
        /// Names the caller and the rules it failed.
        message: String,
    },
}

/// One profile's caller rules, and the names its audit records carry (shared, so a record
/// costs no string copies on the request path).
#[derive(Debug)]
pub struct ProfilePolicy {
    /// The profile name.
    pub name: Arc<str>,
    /// Its audience.
    pub audience: Option<Arc<str>>,
    allow: Option<Vec<Rule>>,
    deny_rule: Arc<str>,
    /// `policy.max_grant_age` is set (the API must not bypass the broker's check).
    pub max_grant_age: bool,
}

/// Every profile's caller rules and audience, compiled once at start. Looked up on every
/// request: an ordered map of a handful of names costs a few string comparisons, where a
/// `HashMap` spent more on SipHash than the rest of the policy check.
#[derive(Debug, Default)]
pub struct Policies {
    profiles: BTreeMap<String, ProfilePolicy>,
}

/// The rule name of a default (rule-less) allow.
pub const DEFAULT_RULE: &str = "default";

impl Policies {
    /// Compiles the policies of every profile in `config`.
    pub fn from_config(config: &Config) -> Self {
        let profiles = config
            .profiles
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    ProfilePolicy {
                        name: name.as_str().into(),
                        deny_rule: format!("profiles.{name}.policy.allow").into(),
                        max_grant_age: p.policy.max_grant_age.is_some(),
                        audience: p.audience.as_deref().map(Into::into),
                        allow: p.policy.allow.as_ref().map(|rules| {
                            rules
                                .iter()
                                .enumerate()
                                .map(|(i, r)| Rule::compile(i, r))
                                .collect()
                        }),
                    },
                )
            })
            .collect();
        Self { profiles }
    }

    /// The policy of `profile`, if it is configured.
    pub fn get(&self, profile: &str) -> Option<&ProfilePolicy> {
        self.profiles.get(profile)
    }

    /// Does `profile` restrict its callers (so the caller must be attested)?
    pub fn restricts(&self, profile: &str) -> bool {
        self.get(profile).is_some_and(ProfilePolicy::restricts)
    }

    /// The audience of `profile`, for the audit record.
    pub fn audience(&self, profile: &str) -> Option<&str> {
        self.get(profile)?.audience.as_deref()
    }

    /// Decides whether `caller` may get `profile`'s credentials (see [`ProfilePolicy::check`]);
    /// an unconfigured profile has no rules.
    pub fn check(&self, profile: &str, caller: Option<&Attestation>) -> Decision<'_> {
        match self.get(profile) {
            Some(p) => p.check(caller),
            None => Decision::Allow(default_rule()),
        }
    }
}

fn default_rule() -> &'static Arc<str> {
    static DEFAULT: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(|| DEFAULT_RULE.into())
}

impl ProfilePolicy {
    /// Does this profile restrict its callers (so the caller must be attested)?
    pub fn restricts(&self) -> bool {
        self.allow.is_some()
    }

    /// Decides whether `caller` may get this profile's credentials. `None` = not attested
    /// (attestation off); only valid for profiles without rules (the config enforces that).
    pub fn check(&self, caller: Option<&Attestation>) -> Decision<'_> {
        let Some(rules) = self.allow.as_ref() else {
            return Decision::Allow(default_rule());
        };
        let profile = &*self.name;
        let Some(c) = caller else {
            return Decision::Deny {
                rule: self.deny_rule.to_string(),
                message: "the caller cannot be attested (attestation is off)".into(),
            };
        };
        if let Some(r) = rules.iter().find(|r| r.matches(c)) {
            return Decision::Allow(&r.name);
        }
        let rule = self.deny_rule.to_string();
        let who = match (&c.unidentified, &c.exe) {
            (Some(why), _) => format!("an unidentified caller ({why})"),
            (None, Some(exe)) => format!(
                "{exe} (pid {}, uid {})",
                c.pid.unwrap_or(0),
                c.uid.map_or_else(|| "?".into(), |u| u.to_string())
            ),
            (None, None) => "an unidentified caller".into(),
        };
        let names: Vec<&str> = rules.iter().map(|r| &*r.name).collect();
        Decision::Deny {
            message: format!(
                "{who} matches none of the rules of {rule} ({}); see `stagepass audit --profile {profile}`",
                if names.is_empty() {
                    "none: nobody is allowed".to_string()
                } else {
                    names.join(", ")
                }
            ),
            rule,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::Ancestor;

    fn config(policy: &str) -> Config {
        let text = format!(
            "[profiles.gh]\ngrant = \"env\"\ntoken_env = \"T\"\naudience = \"urn:gh\"\n[profiles.gh.policy]\n{policy}\n[profiles.open]\ngrant = \"env\"\ntoken_env = \"T\"\n"
        );
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        Config::load_files(&[p]).unwrap()
    }

    fn caller(exe: &str, uid: u32, parents: &[&str]) -> Attestation {
        Attestation {
            transport: "unix",
            pid: Some(42),
            uid: Some(uid),
            exe: Some(exe.into()),
            cmdline: Some(exe.into()),
            start_time: Some(1),
            chain: parents
                .iter()
                .map(|p| Ancestor {
                    pid: 1,
                    exe: (*p).into(),
                })
                .collect(),
            ..Attestation::default()
        }
    }

    #[test]
    fn exe_globs_allow_git_and_refuse_curl_naming_the_rule() {
        let p = Policies::from_config(&config(
            "allow = [{ name = \"git\", exe = [\"/usr/bin/git\", \"/usr/lib/git-core/*\"] }]",
        ));
        assert!(p.restricts("gh") && !p.restricts("open"));
        assert_eq!(p.audience("gh"), Some("urn:gh"));
        assert_eq!(
            p.check(
                "gh",
                Some(&caller("/usr/lib/git-core/git-remote-http", 1000, &[]))
            ),
            Decision::Allow(&Arc::from("git"))
        );
        match p.check("gh", Some(&caller("/usr/bin/curl", 1000, &[]))) {
            Decision::Deny { rule, message } => {
                assert_eq!(rule, "profiles.gh.policy.allow");
                assert!(
                    message.contains("/usr/bin/curl") && message.contains("git"),
                    "{message}"
                );
            }
            d => panic!("{d:?}"),
        }
        // No rules: everyone, even unattested.
        assert_eq!(
            p.check("open", None),
            Decision::Allow(&Arc::from(DEFAULT_RULE))
        );
    }

    #[test]
    fn all_matchers_of_a_rule_must_match_and_unidentified_never_does() {
        let p = Policies::from_config(&config(
            "allow = [{ exe = [\"/usr/bin/python3*\"], parent = [\"/usr/bin/make\"], uid = [1000] }]",
        ));
        let ok = caller(
            "/usr/bin/python3.11",
            1000,
            &["/usr/bin/bash", "/usr/bin/make"],
        );
        assert_eq!(
            p.check("gh", Some(&ok)),
            Decision::Allow(&Arc::from("allow[0]"))
        );
        let wrong_uid = caller("/usr/bin/python3.11", 1001, &["/usr/bin/make"]);
        assert!(matches!(
            p.check("gh", Some(&wrong_uid)),
            Decision::Deny { .. }
        ));
        let no_parent = caller("/usr/bin/python3.11", 1000, &["/usr/bin/bash"]);
        assert!(matches!(
            p.check("gh", Some(&no_parent)),
            Decision::Deny { .. }
        ));
        let mut unknown = ok.clone();
        unknown.unidentified = Some("pid 42 was reused by another process".into());
        match p.check("gh", Some(&unknown)) {
            Decision::Deny { message, .. } => assert!(message.contains("reused"), "{message}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn a_uid_rule_matches_an_unidentified_caller_with_a_known_uid() {
        let p = Policies::from_config(&config("allow = [{ uid = [7] }]"));
        let a = Attestation::unidentified("tcp", "x".into(), None, Some(7));
        assert_eq!(
            p.check("gh", Some(&a)),
            Decision::Allow(&Arc::from("allow[0]"))
        );
        let p = Policies::from_config(&config("allow = []"));
        assert!(matches!(
            p.check("gh", Some(&caller("/x", 7, &[]))),
            Decision::Deny { .. }
        ));
    }
}
