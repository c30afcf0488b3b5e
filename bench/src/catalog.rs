//! (5) Catalog: the initial scan (walk + parse + validate) of generated repositories with
//! 1k, 10k and 100k files, and the watch count; the idle CPU of an agent watching the 10k
//! one is measured by `main` with [`generate`].

use crate::report::Report;
use anyhow::{Context, Result};
use stagepass::catalog::{discover, validate};
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes `files` files: per 100, one package with a catalog file and 99 sources in two
/// subdirectories; plus an ignored `node_modules` that must never be walked.
pub fn generate(root: &Path, files: usize) -> Result<()> {
    for p in 0..files / 100 {
        let pkg = root.join(format!("packages/p{p:05}"));
        for sub in ["src", "test"] {
            std::fs::create_dir_all(pkg.join(sub))?;
        }
        std::fs::write(
            pkg.join("catalog-info.yaml"),
            format!(
                "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: svc-{p}\nspec:\n  type: service\n  lifecycle: production\n  owner: team-{}\n",
                p % 17
            ),
        )?;
        for f in 0..99 {
            let sub = if f % 2 == 0 { "src" } else { "test" };
            std::fs::write(pkg.join(sub).join(format!("f{f}.rs")), "fn main() {}\n")?;
        }
    }
    let nm = root.join("node_modules/dep");
    std::fs::create_dir_all(&nm)?;
    for f in 0..100 {
        std::fs::write(nm.join(format!("catalog-info-{f}.yaml")), "x: [\n")?;
    }
    Ok(())
}

/// Scans each size three times; reports the median, the files seen and the watches.
pub fn run(r: &mut Report, quick: bool) -> Result<()> {
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let matcher = discover::Matcher::new(&[]).map_err(|e| anyhow::anyhow!("{e}"))?;
    for &n in sizes {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        generate(root, n)?;
        let mut runs = Vec::new();
        let mut last = (0, 0, 0, 0);
        for _ in 0..3 {
            let t = Instant::now();
            let w = discover::walk(root, root, None, &matcher);
            let mut entities = 0;
            for f in &w.files {
                let rel = f.strip_prefix(root).context("walked outside the root")?;
                entities += validate::check_file(f, rel).entities.len();
            }
            runs.push(t.elapsed());
            last = (w.entries, w.dirs.len(), w.files.len(), entities);
        }
        runs.sort_unstable();
        let median: Duration = runs[1];
        r.catalog_scan(n, median, last.0, last.1, last.2, last.3);
    }
    Ok(())
}
