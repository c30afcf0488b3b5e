//! The parent chain of a caller, and who the caller really is when our own binary is only
//! the messenger.
//!
//! git, docker and kubectl do not call the API themselves: they run `stagepass
//! git-credential` / `docker-credential` / `kube-credential`, often through `sh -c`. The
//! process on the socket is then our binary, but the credential is for the tool that ran it.
//! [`attribute`] walks up past that glue (our binary in adapter mode, and `sh -c` shells
//! right above it) to the first real ancestor and names the adapter in `via`. `stagepass
//! token` and the other subcommands are callers in their own right and are not skipped.

use super::process::{self, ProcInfo};
use std::path::Path;

/// Ancestors read above the direct peer (enough for tool -> sh -> stagepass and a few more).
pub const MAX_DEPTH: usize = 6;

/// Subcommands in which our binary acts for the tool that started it.
const ADAPTERS: &[&str] = &["git-credential", "docker-credential", "kube-credential"];

/// Reads up to `depth` ancestors of `p`, nearest first. Stops at pid 1/0, at an unreadable
/// process, or at a parent that started after its child (a reused parent pid). Command
/// lines are read only with `cmdline` (needed to see `sh -c` glue); uids are not read
/// (reported as `p`'s uid: a parent of another uid would show in `/proc` ownership, and
/// rules match the caller's uid only).
pub fn ancestors(root: &Path, p: &ProcInfo, depth: usize, cmdline: bool) -> Vec<ProcInfo> {
    let mut out: Vec<ProcInfo> = Vec::new();
    let mut cur = p.clone();
    let want = process::Want {
        cmdline,
        uid: Some(p.uid),
    };
    while out.len() < depth && cur.ppid > 1 {
        match process::read_started_before(root, cur.ppid, cur.start_ticks, want) {
            Ok(parent) => {
                out.push(parent.clone());
                cur = parent;
            }
            Err(_) => break,
        }
    }
    out
}

/// Is `p` our binary (same executable as the agent, or named `stagepass` / `stagepass-core`:
/// the front answers `token` itself and `exec`s the core for the adapters)?
pub fn is_ours(p: &ProcInfo, own_exe: &str) -> bool {
    p.exe == own_exe || matches!(p.exe_name(), "stagepass" | "stagepass-core")
}

/// The adapter name if `p` is our binary acting for its parent.
pub fn adapter_of(p: &ProcInfo, own_exe: &str) -> Option<String> {
    let argv0 = p.cmdline.split(' ').next().unwrap_or("");
    if argv0.ends_with("docker-credential-stagepass") && is_ours(p, own_exe) {
        return Some("docker-credential".into());
    }
    if !is_ours(p, own_exe) {
        return None;
    }
    let a1 = p.arg1()?;
    ADAPTERS.contains(&a1).then(|| a1.to_string())
}

fn is_helper_shell(p: &ProcInfo) -> bool {
    matches!(
        p.exe_name(),
        "sh" | "bash" | "dash" | "zsh" | "ash" | "busybox"
    ) && p.arg1() == Some("-c")
}

/// Who the credential is for: `(caller, its ancestors, via)`, where `via` names the adapter
/// and its pid when the direct peer was our binary acting for an ancestor. When no real
/// ancestor can be read, the direct peer stays the caller.
pub fn attribute(
    direct: ProcInfo,
    chain: Vec<ProcInfo>,
    own_exe: &str,
) -> (ProcInfo, Vec<ProcInfo>, Option<String>) {
    let Some(adapter) = adapter_of(&direct, own_exe) else {
        return (direct, chain, None);
    };
    let via = format!("stagepass {adapter} (pid {})", direct.pid);
    let skip = chain
        .iter()
        .position(|p| !(is_ours(p, own_exe) || is_helper_shell(p)));
    match skip {
        Some(i) => {
            let mut rest = chain;
            let tail = rest.split_off(i);
            let mut it = tail.into_iter();
            match it.next() {
                Some(caller) => (caller, it.collect(), Some(via)),
                None => (direct, rest, None),
            }
        }
        None => (direct, chain, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, exe: &str, cmd: &str) -> ProcInfo {
        ProcInfo {
            pid,
            ppid: pid - 1,
            uid: 1000,
            exe: exe.into(),
            cmdline: cmd.into(),
            start_ticks: 10,
        }
    }

    const OWN: &str = "/usr/local/bin/stagepass";

    #[test]
    fn git_through_sh_is_the_caller() {
        let direct = p(10, OWN, "/usr/local/bin/stagepass git-credential get");
        let chain = vec![
            p(
                9,
                "/usr/bin/dash",
                "/bin/sh -c stagepass git-credential get",
            ),
            p(
                8,
                "/usr/lib/git-core/git-remote-http",
                "git-remote-http origin",
            ),
            p(7, "/usr/bin/git", "git fetch"),
        ];
        let (caller, rest, via) = attribute(direct, chain, OWN);
        assert_eq!(caller.pid, 8);
        assert_eq!(rest.len(), 1);
        assert_eq!(via.as_deref(), Some("stagepass git-credential (pid 10)"));
    }

    #[test]
    fn the_core_the_front_started_is_ours_from_any_install() {
        // The front execs stagepass-core keeping its argv[0]; the agent may be another copy.
        let direct = p(
            10,
            "/opt/sp/bin/stagepass-core",
            "/opt/sp/bin/stagepass git-credential get",
        );
        let chain = vec![p(9, "/usr/bin/git", "git fetch")];
        let (caller, _, via) = attribute(direct, chain, OWN);
        assert_eq!(caller.pid, 9);
        assert_eq!(via.as_deref(), Some("stagepass git-credential (pid 10)"));
    }

    #[test]
    fn stagepass_token_is_its_own_caller() {
        let direct = p(10, OWN, "stagepass token github");
        let chain = vec![p(9, "/usr/bin/bash", "bash")];
        let (caller, _, via) = attribute(direct, chain, OWN);
        assert_eq!(caller.pid, 10);
        assert!(via.is_none());
    }

    #[test]
    fn an_interactive_shell_is_a_caller() {
        // `stagepass git-credential get` typed at a prompt: the shell (no -c) is the caller.
        let direct = p(10, OWN, "stagepass git-credential get");
        let chain = vec![p(9, "/usr/bin/bash", "-bash")];
        let (caller, _, via) = attribute(direct, chain, OWN);
        assert_eq!(caller.pid, 9);
        assert!(via.is_some());
    }

    #[test]
    fn no_real_ancestor_keeps_the_direct_peer() {
        let direct = p(10, OWN, "stagepass kube-credential k");
        let (caller, _, via) = attribute(direct, vec![], OWN);
        assert_eq!(caller.pid, 10);
        assert!(via.is_none());
    }
}
