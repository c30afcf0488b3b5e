//! Which process is at the other end of a connection.
//!
//! - Unix socket: the kernel tells us (SO_PEERCRED, read at accept: pid, uid, gid).
//! - Loopback TCP: the peer's socket is ours too (same host), so it is listed in
//!   `/proc/net/tcp` or `/proc/net/tcp6` with local address = the peer address we see and
//!   remote address = our address; that line gives its inode and owner uid. The process is
//!   the one holding `socket:[INODE]` among `/proc/*/fd`. We can only read the fds of our
//!   own uid's processes (unless root): a peer of another uid stays unidentified, with why.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The peer socket's inode and owner, from `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// Socket inode (`socket:[INODE]` in the owner's fd table).
    pub inode: u64,
    /// Owner uid of the socket.
    pub uid: u32,
}

/// Finds the socket whose local address is `peer` and remote address is `ours`.
///
/// On the real `/proc`, asks the kernel for that one socket over netlink `sock_diag` first
/// (a hash lookup, ~10 us): reading `/proc/net/tcp` walks every bucket of the kernel's
/// established-connection table whatever the number of sockets (2.1 ms here, and 1.4 ms more
/// for an empty `tcp6`), on a runtime worker, once per new connection, so a client opening 64
/// connections at once held both workers for over 100 ms and every other connection waited
/// behind them (issue 23: the p99.9 and most of the p99 at 64 connections). The tables stay
/// the fallback (another network namespace, a kernel without `inet_diag`).
pub fn tcp_socket(root: &Path, peer: SocketAddr, ours: SocketAddr) -> Result<TcpSocket, String> {
    if root == Path::new("/proc")
        && let Some(s) = diag::lookup(peer, ours)
    {
        return Ok(s);
    }
    let mut errors = Vec::new();
    for file in ["net/tcp", "net/tcp6"] {
        match std::fs::read_to_string(root.join(file)) {
            Ok(text) => {
                if let Some(s) = find_in_table(&text, peer, ours) {
                    return Ok(s);
                }
            }
            Err(e) => errors.push(format!("{file}: {e}")),
        }
    }
    if errors.len() == 2 {
        return Err(format!(
            "cannot read the socket tables ({})",
            errors.join("; ")
        ));
    }
    Err(format!(
        "no socket {peer} -> {ours} in /proc/net/tcp (the peer is in another network namespace or already closed)"
    ))
}

/// The netlink `sock_diag` lookup of one TCP socket by its addresses (`man 7 sock_diag`).
mod diag {
    use super::TcpSocket;
    use rustix::net::{AddressFamily, SocketFlags, SocketType, netlink};
    use std::net::{IpAddr, SocketAddr};

    /// `SOCK_DIAG_BY_FAMILY`.
    const BY_FAMILY: u16 = 20;
    /// `NLMSG_ERROR`.
    const ERROR: u16 = 2;
    /// `NLM_F_REQUEST`.
    const REQUEST: u16 = 1;
    /// `nlmsghdr` + `inet_diag_req_v2`.
    const REQ_LEN: usize = 16 + 56;
    /// Where `idiag_uid` and `idiag_inode` sit in an answer (after its `nlmsghdr`).
    const UID_AT: usize = 16 + 64;
    const INODE_AT: usize = 16 + 68;

