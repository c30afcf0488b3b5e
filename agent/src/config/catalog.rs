//! `[catalog]`: which catalog files to watch and where Backstage is.

use serde::Deserialize;
use std::path::PathBuf;

/// Catalog watching and Backstage sync.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Watch and validate catalog files at all.
    pub enabled: bool,
    /// Repository root; default: the git top level of the agent's working directory.
    pub root: Option<PathBuf>,
    /// Extra globs (relative to the root) besides `catalog-info.yaml|yml`.
    pub globs: Vec<String>,
    /// Debounce of file events, in milliseconds.
    pub debounce_ms: u64,
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
    /// Cap of the retry backoff while Backstage is unreachable or failing, in milliseconds.
    pub retry_max_ms: u64,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            root: None,
            globs: Vec::new(),
            debounce_ms: 150,
            backstage_url: None,
            profile: None,
            url_template: None,
            branch: None,
            unregister_deleted: false,
            retry_max_ms: 30_000,
        }
    }
}
