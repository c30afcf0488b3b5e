//! The `stagepass` command as installed: a small front binary that answers `stagepass token
//! NAME` itself and hands every other command to the full binary beside it.
//!
//! `$(stagepass token NAME)` runs in prompts, scripts and tool helpers many times a minute,
//! and its cost is almost all process start. The full binary is 15 MB of position-independent
//! code whose ~17,000 relocations the loader applies before `main` (about 120 extra page faults
//! and 0.4 ms per run, measured with `perf stat`); a binary that links only this module, the
//! socket request and the answer printing starts like any small tool. Release builds link it
//! statically as a static PIE (no shared-library loading, and still address-randomised), which
//! is safe here because it never resolves names or users. Everything else — clap, the config,
//! the runtime, the agent itself — lives in [`CORE_NAME`], which this binary `exec`s in place:
//! same pid, same argv (including `argv[0]`, so `docker-credential-stagepass` and the
//! process listing stay as they were), same environment.

use super::session::{self, TokenArgs};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// File name of the full binary, installed in the same directory as `stagepass`.
pub const CORE_NAME: &str = "stagepass-core";

/// Exit code when the full binary cannot be started (documented in the README): the shell's
/// "command not found", since that is what it amounts to.
pub const EXIT_NO_CORE: u8 = 127;

/// Entry point of the front binary: the process's exit code.
///
/// The binary's C `main` calls this without std's start-up (see `src/main.rs`), so nothing
/// here may count on it: stdout is flushed before returning, and SIGPIPE keeps its default
/// (a closed pipe ends the process quietly, as it does any small Unix tool; the core that
/// gets `exec`ed sets up std as usual).
pub fn main() -> u8 {
    use std::io::Write;
    let mut argv = std::env::args_os();
    let arg0 = argv.next().unwrap_or_else(|| OsString::from("stagepass"));
    let rest: Vec<OsString> = argv.collect();
    let code = (!invoked_as_docker_helper(&arg0))
        .then(|| TokenArgs::from_plain_args(rest.iter().cloned()))
        .flatten()
        .and_then(|args| session::token_over_socket(&args));
    if let Some(code) = code {
        return match std::io::stdout().flush() {
            Ok(()) => code,
            Err(_) => 1,
        };
    }
    exec_core(arg0, rest)
}

/// `docker-credential-stagepass` (a link to this binary) takes the operation as `argv[1]`;
/// it is never the `token` command, even if someone names an operation so.
fn invoked_as_docker_helper(arg0: &OsString) -> bool {
    std::path::Path::new(arg0)
        .file_name()
        .is_some_and(|n| n == "docker-credential-stagepass")
}

/// Replaces this process with the full binary; returns only when that fails.
fn exec_core(arg0: OsString, rest: Vec<OsString>) -> u8 {
    let Some(core) = core_path(&arg0) else {
        eprintln!(
            "stagepass: cannot find {CORE_NAME}: neither /proc/self/exe nor argv[0] ({}) names              this program's file",
            arg0.to_string_lossy()
        );
        return EXIT_NO_CORE;
    };
    let err = Command::new(&core).arg0(arg0).args(rest).exec();
    eprintln!(
        "stagepass: cannot run {}: {err}; stagepass and {CORE_NAME} are installed side by side \
         (reinstall both, or rerun the Dev Container feature)",
        core.display()
    );
    EXIT_NO_CORE
}

/// The full binary beside this one. `/proc/self/exe` follows symlinks, so a
/// `docker-credential-stagepass` link anywhere still finds it. Without `/proc` (a bare
/// chroot, an early boot script) `argv[0]` is resolved instead: as a path when it has a
/// slash, else on `PATH`, then through its symlinks.
fn core_path(arg0: &OsString) -> Option<PathBuf> {
    let me = std::env::current_exe()
        .ok()
        .or_else(|| from_argv0(arg0, std::env::var_os("PATH")))?;
    Some(me.with_file_name(CORE_NAME))
}

/// This program's file from `argv[0]` and `PATH`, with symlinks resolved.
fn from_argv0(arg0: &OsString, path: Option<OsString>) -> Option<PathBuf> {
    let arg0 = Path::new(arg0);
    let found = if arg0.as_os_str().as_bytes().contains(&b'/') {
        arg0.to_path_buf()
    } else {
        std::env::split_paths(&path?)
            .map(|dir| dir.join(arg0))
            .find(|candidate| candidate.is_file())?
    };
    std::fs::canonicalize(found).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_is_looked_for_beside_this_binary() {
        let me = std::env::current_exe().unwrap();
        let core = core_path(&OsString::from("whatever")).unwrap();
        assert_eq!(core.parent(), me.parent());
        assert_eq!(core.file_name().unwrap(), CORE_NAME);
    }

    /// Without /proc: argv[0] as a path, through a symlink, or found on PATH.
    #[test]
    fn argv0_finds_the_program_when_proc_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let front = real.join("stagepass");
        std::fs::write(&front, b"").unwrap();
        let links = dir.path().join("links");
        std::fs::create_dir(&links).unwrap();
        let link = links.join("docker-credential-stagepass");
        std::os::unix::fs::symlink(&front, &link).unwrap();
        let canonical = std::fs::canonicalize(&front).unwrap();
        let path = Some(std::env::join_paths([dir.path().join("none"), links.clone()]).unwrap());
        assert_eq!(
            from_argv0(&front.clone().into_os_string(), None),
            Some(canonical.clone())
        );
        assert_eq!(
            from_argv0(&link.into_os_string(), None),
            Some(canonical.clone())
        );
        assert_eq!(
            from_argv0(&OsString::from("docker-credential-stagepass"), path.clone()),
            Some(canonical)
        );
        assert_eq!(from_argv0(&OsString::from("stagepass"), path), None);
        assert_eq!(from_argv0(&OsString::from("stagepass"), None), None);
        assert_eq!(
            from_argv0(&dir.path().join("gone").into_os_string(), None),
            None
        );
    }

    #[test]
    fn only_the_link_name_makes_a_docker_helper() {
        for (arg0, docker) in [
            ("docker-credential-stagepass", true),
            ("/usr/local/bin/docker-credential-stagepass", true),
            ("stagepass", false),
            ("/usr/local/bin/stagepass", false),
            ("docker-credential-stagepass-old", false),
        ] {
            assert_eq!(
                invoked_as_docker_helper(&OsString::from(arg0)),
                docker,
                "{arg0}"
            );
        }
    }
}
