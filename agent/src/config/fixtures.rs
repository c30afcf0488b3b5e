//! Every way a configuration is refused, one fixture each, with the exact message.
//!
//! `agent/tests/fixtures/config/reject/*.toml`: each file is loaded alone (with the
//! `STAGEPASS_*` variables its `# env: NAME=VALUE` lines give) and must be refused with the
//! message of its `# expect: ...` line, which is the error without the fixture's own path
//! (`3:17: catalog.backstage_url: ...`). A message ending in `...` need only start so.
//! Adding a check means adding its fixture; a check that stops firing, or fires at another
//! line or key, fails here by name.

use super::Config;
use std::path::{Path, PathBuf};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/reject");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// What loading `path` says, without the path.
fn refusal(path: &Path, text: &str) -> Result<String, String> {
    let env = text
        .lines()
        .filter_map(|l| l.strip_prefix("# env: "))
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        });
    match Config::load(&[path.to_path_buf()], env) {
        Ok(_) => Err("accepted".into()),
        Err(e) => {
            let e = e.to_string();
            let prefix = format!("{}:", path.display());
            Ok(e.strip_prefix(&prefix).map_or(e.clone(), str::to_string))
        }
    }
}

#[test]
fn every_fixture_is_refused_with_its_message() {
    let files = fixtures();
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        let text = std::fs::read_to_string(path).unwrap();
        let Some(want) = text.lines().find_map(|l| l.strip_prefix("# expect: ")) else {
            failures.push(format!("{name}: no `# expect: ` line"));
            continue;
        };
        match refusal(path, &text) {
            Err(why) => failures.push(format!("{name}: {why}")),
            Ok(got) => {
                let fits = match want.strip_suffix("...") {
                    Some(start) => got.starts_with(start),
                    None => got == want,
                };
                if !fits {
                    failures.push(format!("{name}:\n    want {want}\n    got  {got}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Fewer means a fixture was lost with its check still there, or a check dropped.
    assert!(files.len() >= 76, "only {} fixtures", files.len());
}
