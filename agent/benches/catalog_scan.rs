//! Benchmark of the initial catalog scan: a generated repository with 100,000 files and
//! 1,000 catalog files (plus a big ignored `node_modules`), walked and validated.
//!
//! Run with `cargo bench -p stagepass --bench catalog_scan`. Prints the median of 5 runs and
//! the number of directories that would be watched. Target: at most 1 s.

// A benchmark on data it generates itself: a failure here is a broken bench, not bad input.
#![allow(clippy::unwrap_used)]

use stagepass::catalog::{discover, validate};
use std::path::Path;
use std::time::{Duration, Instant};

fn generate(root: &Path) {
    let component = |i: usize| {
        format!(
            "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: svc-{i}\n  tags: [rust]\nspec:\n  type: service\n  lifecycle: production\n  owner: team-{}\n  dependsOn: ['resource:db-{i}']\n",
            i % 17
        )
    };
    // 1,000 packages x (1 catalog file + 98 source files in 2 subdirectories) = 99,000 files,
    // plus 1,000 files in an ignored node_modules (never walked).
    for p in 0..1000 {
        let pkg = root.join(format!("packages/p{:04}", p));
        for sub in ["src", "test"] {
            std::fs::create_dir_all(pkg.join(sub)).unwrap();
        }
        std::fs::write(pkg.join("catalog-info.yaml"), component(p)).unwrap();
        for f in 0..98 {
            let sub = if f % 2 == 0 { "src" } else { "test" };
            std::fs::write(pkg.join(sub).join(format!("f{f}.rs")), "fn main() {}\n").unwrap();
        }
    }
    let nm = root.join("node_modules/dep");
    std::fs::create_dir_all(&nm).unwrap();
    for f in 0..1000 {
        std::fs::write(nm.join(format!("catalog-info-{f}.yaml")), "x: 1\n").unwrap();
    }
    std::fs::write(root.join("node_modules/dep/catalog-info.yaml"), "x: [\n").unwrap();
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let t = Instant::now();
    generate(root);
    eprintln!("generated in {:?}", t.elapsed());
    let matcher = discover::Matcher::new(&[]).unwrap();
    let mut runs: Vec<Duration> = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let t = Instant::now();
        let w = discover::walk(root, root, None, &matcher);
        let mut entities = 0;
        let mut findings = 0;
        for f in &w.files {
            let r = validate::check_file(f, f.strip_prefix(root).unwrap());
            entities += r.entities.len();
            findings += r.findings.len();
        }
        runs.push(t.elapsed());
        last = Some((w.entries, w.dirs.len(), w.files.len(), entities, findings));
    }
    runs.sort();
    let (seen, dirs, files, entities, findings) = last.unwrap();
    println!(
        "catalog_scan: median {:?} (min {:?}, max {:?}); files seen {seen}, dirs (= watches) {dirs}, catalog files {files}, entities {entities}, findings {findings}",
        runs[2], runs[0], runs[4]
    );
    assert_eq!(files, 1000);
    assert_eq!(entities, 1000);
    assert_eq!(findings, 0);
}
