//! Which folder the catalog engine watches when `catalog.root` is not configured.
//!
//! In a dev container the agent is started by the Feature's entrypoint from PID 1's working
//! directory (`/`), so "the git top level of the working directory" finds nothing there. The
//! workspace folder is known to the devcontainer CLI and to Codespaces, and reaches us in these
//! ways, tried in this order:
//!
//! 1. `catalog.root` from the configuration: the user's choice always wins.
//! 2. The workspace hint file ([`HINT_FILE`] in the state dir), written by the Feature's
//!    `postStartCommand` hook, which the devcontainer CLI and Codespaces run in the workspace
//!    folder at every start. It lives on the state volume, so the next start finds it at once.
//! 3. `CODESPACE_VSCODE_FOLDER`, which Codespaces' VS Code extension sets in terminals (a CLI
//!    started there, or an agent started by hand).
//! 4. The git top level of the working directory (an agent started by hand in a repository).
//! 5. `/workspaces`: where both the devcontainer CLI and Codespaces mount repositories. Exactly
//!    one git repository there is taken; several are ambiguous and named in the reason.
//!
//! A folder found by 2 or 3 that is not inside a git repository is searched one level down for
//! repositories: one is taken, several are ambiguous (a multi-root workspace needs
//! `catalog.root`), none means the folder itself is watched (local validation only).

use super::git;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Name of the workspace hint file in the state dir (one absolute path, one line).
pub const HINT_FILE: &str = "workspace-folder";

/// The longest hint file read; a path is far shorter.
const HINT_MAX_BYTES: u64 = 4096;

/// Where the watched folder came from, shown in `stagepass status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `catalog.root`.
    Config,
    /// The hint file written by the Feature's start hook.
    WorkspaceHint,
    /// `CODESPACE_VSCODE_FOLDER`.
    CodespaceFolder,
    /// The agent's working directory.
    WorkingDir,
    /// The only repository under `/workspaces`.
    Workspaces,
}

impl Source {
    /// Words for the status line.
    pub fn describe(self) -> &'static str {
        match self {
            Source::Config => "catalog.root",
            Source::WorkspaceHint => "the dev container's workspace folder",
            Source::CodespaceFolder => "CODESPACE_VSCODE_FOLDER",
            Source::WorkingDir => "the agent's working directory",
            Source::Workspaces => "the only repository under /workspaces",
        }
    }
}

/// What [`resolve`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Watch this folder.
    Found {
        /// The folder (canonical).
        root: PathBuf,
        /// Where it came from.
        source: Source,
    },
    /// Nothing to watch yet; the reason says what would change that.
    NotYet(String),
}

/// The inputs of [`resolve`], gathered by the caller so tests can set each one.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// `catalog.root`.
    pub config_root: Option<PathBuf>,
    /// The hint file (`<state dir>/workspace-folder`).
    pub hint_file: Option<PathBuf>,
    /// `CODESPACE_VSCODE_FOLDER`.
    pub env_folder: Option<PathBuf>,
    /// The working directory.
    pub cwd: Option<PathBuf>,
    /// The folder repositories are mounted under (`/workspaces`).
    pub workspaces_dir: Option<PathBuf>,
}

impl Inputs {
    /// A cheap summary of what can change while the agent waits (the hint file's content and
    /// the names under the workspaces folder): [`resolve`], which may run git, is repeated only
    /// when this changes.
    pub fn fingerprint(&self) -> String {
        let hint = self
            .hint_file
            .as_deref()
            .and_then(|f| read_hint(f).ok().flatten())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut names = self
            .workspaces_dir
            .as_deref()
            .and_then(|d| std::fs::read_dir(d).ok())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        names.sort();
        format!("{hint}\n{}", names.join("/"))
    }
}

