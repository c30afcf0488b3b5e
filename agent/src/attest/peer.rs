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
pub fn tcp_socket(root: &Path, peer: SocketAddr, ours: SocketAddr) -> Result<TcpSocket, String> {
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
