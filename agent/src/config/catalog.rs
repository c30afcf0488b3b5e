//! `[catalog]`: which catalog files to watch and where Backstage is.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Catalog watching and Backstage sync.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Watch and validate catalog files at all.
    pub enabled: bool,
    /// Repository root; default: the git top level of the agent's working directory.
    pub root: Option<PathBuf>,
    /// Extra globs (relative to the root) besides `catalog-info.yaml|yml`, compiled.
    pub globs: super::CatalogGlobs,
    /// Debounce of file events (`debounce_ms`, in milliseconds; 0 = none).
    #[serde(rename = "debounce_ms", deserialize_with = "super::duration::millis")]
    pub debounce: Duration,
    /// Backstage base URL (e.g. `https://backstage.example.com`); none means local validation only.
    pub backstage_url: Option<super::HttpUrl>,
    /// Profile whose token is sent to Backstage.
    pub profile: Option<String>,
    /// URL template for a file: `{path}`, `{branch}`, `{repo}` (the remote URL's path without
    /// `.git`) are replaced; default: GitHub blob URLs for github.com remotes.
    pub url_template: Option<String>,
    /// Branch whose remote-tracking ref triggers a push; default: the current branch's upstream.
    pub branch: Option<String>,
    /// Unregister locations whose file was deleted.
    pub unregister_deleted: bool,
    /// Cap of the retry backoff while Backstage is unreachable or failing (`retry_max_ms`, in
    /// milliseconds, at least 1; the worker waits at least 100 ms between tries anyway).
    #[serde(
        rename = "retry_max_ms",
        deserialize_with = "super::duration::positive_millis"
    )]
    pub retry_max: Duration,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            root: None,
            globs: super::CatalogGlobs::default(),
            debounce: Duration::from_millis(150),
            backstage_url: None,
            profile: None,
            url_template: None,
            branch: None,
            unregister_deleted: false,
            retry_max: Duration::from_secs(30),
        }
    }
}
