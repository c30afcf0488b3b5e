//! Gives the start-up code back once the agent has settled (issue 23, RSS at rest).
//!
//! The agent's memory at rest is mostly the binary's clean code pages, not its heap: of
//! about 11 MiB idle, under 2 MiB is anonymous (bench notes, "RSS at rest"). Reading the
//! config, the catalog's first scan of the repository, the keyring probe and the boot
//! refresh run code the serving agent will not run again for hours, and the kernel maps the
//! 64 KiB around every page a fault touches. Once the agent has been ready for [`SETTLE`],
//! `madvise(MADV_PAGEOUT)` over the binary's own read-only mappings asks the kernel to
//! reclaim those pages now rather than under memory pressure; what the serving path needs
//! faults back in on its next use, once (the bench measures both: RSS after the trim, RSS
//! after the HTTP load, and the first answer after the trim).
//!
//! Only the binary's mappings are advised, never the heap or a library's: the page-out does
//! not change a page's contents, so nothing the process holds can be lost; a kernel without
//! `MADV_PAGEOUT` (before Linux 5.4) refuses it and the agent goes on as before.

use std::path::Path;
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;

/// How long after `READY` the trim waits: past the first requests of a container start
/// (the tools of `postStartCommand`), and the catalog's first scan of a large repository.
pub const SETTLE: Duration = Duration::from_secs(10);

/// What one trim did, for the log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Mappings of the binary advised.
    pub mappings: usize,
    /// Their total size in bytes (mapped, not resident).
    pub bytes: usize,
}

/// Trims once, [`SETTLE`] after the call; the task ends with the returned handle.
pub fn spawn_after_settle() -> AbortOnDropHandle<()> {
    AbortOnDropHandle::new(tokio::spawn(async {
        tokio::time::sleep(SETTLE).await;
        let before = rss_file_kib();
        match trim() {
            Ok(t) => tracing::info!(
                mappings = t.mappings,
                mapped_kib = t.bytes / 1024,
                rss_file_kib_before = before,
                rss_file_kib_after = rss_file_kib(),
                "gave the start-up code pages back to the kernel"
            ),
            Err(e) => tracing::debug!(error = %e, "start-up code pages kept"),
        }
    }))
}

/// Advises the kernel to page out every read-only mapping of this process's binary.
pub fn trim() -> std::io::Result<Trimmed> {
    let exe = std::env::current_exe()?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut done = Trimmed::default();
    for (start, len) in binary_ranges(&maps, &exe) {
        page_out(start, len)?;
        done.mappings += 1;
        done.bytes += len;
    }
    Ok(done)
}

/// The read-only mappings of `exe` in a `/proc/self/maps` text, as (start, length).
/// Writable mappings (`.data`, `.bss`) are left alone: they hold the program's state.
fn binary_ranges(maps: &str, exe: &Path) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            // offset, device, inode, then the path (which may hold spaces).
            let path = line.splitn(6, char::is_whitespace).nth(5)?.trim_start();
            if Path::new(path) != exe || !perms.starts_with('r') || perms.contains('w') {
                return None;
            }
            let (lo, hi) = range.split_once('-')?;
            let lo = usize::from_str_radix(lo, 16).ok()?;
            let hi = usize::from_str_radix(hi, 16).ok()?;
            Some((lo, hi.checked_sub(lo)?))
        })
        .collect()
}

/// `madvise(start, len, MADV_PAGEOUT)`.
#[allow(unsafe_code)]
fn page_out(start: usize, len: usize) -> std::io::Result<()> {
    // SAFETY: MADV_PAGEOUT never changes what a page holds: the kernel reclaims clean file
    // pages (read back from the binary on the next access) and writes dirty anonymous ones
    // to swap (or keeps them); no reference into these pages can see a different value.
    // The range is a whole mapping of this process as /proc/self/maps listed it; if it was
    // unmapped since, the kernel answers ENOMEM and nothing happens.
    unsafe {
        rustix::mm::madvise(
            start as *mut std::ffi::c_void,
            len,
            rustix::mm::Advice::LinuxPageOut,
        )
    }
    .map_err(std::io::Error::from)
}