    /// The socket whose local address is `peer` and remote address is `ours`; `None` when
    /// the kernel has none (or no `inet_diag`), for the caller to fall back on `/proc`.
    pub(super) fn lookup(peer: SocketAddr, ours: SocketAddr) -> Option<TcpSocket> {
        let (family, src, dst) = match (peer.ip().to_canonical(), ours.ip().to_canonical()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mut s = [0u8; 16];
                let mut d = [0u8; 16];
                s[..4].copy_from_slice(&a.octets());
                d[..4].copy_from_slice(&b.octets());
                (AddressFamily::INET, s, d)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => (AddressFamily::INET6, a.octets(), b.octets()),
            // One side v4-mapped: the tables know how the kernel stored it.
            _ => return None,
        };
        let mut req = [0u8; REQ_LEN];
        req[0..4].copy_from_slice(&(REQ_LEN as u32).to_ne_bytes());
        req[4..6].copy_from_slice(&BY_FAMILY.to_ne_bytes());
        req[6..8].copy_from_slice(&REQUEST.to_ne_bytes());
        // inet_diag_req_v2: family, IPPROTO_TCP, no extensions, pad, every state.
        req[16] = u8::try_from(family.as_raw()).ok()?;
        req[17] = 6;
        req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
        // inet_diag_sockid: ports and addresses in network order, any interface, no cookie.
        req[24..26].copy_from_slice(&peer.port().to_be_bytes());
        req[26..28].copy_from_slice(&ours.port().to_be_bytes());
        req[28..44].copy_from_slice(&src);
        req[44..60].copy_from_slice(&dst);
        req[64..72].copy_from_slice(&[0xff; 8]);
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            Some(netlink::SOCK_DIAG),
        )
        .ok()?;
        if rustix::io::write(&fd, &req).ok()? != REQ_LEN {
            return None;
        }
        let mut buf = [0u8; 512];
        let n = rustix::io::read(&fd, &mut buf).ok()?;
        parse(buf.get(..n)?)
    }

    /// The uid and inode of the first answer, if it is one (not an error message).
    fn parse(msg: &[u8]) -> Option<TcpSocket> {
        let kind = u16::from_ne_bytes(msg.get(4..6)?.try_into().ok()?);
        if kind == ERROR || kind != BY_FAMILY {
            return None;
        }
        let word = |at: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(msg.get(at..at + 4)?.try_into().ok()?))
        };
        let inode = u64::from(word(INODE_AT)?);
        // A socket in TIME_WAIT has no owner any more.
        (inode != 0).then_some(TcpSocket {
            inode,
            uid: word(UID_AT)?,
        })
    }
}

fn canon(a: SocketAddr) -> (IpAddr, u16) {
    (a.ip().to_canonical(), a.port())
}

/// Looks up one table's text (header line first).
pub fn find_in_table(text: &str, peer: SocketAddr, ours: SocketAddr) -> Option<TcpSocket> {
    let (peer, ours) = (canon(peer), canon(ours));
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Some(local), Some(remote)) = (parse_addr(f[1]), parse_addr(f[2])) else {
            continue;
        };
        if local == peer && remote == ours {
            let uid = f[7].parse().ok()?;
            let inode = f[9].parse().ok()?;
            if inode == 0 {
                // A socket in TIME_WAIT has no owner any more.
                return None;
            }
            return Some(TcpSocket { inode, uid });
        }
    }
    None
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6), as the kernel prints them: each
/// 32-bit word in host byte order.
fn parse_addr(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::from(u32::from_str_radix(addr, 16).ok()?.to_ne_bytes()),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                let w = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some((ip.to_canonical(), port))
}

/// Pids holding `socket:[inode]`, among the processes of `uid` (others cannot be read
/// unless we are root), newest pid first. `skip` is our own pid.
///
/// Finding a socket's holder means reading every fd of every process. A client that opens
/// many connections at once (a connection pool, a load generator) would pay that scan once
/// per connection, all at the same moment, so one scan indexes every socket it sees and
/// lookups within [`INDEX_FRESH`] of it use the index. A socket missing from the index was
/// opened after the scan: it triggers a new one, so a new connection is never attributed
/// from an index that cannot know it.
pub fn socket_holders(root: &Path, inode: u64, uid: u32, skip: u32) -> Vec<u32> {
    static INDEX: Mutex<Option<SocketIndex>> = Mutex::new(None);
    let Ok(mut index) = INDEX.lock() else {
        return scan(root, uid, skip).holders(inode);
    };
    if let Some(ix) = index.as_ref()
        && ix.serves(root, uid, skip)
        && let Some(pids) = ix.map.get(&inode)
    {
        return pids.clone();
    }
    let ix = scan(root, uid, skip);
    let pids = ix.holders(inode);
    *index = Some(ix);
    pids
}

