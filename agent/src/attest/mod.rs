//! Caller attestation: which process is asking for a credential.
//!
//! Done once per connection, lazily, at its first credential request (`api::conn_peer`); a
//! keep-alive client pays the /proc reads once. What we record and why:
//!
//! - **Who is on the other end** ([`peer`]): SO_PEERCRED on the Unix socket (captured at
//!   accept); on loopback TCP the peer socket's inode from `/proc/net/tcp{,6}` and the
//!   process holding it in `/proc/*/fd`.
//! - **What it is** ([`process`]): pid, uid, `/proc/PID/exe`, the command line (truncated)
//!   and the start time, all read through one open `/proc/PID` directory, so all of one
//!   process. A process that started after the connection was accepted cannot have made it:
//!   its pid was reused after the real caller exited, and the record says so.
//! - **Where it comes from** ([`chain`]): a few ancestors' executables; and when the peer is
//!   our own binary acting as git's/docker's/kubectl's helper, the tool above it is the
//!   caller (`via` names the helper).
//!
//! When any step fails the record says `unidentified: <why>`; nothing is guessed, and an
//! `allow` rule on the executable or parents never matches an unidentified caller.
//!
//! What this proves, and what not: processes of the same uid can ptrace, inject into and
//! impersonate each other (run the allowed executable with their own arguments, or write
//! to its memory). Attestation is an audit trail and a guard rail among same-uid processes,
//! not a sandbox. It does stop the casual and the accidental: a script or a compromised
//! dependency that simply curls the API for the GitHub token.

pub mod chain;
pub mod peer;
pub mod process;
pub mod redact;

use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;

/// How the connection reached us, with what the kernel told us at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Unix socket: SO_PEERCRED (pid may be missing in odd namespaces).
    Unix {
        /// Peer pid as seen in our pid namespace.
        pid: Option<u32>,
        /// Peer uid.
        uid: Option<u32>,
    },
    /// Loopback TCP: the two addresses.
    Tcp {
        /// The client's address (its local address).
        peer: SocketAddr,
        /// Our address.
        ours: SocketAddr,
    },
}

/// One ancestor of the caller, for the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ancestor {
    /// Its pid.
    pub pid: u32,
    /// Its executable.
    pub exe: String,
}

/// The attested caller of a connection (serialised as `caller` in audit records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Attestation {
    /// `unix` or `tcp`.
    pub transport: &'static str,
    /// Why the caller is not identified; when set, `exe`/`cmdline`/`chain` are absent and
    /// `pid` is only what the kernel reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unidentified: Option<String>,
    /// Caller pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Caller uid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Caller executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Caller command line (truncated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Caller start time, clock ticks since boot (with pid, identifies the process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// Ancestors, nearest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<Ancestor>,
    /// The helper the caller used (`stagepass git-credential (pid N)`), when the direct peer
    /// was our binary acting for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

impl Attestation {
    /// The same caller with every command-line word holding one of `secrets` replaced
    /// (see [`redact`]).
    pub fn redacted(mut self, secrets: &[&str]) -> Self {
        if let Some(c) = &self.cmdline
            && let std::borrow::Cow::Owned(clean) = redact::cmdline(c, secrets)
        {
            self.cmdline = Some(clean);
        }
        self
    }

    /// A record for a caller we could not identify.
    pub fn unidentified(
        transport: &'static str,
        why: String,
        pid: Option<u32>,
        uid: Option<u32>,
    ) -> Self {
        Self {
            transport,
            unidentified: Some(why),
            pid,
            uid,
            ..Self::default()
        }
    }

    /// Identified (every field trusted)?
    pub fn identified(&self) -> bool {
        self.unidentified.is_none() && self.exe.is_some()
    }

    /// The adapter named in `via` (`git-credential`), for the audit record's `adapter`.
    pub fn adapter(&self) -> Option<&str> {
        self.via
            .as_deref()?
            .strip_prefix("stagepass ")?
            .split(' ')
            .next()
    }
}

/// Ancestors kept in a record (and matched by `parent` rules).
pub const RECORDED_ANCESTORS: usize = 4;

fn own_exe() -> &'static str {
    static OWN: OnceLock<String> = OnceLock::new();
    OWN.get_or_init(|| {
        std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    })
}