/// Decides which folder to watch; see the module docs for the order.
pub async fn resolve(inputs: &Inputs) -> Resolution {
    if let Some(root) = &inputs.config_root {
        return match std::fs::canonicalize(root) {
            Ok(root) => Resolution::Found {
                root,
                source: Source::Config,
            },
            Err(e) => Resolution::NotYet(format!("catalog.root {}: {e}", root.display())),
        };
    }
    if let Some(file) = &inputs.hint_file {
        match read_hint(file) {
            Ok(Some(folder)) => return repo_of(&folder, Source::WorkspaceHint).await,
            Ok(None) => {}
            Err(reason) => return Resolution::NotYet(reason),
        }
    }
    if let Some(folder) = &inputs.env_folder
        && folder.is_absolute()
        && folder.is_dir()
    {
        return repo_of(folder, Source::CodespaceFolder).await;
    }
    if let Some(cwd) = &inputs.cwd
        && let Some(top) = git::toplevel(cwd).await
        && let Ok(root) = std::fs::canonicalize(top)
    {
        return Resolution::Found {
            root,
            source: Source::WorkingDir,
        };
    }
    if let Some(dir) = &inputs.workspaces_dir {
        match repos_under(dir).as_slice() {
            [] => {}
            [one] => {
                return Resolution::Found {
                    root: one.clone(),
                    source: Source::Workspaces,
                };
            }
            several => return Resolution::NotYet(ambiguous(dir, several)),
        }
    }
    Resolution::NotYet(
        "no workspace folder known yet (not started in a git repository, no catalog.root, no \
         workspace hint from the dev container's start hook)"
            .into(),
    )
}

/// The repository a workspace folder stands for.
async fn repo_of(folder: &Path, source: Source) -> Resolution {
    let Ok(folder) = std::fs::canonicalize(folder) else {
        return Resolution::NotYet(format!(
            "the workspace folder {} ({}) does not exist",
            folder.display(),
            source.describe()
        ));
    };
    if let Some(top) = git::toplevel(&folder).await {
        let root = std::fs::canonicalize(&top).unwrap_or(top);
        return Resolution::Found { root, source };
    }
    match repos_under(&folder).as_slice() {
        [] => Resolution::Found {
            root: folder,
            source,
        },
        [one] => Resolution::Found {
            root: one.clone(),
            source,
        },
        several => Resolution::NotYet(ambiguous(&folder, several)),
    }
}

fn ambiguous(dir: &Path, repos: &[PathBuf]) -> String {
    let names: Vec<String> = repos
        .iter()
        .filter_map(|r| r.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    format!(
        "{} holds {} repositories ({}): set catalog.root to the one to watch",
        dir.display(),
        repos.len(),
        names.join(", ")
    )
}

/// Git repositories directly under `dir` (a `.git` directory or file), canonical and sorted;
/// hidden folders (`.codespaces`) are not repositories a user works in.
fn repos_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut repos: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.join(".git").exists())
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    repos.sort();
    repos.dedup();
    repos
}

