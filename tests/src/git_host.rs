//! The test git host (`tests/peers/githost.mjs`): bare repositories over real
//! `git http-backend`, optionally behind token auth (JWT from the IdP, audience
//! [`AUD_GIT`](crate::idp::AUD_GIT)), with public raw-file URLs Backstage can read.
//! Also [`Worktree`], a scratch clone driven with the real `git` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::json;

use crate::error::{HarnessError, Result};
use crate::http;
use crate::peer::{Peer, PeerSpec};
use crate::support::{private_tempdir, run};

/// Whether a repository needs a token for clone/fetch/push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoAuth {
    /// Anyone on loopback may clone and push.
    None,
    /// A JWT from the IdP with audience `urn:stagepass:git`, as the Basic password or Bearer.
    Token,
}

/// Counters of the git host since start or the last reset.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct GitStats {
    /// Requests to `/git/` and `/raw/`.
    pub requests: u64,
    /// Answers 401 (missing, invalid, expired or revoked token).
    pub unauthorized: u64,
    /// Requests to token repositories that passed the token check.
    pub authorized: u64,
    /// Push (receive-pack) requests that reached git.
    pub pushes: u64,
    /// Raw file requests.
    pub raw: u64,
}

/// A running git host: private (owned, stopped on drop) or shared (from the bed file).
#[derive(Debug)]
pub struct GitHost {
    peer: Option<Peer>,
    url: String,
    client: reqwest::Client,
}

impl GitHost {
    /// Starts a private git host whose token repositories trust `issuer` (the IdP).
    pub async fn start(issuer: Option<&str>) -> Result<GitHost> {
        let mut spec = PeerSpec::new("git", "githost.mjs");
        if let Some(iss) = issuer {
            spec = spec.arg_pair("--issuer", iss);
        }
        let peer = Peer::spawn(spec).await?;
        let url = peer.url().to_string();
        Ok(GitHost {
            peer: Some(peer),
            url,
            client: http::client()?,
        })
    }

    /// A handle on a git host someone else runs (the shared bed); not stopped on drop.
    pub fn connect(url: &str) -> Result<GitHost> {
        Ok(GitHost {
            peer: None,
            url: url.trim_end_matches('/').to_string(),
            client: http::client()?,
        })
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `127.0.0.1:PORT`, the form Backstage's `backend.reading.allow` wants.
    pub fn host_port(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// The process, when this handle owns it.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// Clone URL of repository `name`.
    pub fn repo_url(&self, name: &str) -> String {
        format!("{}/git/{name}.git", self.url)
    }

    /// Public URL of `path` on `branch` of `repo` (what a Backstage `url` location points at).
    pub fn raw_url(&self, repo: &str, branch: &str, path: &str) -> String {
        format!("{}/raw/{repo}/{branch}/{path}", self.url)
    }

    /// Creates an empty bare repository (default branch `main`); returns its clone URL.
    /// Names must be unique per git host: use [`crate::support::unique_name`] on the shared bed.
    pub async fn create_repo(&self, name: &str, auth: RepoAuth) -> Result<String> {
        let auth = match auth {
            RepoAuth::None => "none",
            RepoAuth::Token => "token",
        };
        let _: serde_json::Value = http::post_json(
            &self.client,
            &format!("{}/__test/repos", self.url),
            &json!({"name": name, "auth": auth}),
        )
        .await?;
        Ok(self.repo_url(name))
    }

    /// Refuses every token presented so far and every token issued in an earlier second.
    pub async fn revoke_all(&self) -> Result<()> {
        self.revoke(json!({})).await
    }

    /// Refuses one token (by value and by its `jti`).
    pub async fn revoke_token(&self, token: &str) -> Result<()> {
        self.revoke(json!({"token": token})).await
    }

    async fn revoke(&self, body: serde_json::Value) -> Result<()> {
        let _: serde_json::Value =
            http::post_json(&self.client, &format!("{}/__test/revoke", self.url), &body).await?;
        Ok(())
    }

    /// Request counters.
    pub async fn stats(&self) -> Result<GitStats> {
        http::get_json(&self.client, &format!("{}/__test/stats", self.url)).await
    }

    /// Zeroes the counters.
    pub async fn reset_stats(&self) -> Result<()> {
        let _: serde_json::Value = http::post_json(
            &self.client,
            &format!("{}/__test/stats/reset", self.url),
            &json!({}),
        )
        .await?;
        Ok(())
    }
}

/// A scratch git working tree in a private temp dir, driven with the real `git` binary
/// with an isolated configuration (no user/system config, no prompts).
#[derive(Debug)]
pub struct Worktree {
    dir: tempfile::TempDir,
    home: PathBuf,
}

impl Worktree {
    /// `git init -b main` in a fresh temp dir.
    pub fn init() -> Result<Worktree> {
        let dir = private_tempdir()?;
        let home = dir.path().join(".home");
        std::fs::create_dir(&home)
            .map_err(|e| HarnessError::io(format!("creating {}", home.display()), e))?;
        let wt = Worktree { dir, home };
        std::fs::create_dir(wt.path())
            .map_err(|e| HarnessError::io(format!("creating {}", wt.path().display()), e))?;
        wt.git(&["init", "--quiet", "--initial-branch=main"])?;
        Ok(wt)
    }

    /// The working tree's root.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// A `git` command in the tree with an isolated environment; add args and run it,
    /// e.g. to set `credential.helper` for one call.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("git");
        cmd.current_dir(self.path())
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "stagepass test")
            .env("GIT_AUTHOR_EMAIL", "test@stagepass.invalid")
            .env("GIT_COMMITTER_NAME", "stagepass test")
            .env("GIT_COMMITTER_EMAIL", "test@stagepass.invalid")
            .env_remove("GIT_ASKPASS")
            .env_remove("SSH_ASKPASS");
        cmd
    }

    /// Runs `git ARGS` in the tree; returns stdout or the failure with stderr.
    pub fn git(&self, args: &[&str]) -> Result<String> {
        run(self.command().args(args))
    }

    /// Writes `contents` to `rel` (creating directories).
    pub fn write(&self, rel: impl AsRef<Path>, contents: &str) -> Result<()> {
        let path = self.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| HarnessError::io(format!("creating {}", parent.display()), e))?;
        }
        std::fs::write(&path, contents)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
    }

    /// `git add -A && git commit -m MSG`.
    pub fn commit_all(&self, msg: &str) -> Result<()> {
        self.git(&["add", "-A"])?;
        self.git(&["commit", "--quiet", "-m", msg])?;
        Ok(())
    }

    /// Pushes `branch` to `remote_url` (no credentials: for open repositories, or with a
    /// credential helper configured through [`Worktree::command`]).
    pub fn push(&self, remote_url: &str, branch: &str) -> Result<()> {
        self.git(&["push", "--quiet", remote_url, branch])?;
        Ok(())
    }
}