/// Attests the peer of a connection accepted `age` ago, reading `root` (normally `/proc`).
pub fn attest(root: &Path, kind: PeerKind, age: std::time::Duration) -> Attestation {
    let accepted = process::ticks_ago(age);
    let (transport, pid, uid) = match kind {
        PeerKind::Unix { pid, uid } => ("unix", pid, uid),
        PeerKind::Tcp { peer, ours } => match peer::tcp_socket(root, peer, ours) {
            Ok(sock) => {
                let holders = peer::socket_holders(root, sock.inode, sock.uid, std::process::id());
                match holders.as_slice() {
                    [one] => ("tcp", Some(*one), Some(sock.uid)),
                    [] => {
                        return Attestation::unidentified(
                            "tcp",
                            format!(
                                "no readable process holds the client socket (uid {}; only our uid's processes can be read)",
                                sock.uid
                            ),
                            None,
                            Some(sock.uid),
                        );
                    }
                    many => {
                        return Attestation::unidentified(
                            "tcp",
                            format!("the client socket is shared by processes {many:?}"),
                            None,
                            Some(sock.uid),
                        );
                    }
                }
            }
            Err(why) => return Attestation::unidentified("tcp", why, None, None),
        },
    };
    let Some(pid) = pid else {
        return Attestation::unidentified("unix", "the kernel gave no peer pid".into(), None, uid);
    };
    // The kernel's uid (SO_PEERCRED, or the socket table) saves reading status.
    let want = process::Want { cmdline: true, uid };
    let direct = match process::read_started_before(root, pid, accepted, want) {
        Ok(p) => p,
        Err(e) => return Attestation::unidentified(transport, e.to_string(), Some(pid), uid),
    };
    let adapter = chain::adapter_of(&direct, own_exe()).is_some();
    // Our adapters sit under a tool and maybe a shell: look further up, with command
    // lines (to see `sh -c`); other callers need only the recorded ancestors.
    let chain = if adapter {
        chain::ancestors(root, &direct, chain::MAX_DEPTH, true)
    } else {
        chain::ancestors(root, &direct, RECORDED_ANCESTORS, false)
    };
    let (mut caller, ancestors, via) = chain::attribute(direct, chain, own_exe());
    if via.is_some() {
        // The tool above our helper: its own uid and command line.
        match process::read_started_before(root, caller.pid, caller.start_ticks, process::ALL) {
            Ok(p) => caller = p,
            Err(e) => {
                return Attestation::unidentified(transport, e.to_string(), Some(caller.pid), uid);
            }
        }
    }
    Attestation {
        transport,
        unidentified: None,
        pid: Some(caller.pid),
        uid: Some(caller.uid),
        exe: Some(caller.exe),
        cmdline: Some(caller.cmdline),
        start_time: Some(caller.start_ticks),
        chain: ancestors
            .into_iter()
            .take(RECORDED_ANCESTORS)
            .map(|a| Ancestor {
                pid: a.pid,
                exe: a.exe,
            })
            .collect(),
        via,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_peer_is_ourselves_here() {
        let me = std::process::id();
        let att = attest(
            Path::new("/proc"),
            PeerKind::Unix {
                pid: Some(me),
                uid: Some(0),
            },
            std::time::Duration::ZERO,
        );
        assert!(att.identified(), "{att:?}");
        assert_eq!(att.pid, Some(me));
        assert_eq!(att.exe.as_deref(), Some(own_exe()));
        assert!(att.via.is_none());
    }

    #[test]
    fn a_gone_pid_is_unidentified_with_why() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let att = attest(
            Path::new("/proc"),
            PeerKind::Unix {
                pid: Some(pid),
                uid: Some(0),
            },
            std::time::Duration::ZERO,
        );
        assert!(!att.identified());
        assert!(att.exe.is_none());
        assert!(
            att.unidentified
                .as_deref()
                .is_some_and(|w| w.contains("gone") || w.contains("reused")),
            "{att:?}"
        );
    }

    #[test]
    fn a_process_newer_than_the_connection_is_not_the_caller() {
        // The connection was accepted 2 s ago; a child spawned now is newer than that.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let att = attest(
            Path::new("/proc"),
            PeerKind::Unix {
                pid: Some(child.id()),
                uid: Some(0),
            },
            std::time::Duration::from_secs(2),
        );
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            att.unidentified
                .as_deref()
                .is_some_and(|w| w.contains("reused")),
            "{att:?}"
        );
    }
}