/// Reads the hint file: `Ok(None)` when there is none, `Err` with a reason when it is not a
/// small regular file holding an absolute path. Never follows a symlink, never blocks on a
/// FIFO, reads at most [`HINT_MAX_BYTES`].
pub fn read_hint(file: &Path) -> Result<Option<PathBuf>, String> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(file);
    let f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("workspace hint {}: {e}", file.display())),
    };
    let bad = |why: &str| format!("workspace hint {}: {why}", file.display());
    let meta = f.metadata().map_err(|e| bad(&e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file"));
    }
    let mut text = String::new();
    f.take(HINT_MAX_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad(&e.to_string()))?;
    if text.len() as u64 > HINT_MAX_BYTES {
        return Err(bad("longer than a path"));
    }
    let line = text.trim_end_matches(['\n', '\r']);
    if line.is_empty() {
        return Ok(None);
    }
    if line.contains('\n') || !line.starts_with('/') {
        return Err(bad("must hold one absolute path"));
    }
    Ok(Some(PathBuf::from(line)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn git_init(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("git")
            .args(["init", "-q"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    fn found(r: Resolution) -> (PathBuf, Source) {
        match r {
            Resolution::Found { root, source } => (root, source),
            Resolution::NotYet(why) => panic!("expected a root, got: {why}"),
        }
    }

    fn not_yet(r: Resolution) -> String {
        match r {
            Resolution::NotYet(why) => why,
            other => panic!("expected no root, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_hint_wins_over_the_working_dir_and_workspaces() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("workspaces");
        git_init(&ws.join("a"));
        git_init(&ws.join("b"));
        git_init(&tmp.path().join("elsewhere"));
        let hint = tmp.path().join(HINT_FILE);
        std::fs::write(&hint, format!("{}\n", ws.join("b/sub").display())).unwrap();
        std::fs::create_dir_all(ws.join("b/sub")).unwrap();
        let inputs = Inputs {
            hint_file: Some(hint),
            cwd: Some(tmp.path().join("elsewhere")),
            workspaces_dir: Some(ws.clone()),
            ..Inputs::default()
        };
        let (root, source) = found(resolve(&inputs).await);
        assert_eq!(root, std::fs::canonicalize(ws.join("b")).unwrap());
        assert_eq!(source, Source::WorkspaceHint);

        // catalog.root wins over everything.
        let inputs = Inputs {
            config_root: Some(ws.join("a")),
            ..inputs
        };
        let (root, source) = found(resolve(&inputs).await);
        assert_eq!(root, std::fs::canonicalize(ws.join("a")).unwrap());
        assert_eq!(source, Source::Config);
    }

    #[tokio::test]
    async fn one_repository_under_workspaces_is_taken_several_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("workspaces");
        std::fs::create_dir_all(ws.join(".codespaces/shared")).unwrap();
        let inputs = Inputs {
            cwd: Some(PathBuf::from("/")),
            workspaces_dir: Some(ws.clone()),
            ..Inputs::default()
        };
        let why = not_yet(resolve(&inputs).await);
        assert!(why.contains("no workspace folder known yet"), "{why}");

        git_init(&ws.join("payments"));
        let (root, source) = found(resolve(&inputs).await);
        assert_eq!(root, std::fs::canonicalize(ws.join("payments")).unwrap());
        assert_eq!(source, Source::Workspaces);

        git_init(&ws.join("billing"));
        let why = not_yet(resolve(&inputs).await);
        assert!(
            why.contains("holds 2 repositories (billing, payments)"),
            "{why}"
        );
        assert!(why.contains("catalog.root"), "{why}");
    }

    #[tokio::test]
    async fn a_workspace_folder_outside_git_is_searched_one_level_down() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().join("multi");
        std::fs::create_dir_all(&folder).unwrap();
        let hint = tmp.path().join(HINT_FILE);
        std::fs::write(&hint, folder.display().to_string()).unwrap();
        let inputs = Inputs {
            hint_file: Some(hint),
            ..Inputs::default()
        };
        // No repository: the folder itself (local validation only).
        let (root, _) = found(resolve(&inputs).await);
        assert_eq!(root, std::fs::canonicalize(&folder).unwrap());
        git_init(&folder.join("one"));
        let (root, _) = found(resolve(&inputs).await);
        assert_eq!(root, std::fs::canonicalize(folder.join("one")).unwrap());
        git_init(&folder.join("two"));
        let why = not_yet(resolve(&inputs).await);
        assert!(why.contains("holds 2 repositories (one, two)"), "{why}");
    }

    #[test]
    fn a_bad_hint_file_is_refused_with_the_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let hint = tmp.path().join(HINT_FILE);
        assert_eq!(read_hint(&hint), Ok(None));
        std::fs::write(&hint, "relative/path").unwrap();
        assert!(read_hint(&hint).unwrap_err().contains("one absolute path"));
        std::fs::write(&hint, "/a\n/b\n").unwrap();
        assert!(read_hint(&hint).unwrap_err().contains("one absolute path"));
        std::fs::write(&hint, "/".repeat(5000)).unwrap();
        assert!(read_hint(&hint).unwrap_err().contains("longer than a path"));
        std::fs::remove_file(&hint).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &hint).unwrap();
        let err = read_hint(&hint).unwrap_err();
        assert!(err.contains("workspace hint"), "{err}");
        std::fs::remove_file(&hint).unwrap();
        crate::test_fs::mkfifo(&hint);
        assert!(read_hint(&hint).unwrap_err().contains("not a regular file"));
    }
}