/// How long one scan of `/proc/*/fd` answers lookups of the sockets it saw.
const INDEX_FRESH: Duration = Duration::from_millis(250);

/// Socket inodes to the pids holding them, from one scan of `/proc/*/fd`.
struct SocketIndex {
    root: PathBuf,
    uid: u32,
    skip: u32,
    built: Instant,
    map: HashMap<u64, Vec<u32>>,
}

impl SocketIndex {
    fn serves(&self, root: &Path, uid: u32, skip: u32) -> bool {
        self.root == root
            && self.uid == uid
            && self.skip == skip
            && self.built.elapsed() < INDEX_FRESH
    }

    fn holders(&self, inode: u64) -> Vec<u32> {
        self.map.get(&inode).cloned().unwrap_or_default()
    }
}

/// Reads the fds of every process we may read (newest pid first) and indexes their sockets.
fn scan(root: &Path, uid: u32, skip: u32) -> SocketIndex {
    use std::os::unix::fs::MetadataExt;
    let mut index = SocketIndex {
        root: root.to_path_buf(),
        uid,
        skip,
        built: Instant::now(),
        map: HashMap::new(),
    };
    let mut pids: Vec<u32> = match std::fs::read_dir(root) {
        Ok(rd) => rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|p| *p != skip)
            .collect(),
        Err(_) => return index,
    };
    pids.sort_unstable_by(|a, b| b.cmp(a));
    let root_user = rustix::process::geteuid().is_root();
    for pid in pids {
        let dir = root.join(pid.to_string());
        if !root_user && std::fs::metadata(&dir).map(|m| m.uid()).ok() != Some(uid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            let holders = index.map.entry(inode).or_default();
            if holders.last() != Some(&pid) {
                holders.push(pid);
            }
        }
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_addresses() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:C350 0100007F:1CDF 01 00000000:00000000 00:00000000 00000000  1000        0 424242 1 0000000000000000 20 4 30 10 -1\n";
        let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let ours: SocketAddr = "127.0.0.1:7391".parse().unwrap();
        assert_eq!(
            find_in_table(table, peer, ours),
            Some(TcpSocket {
                inode: 424_242,
                uid: 1000
            })
        );
        assert_eq!(find_in_table(table, ours, peer), None);
        // ::1 in tcp6 notation, and a v4-mapped peer.
        let (ip, port) = parse_addr("00000000000000000000000001000000:1CDF").unwrap();
        assert_eq!((ip, port), ("::1".parse().unwrap(), 7391));
        let (ip, _) = parse_addr("0000000000000000FFFF00000100007F:0050").unwrap();
        assert_eq!(ip, "127.0.0.1".parse::<IpAddr>().unwrap());
    }

    /// The netlink lookup and the kernel's table agree on a real loopback connection, and
    /// a socket that does not exist is not found.
    #[test]
    fn sock_diag_finds_the_same_socket_as_the_table() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(ours).unwrap();
        let (_s, peer) = l.accept().unwrap();
        let Some(fast) = diag::lookup(peer, ours) else {
            // No inet_diag in this kernel: the table is used, nothing to compare.
            return;
        };
        for file in ["net/tcp", "net/tcp6"] {
            if let Ok(text) = std::fs::read_to_string(Path::new("/proc").join(file))
                && let Some(slow) = find_in_table(&text, peer, ours)
            {
                assert_eq!(fast, slow);
            }
        }
        // Nothing listens or connects from port 1.
        let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(diag::lookup(nowhere, ours), None);
        drop(c);
    }

    #[test]
    fn finds_the_holder_of_a_real_loopback_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, peer) = l.accept().unwrap();
        let sock = tcp_socket(Path::new("/proc"), peer, l.local_addr().unwrap()).unwrap();
        assert_eq!(sock.uid, rustix::process::getuid().as_raw());
        // We are both ends here; without the skip we find ourselves.
        let me = std::process::id();
        assert_eq!(
            socket_holders(Path::new("/proc"), sock.inode, sock.uid, 0),
            vec![me]
        );
        assert!(socket_holders(Path::new("/proc"), sock.inode, sock.uid, me).is_empty());
        drop(c);
    }
}
