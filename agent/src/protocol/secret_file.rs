//! The per-boot API secret: 256 random bits, hex encoded, in a 0600 file with no newline.
//!
//! A new secret at every agent start means a leaked one dies with the container session.
//! The file has no trailing newline because AWS SDKs send the content of
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` verbatim as the `Authorization` header.

use crate::secret::Secret;
use rand::RngCore;
use std::io;
use std::path::Path;

/// Length of the hex secret: 32 random bytes.
pub const SECRET_HEX_LEN: usize = 64;

/// Creates a fresh secret and writes it atomically (temp file, fsync, rename) as 0600.
pub fn create(path: &Path) -> io::Result<Secret> {
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(raw.as_mut());
    let mut hex = String::with_capacity(SECRET_HEX_LEN);
    for b in raw.iter() {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    let secret = Secret::new(hex);
    write_private(path, secret.expose().as_bytes())?;
    Ok(secret)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Reads the secret of the running agent, checking that the file is a regular 0600 file.
///
/// The checks are made on the opened file itself (`fstat`), not on the path before opening
/// it: nothing can swap the file between the check and the read. A symlink is refused
/// (`O_NOFOLLOW`) and a FIFO does not block the open (`O_NONBLOCK`). `stagepass token`
/// reads this on every call: open, fstat, one read, close.
pub fn read(path: &Path) -> io::Result<Secret> {
    use rustix::fs::{FileType, Mode, OFlags};
    let not_regular = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        )
    };
    let fd = match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => return Err(not_regular()),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(not_regular());
    }
    if st.st_mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} has mode {:o}; it must be 0600",
                path.display(),
                st.st_mode & 0o777
            ),
        ));
    }
    let malformed = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} does not hold a {SECRET_HEX_LEN}-character hex secret",
                path.display()
            ),
        )
    };
    if usize::try_from(st.st_size).ok() != Some(SECRET_HEX_LEN) {
        return Err(malformed());
    }
    let mut buf = zeroize::Zeroizing::new([0u8; SECRET_HEX_LEN]);
    let mut n = 0;
    while n < SECRET_HEX_LEN {
        match rustix::io::read(&fd, &mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let text = std::str::from_utf8(&buf[..n])
        .ok()
        .filter(|t| t.len() == SECRET_HEX_LEN && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(malformed)?;
    Ok(Secret::new(text))
}

/// Writes `bytes` to `path` as a 0600 file, atomically ([`crate::atomic_file::write`]).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::atomic_file::write(path, bytes).map_err(|e| io::Error::new(e.source.kind(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn secret_is_64_hex_0600_without_newline_and_new_each_time() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("api-secret");
        let a = create(&p).unwrap();
        let raw = std::fs::read(&p).unwrap();
        assert_eq!(raw.len(), SECRET_HEX_LEN);
        assert!(!raw.ends_with(b"\n"));
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert!(read(&p).unwrap().ct_eq(a.expose().as_bytes()));
        let b = create(&p).unwrap();
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn read_refuses_open_or_malformed_files() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("api-secret");
        create(&p).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("must be 0600"));
        write_private(&p, b"short\n").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("hex secret"));
        write_private(&p, &[b'g'; SECRET_HEX_LEN]).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("hex secret"));
        // A symlink to a good secret, a directory and a FIFO are refused, without blocking.
        let good = tmp.path().join("good");
        create(&good).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(
            read(&link)
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
        assert!(
            read(tmp.path())
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
        let fifo = tmp.path().join("fifo");
        crate::test_fs::mkfifo(&fifo);
        assert!(
            read(&fifo)
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
        assert_eq!(
            read(&tmp.path().join("none")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
