//! What the catalog sync needs from git: the repository root, the git dir to watch, the
//! tracked remote-tracking ref, changed files between two commits, file content at a commit,
//! and the file -> URL mapping Backstage reads locations from.
//!
//! We run the `git` binary (always present where people push) rather than reading the object
//! store ourselves: worktrees (`.git` files with `gitdir:`), packed refs and alternates are
//! then handled by git itself.

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Why a git question could not be answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GitError {
    /// `git` could not be run.
    #[error("cannot run git: {0}")]
    Spawn(String),
    /// A committed file past the catalog size cap: not read at all.
    #[error("{path} is {size} bytes at that commit; catalog files over 1 MiB are refused")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size in the commit.
        size: u64,
    },
    /// git ran and failed.
    #[error("git {args}: {stderr}")]
    Failed {
        /// The arguments, for the message.
        args: String,
        /// What git said.
        stderr: String,
    },
}

async fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, GitError> {
    let out = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| GitError::Spawn(e.to_string()))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(GitError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

async fn git_line(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    Ok(String::from_utf8_lossy(&git(dir, args).await?)
        .trim()
        .to_string())
}

/// The git top level of `dir`, if it is inside a work tree.
pub async fn toplevel(dir: &Path) -> Option<PathBuf> {
    git_line(dir, &["rev-parse", "--show-toplevel"])
        .await
        .ok()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

/// A repository and the ref whose movement means "pushed".
#[derive(Debug, Clone)]
pub struct Repo {
    /// The work tree root.
    pub root: PathBuf,
    /// The common git dir (holds `refs/` and `packed-refs`, also for linked worktrees).
    pub common_dir: PathBuf,
    /// Full name of the remote-tracking ref, e.g. `refs/remotes/origin/main`.
    pub tracked_ref: Option<String>,
    /// The branch name on the remote, e.g. `main` (for `{branch}` in URLs).
    pub remote_branch: Option<String>,
    /// The remote's URL, e.g. `https://github.com/acme/payments.git`.
    pub remote_url: Option<String>,
}

impl Repo {
    /// Reads the repository facts. `branch` is the configured local branch, else the current
    /// branch's upstream is tracked.
    pub async fn open(root: &Path, branch: Option<&str>) -> Result<Self, GitError> {
        let common = git_line(
            root,
            &["rev-parse", "--path-format=absolute", "--git-common-dir"],
        )
        .await?;
        let local_branch = match branch {
            Some(b) => Some(b.to_string()),
            None => git_line(root, &["symbolic-ref", "--short", "-q", "HEAD"])
                .await
                .ok()
                .filter(|s| !s.is_empty()),
        };
        let (mut tracked_ref, mut remote_branch, mut remote) = (None, None, None);
        if let Some(b) = &local_branch {
            let upstream = git_line(
                root,
                &[
                    "rev-parse",
                    "--symbolic-full-name",
                    &format!("{b}@{{upstream}}"),
                ],
            )
            .await
            .ok()
            .filter(|s| s.starts_with("refs/remotes/"));
            let r = git_line(root, &["config", &format!("branch.{b}.remote")])
                .await
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "origin".into());
            let full = upstream.unwrap_or_else(|| format!("refs/remotes/{r}/{b}"));
            remote_branch = full
                .strip_prefix(&format!("refs/remotes/{r}/"))
                .map(str::to_string)
                .or_else(|| Some(b.clone()));
            tracked_ref = Some(full);
            remote = Some(r);
        }
        let remote_url = match &remote {
            Some(r) => git_line(root, &["config", &format!("remote.{r}.url")])
                .await
                .ok()
                .filter(|s| !s.is_empty()),
            None => None,
        };
        Ok(Self {
            root: root.to_path_buf(),
            common_dir: PathBuf::from(common),
            tracked_ref,
            remote_branch,
            remote_url,
        })
    }

    /// The commit the tracked ref points at now (none before the first push/fetch).
    pub async fn tracked_commit(&self) -> Option<String> {
        let r = self.tracked_ref.as_deref()?;
        git_line(
            &self.root,
            &["rev-parse", "-q", "--verify", &format!("{r}^{{commit}}")],
        )
        .await
        .ok()
        .filter(|s| !s.is_empty())
    }

    /// Files changed between two commits: `(path, deleted)`.
    pub async fn changed_files(
        &self,
        old: &str,
        new: &str,
    ) -> Result<Vec<(PathBuf, bool)>, GitError> {
        let out = git(
            &self.root,
            &["diff", "--name-status", "-z", "--no-renames", old, new],
        )
        .await?;
        let mut items = out.split(|b| *b == 0).filter(|s| !s.is_empty());
        let mut v = Vec::new();
        while let (Some(status), Some(path)) = (items.next(), items.next()) {
            let path = PathBuf::from(String::from_utf8_lossy(path).into_owned());
            v.push((path, status.first() == Some(&b'D')));
        }
        Ok(v)
    }

    /// Every file path of a commit.
    pub async fn files_at(&self, commit: &str) -> Result<Vec<PathBuf>, GitError> {
        let out = git(&self.root, &["ls-tree", "-r", "-z", "--name-only", commit]).await?;
        Ok(out
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| PathBuf::from(String::from_utf8_lossy(s).into_owned()))
            .collect())
    }

    /// The content of `path` at `commit`.
    ///
    /// Its size is asked first: a blob anyone can commit is never read into memory past
    /// the catalog cap ([`super::validate::MAX_FILE_BYTES`]).
    pub async fn show(&self, commit: &str, path: &Path) -> Result<Vec<u8>, GitError> {
        let object = format!("{commit}:{}", path.display());
        let size: u64 = git_line(&self.root, &["cat-file", "-s", &object])
            .await?
            .parse()
            .unwrap_or(u64::MAX);
        if size > super::validate::MAX_FILE_BYTES {
            return Err(GitError::TooLarge {
                path: path.display().to_string(),
                size,
            });
        }
        git(&self.root, &["cat-file", "blob", &object]).await
    }
}