/// This process's resident file pages in KiB (`RssFile`), 0 when unreadable.
pub fn rss_file_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssFile:"))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_binarys_read_only_mappings_are_chosen() {
        let maps = "\
55d0a0000000-55d0a0100000 r--p 00000000 fd:01 42 /opt/stage pass/stagepass-core
55d0a0100000-55d0a0900000 r-xp 00100000 fd:01 42 /opt/stage pass/stagepass-core
55d0a0900000-55d0a0910000 rw-p 00900000 fd:01 42 /opt/stage pass/stagepass-core
7f0000000000-7f0000100000 r-xp 00000000 fd:01 7 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";
        let exe = Path::new("/opt/stage pass/stagepass-core");
        assert_eq!(
            binary_ranges(maps, exe),
            [(0x55d0a0000000, 0x100000), (0x55d0a0100000, 0x800000)]
        );
        assert!(binary_ranges(maps, Path::new("/other")).is_empty());
        assert!(binary_ranges("garbage\n1-0 r-xp 0 0 0 /x\n", Path::new("/x")).is_empty());
    }

    /// The page-out really returns the binary's code pages to the kernel. The kernel
    /// reclaims only pages that one process maps, and nextest runs other tests of this
    /// binary beside this one, so the check runs in a copy of the binary no other process
    /// has mapped (`trim_in_a_process_of_its_own`).
    #[test]
    fn the_binarys_code_pages_are_given_back() {
        let tmp = tempfile::tempdir().unwrap();
        let copy = tmp.path().join("trim-probe");
        std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
        // Written back, so its pages are clean: the kernel does not reclaim dirty ones.
        std::fs::File::open(&copy).unwrap().sync_all().unwrap();
        let out = std::process::Command::new(&copy)
            .args([
                "--exact",
                "daemon::trim::tests::trim_in_a_process_of_its_own",
                "--ignored",
                "--nocapture",
            ])
            .env(PROBE, "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the probe did not run: {text}");
    }

    /// Set by [`the_binarys_code_pages_are_given_back`] for its probe.
    const PROBE: &str = "STAGEPASS_TRIM_PROBE";

    #[test]
    #[ignore = "the probe of the_binarys_code_pages_are_given_back, run in a copy of this binary"]
    fn trim_in_a_process_of_its_own() {
        assert!(
            std::env::var_os(PROBE).is_some(),
            "run through the_binarys_code_pages_are_given_back: in this binary other tests share the pages"
        );
        // Resident pages of the binary's read-only mappings that are the file's (`Rss` less
        // `Anonymous`: the read-only data mappings also hold the pages the loader relocated,
        // private copies the kernel cannot drop without swap).
        let resident = || {
            let exe = std::env::current_exe().unwrap();
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            let kib = |v: &str| -> i64 { v.split_whitespace().next().unwrap().parse().unwrap() };
            let mut total = 0i64;
            let mut ours = false;
            for line in smaps.lines() {
                if let Some(v) = line.strip_prefix("Rss:") {
                    total += if ours { kib(v) } else { 0 };
                } else if let Some(v) = line.strip_prefix("Anonymous:") {
                    total -= if ours { kib(v) } else { 0 };
                } else if line
                    .split_whitespace()
                    .next()
                    .is_some_and(|r| r.contains('-'))
                    && !line.starts_with(char::is_uppercase)
                {
                    let path = line.splitn(6, char::is_whitespace).nth(5).unwrap_or("");
                    let perms = line.split_whitespace().nth(1).unwrap_or("");
                    ours = Path::new(path.trim_start()) == exe && !perms.contains('w');
                }
            }
            total
        };
        let before = resident();
        let done = trim().unwrap();
        let after = resident();
        assert!(done.mappings >= 2, "{done:?}");
        assert!(before > 0);
        // Seen: 6.4-6.7 MiB -> 2.3-2.8 MiB (what the probe runs after the trim faults back
        // in); without the page-out it does not shrink at all.
        assert!(
            after * 3 < before * 2,
            "resident file pages {before} KiB -> {after} KiB"
        );
    }
}
