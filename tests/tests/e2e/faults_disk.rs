//! A full or read-only state directory: the grant store on a 64 KiB tmpfs. A save that
//! cannot complete fails with an error naming the path (never the token), leaves the last
//! good grant readable and leaves no temporary file behind; once space is back, saves work.
//!
//! Mounting needs root (the test bed's containers run the suite as root). Without it the
//! test fails with that reason rather than passing without checking anything.

use stagepass::config::{StoreBackendChoice, StoreConfig};
use stagepass::store::{GrantStore, StoredGrant};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A small tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test needs root to mount a tmpfs (skip it with -E 'not test(/^faults_disk::/)'): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, opts: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the file system until a write fails with ENOSPC; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = [0u8; 1024];
    loop {
        match f.write_all(&block) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    path
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

const OLD: &str = "refresh-token-old-0123456789";
const NEW: &str = "refresh-token-new-9876543210-with-a-long-tail-to-need-space";

#[tokio::test]
async fn a_full_or_read_only_state_dir_keeps_the_last_grant_and_says_where() {
    let fs = Tmpfs::mount("64k");
    let state = fs.path().join("stagepass");
    let cfg = StoreConfig {
        backend: StoreBackendChoice::File,
        dir: None,
    };
    let store = GrantStore::open(&cfg, &state).await.unwrap();
    let grants = state.join("grants");
    let old = StoredGrant::new("https://idp", "client", OLD, None);
    store.save("work", &old).unwrap();

    // Full: the save fails, names the grants dir, carries no token; the old grant stays.
    let filler = fill(fs.path());
    let new = StoredGrant::new("https://idp", "client", NEW, None);
    let err = store.save("work", &new).unwrap_err().to_string();
    assert!(err.contains(&grants.display().to_string()), "{err}");
    assert!(!err.contains(NEW) && !err.contains(OLD), "{err}");
    let kept = store.load("work").unwrap().unwrap();
    assert_eq!(kept.refresh_token.expose(), OLD);
    assert!(temp_files(&grants).is_empty(), "{:?}", temp_files(&grants));

    // Space is back: the save works.
    std::fs::remove_file(&filler).unwrap();
    store.save("work", &new).unwrap();
    assert_eq!(
        store.load("work").unwrap().unwrap().refresh_token.expose(),
        NEW
    );

    // Read-only: the save fails plainly, the last grant is still served.
    fs.remount("ro");
    let newer = StoredGrant::new("https://idp", "client", "refresh-token-newer", None);
    let err = store.save("work", &newer).unwrap_err().to_string();
    assert!(err.contains(&grants.display().to_string()), "{err}");
    assert!(err.contains("Read-only"), "{err}");
    assert_eq!(
        store.load("work").unwrap().unwrap().refresh_token.expose(),
        NEW
    );
    fs.remount("rw");
    store.save("work", &newer).unwrap();
    assert!(temp_files(&grants).is_empty());
}