/// How a file maps to the URL Backstage reads it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlMap {
    template: String,
    branch: String,
    repo: String,
}

impl UrlMap {
    /// From a configured template (`{path}`, `{branch}`, `{repo}`) or, for github.com remotes,
    /// the GitHub blob URL. `None` when neither applies.
    pub fn new(
        template: Option<&str>,
        remote_url: Option<&str>,
        branch: Option<&str>,
    ) -> Option<Self> {
        let branch = branch.unwrap_or("main").to_string();
        let repo = remote_url.map(repo_path).unwrap_or_default();
        let template = match template {
            Some(t) => t.to_string(),
            None => {
                let gh = remote_url.and_then(github_slug)?;
                format!("https://github.com/{gh}/blob/{{branch}}/{{path}}")
            }
        };
        Some(Self {
            template,
            branch,
            repo,
        })
    }

    /// The URL of `rel` (relative to the repository root).
    pub fn url(&self, rel: &Path) -> String {
        let path: Vec<String> = rel
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(encode_segment(&n.to_string_lossy())),
                _ => None,
            })
            .collect();
        self.template
            .replace("{path}", &path.join("/"))
            .replace("{branch}", &self.branch)
            .replace("{repo}", &self.repo)
    }
}

/// What GitHub leaves as is in a file's path segment (besides RFC 3986's unreserved
/// characters): its blob URLs show `@+=,` unescaped, and Backstage compares URLs as text.
const GITHUB_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@')
    .remove(b'+')
    .remove(b'=')
    .remove(b',');

fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, GITHUB_SEGMENT).to_string()
}

/// `owner/name` of a github.com remote (https, ssh or scp-like).
fn github_slug(remote: &str) -> Option<String> {
    let rest = remote
        .strip_prefix("https://github.com/")
        .or_else(|| remote.strip_prefix("http://github.com/"))
        .or_else(|| remote.strip_prefix("git@github.com:"))
        .or_else(|| remote.strip_prefix("ssh://git@github.com/"))
        .or_else(|| {
            // https://user@github.com/owner/repo (Codespaces sometimes adds a user).
            let after = remote.strip_prefix("https://")?;
            let (_, rest) = after.split_once("@github.com/")?;
            Some(rest)
        })?;
    let slug = rest.trim_end_matches('/').trim_end_matches(".git");
    let mut parts = slug.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(o), Some(r), None) if !o.is_empty() && !r.is_empty() => Some(format!("{o}/{r}")),
        _ => None,
    }
}

/// The path part of a remote URL without `.git` (`team/repo`), for `{repo}`.
fn repo_path(remote: &str) -> String {
    let after_scheme = remote.split_once("://").map_or(remote, |(_, r)| r);
    let path = match after_scheme.split_once('/') {
        Some((_, p)) => p,
        None => after_scheme.split_once(':').map_or("", |(_, p)| p),
    };
    path.trim_end_matches('/')
        .trim_end_matches(".git")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19: a committed blob past the cap is refused by its size, never read.
    #[tokio::test]
    async fn a_committed_file_past_the_cap_is_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let run = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .arg("-C")
                .arg(root)
                .args(args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        run(&["init", "-q", "-b", "main"]);
        std::fs::write(root.join("small.yaml"), "a: 1\n").unwrap();
        let big = vec![b'#'; (super::super::validate::MAX_FILE_BYTES + 1) as usize];
        std::fs::write(root.join("big.yaml"), big).unwrap();
        run(&["add", "."]);
        run(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "x",
        ]);
        let repo = Repo::open(root, None).await.unwrap();
        assert_eq!(
            repo.show("HEAD", Path::new("small.yaml")).await.unwrap(),
            b"a: 1\n"
        );
        let err = repo.show("HEAD", Path::new("big.yaml")).await.unwrap_err();
        assert!(
            matches!(err, GitError::TooLarge { size, .. } if size == super::super::validate::MAX_FILE_BYTES + 1),
            "{err}"
        );
    }

    #[test]
    fn github_remotes_map_to_blob_urls() {
        for remote in [
            "https://github.com/acme/payments.git",
            "git@github.com:acme/payments.git",
            "ssh://git@github.com/acme/payments",
        ] {
            let m = UrlMap::new(None, Some(remote), Some("main")).unwrap();
            assert_eq!(
                m.url(Path::new("svc/catalog-info.yaml")),
                "https://github.com/acme/payments/blob/main/svc/catalog-info.yaml",
                "{remote}"
            );
        }
    }

    #[test]
    fn other_remotes_need_a_template() {
        assert!(UrlMap::new(None, Some("http://127.0.0.1:9/x/y.git"), Some("main")).is_none());
        let m = UrlMap::new(
            Some("http://127.0.0.1:9/raw/{repo}/{branch}/{path}"),
            Some("http://127.0.0.1:9/x/y.git"),
            Some("dev"),
        )
        .unwrap();
        assert_eq!(
            m.url(Path::new("a b/catalog-info.yaml")),
            "http://127.0.0.1:9/raw/x/y/dev/a%20b/catalog-info.yaml"
        );
        // GitHub's own spelling: `@+=,` and unreserved characters stay, the rest is escaped.
        assert_eq!(
            m.url(Path::new("v@1+x=y,z_~.-/é#?/catalog-info.yaml")),
            "http://127.0.0.1:9/raw/x/y/dev/v@1+x=y,z_~.-/%C3%A9%23%3F/catalog-info.yaml"
        );
    }
}
