//! Glob lists of the config (`catalog.globs`, the `exe` and `parent` of policy allow rules),
//! compiled when the config is read so a bad pattern is refused at its place in the array
//! instead of stopping the catalog engine or being skipped by the policy later.

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Deserializer};

/// Patterns as written and their compiled set (`globset` defaults: `*` may cross `/`).
#[derive(Debug, Clone)]
pub struct GlobList {
    patterns: Vec<String>,
    set: GlobSet,
}

impl GlobList {
    /// Compiles `patterns`; the error names the pattern and what is wrong with it.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            builder.add(glob(p.as_ref())?);
        }
        let set = builder
            .build()
            .map_err(|e| format!("the globs cannot be compiled together: {e}"))?;
        Ok(Self {
            patterns: patterns.iter().map(|p| p.as_ref().to_string()).collect(),
            set,
        })
    }

    /// The patterns as written.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The compiled set.
    pub fn set(&self) -> &GlobSet {
        &self.set
    }

    /// No pattern at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

impl Default for GlobList {
    fn default() -> Self {
        Self {
            patterns: Vec::new(),
            set: GlobSet::empty(),
        }
    }
}

impl PartialEq for GlobList {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for GlobList {}

fn glob(p: &str) -> Result<Glob, String> {
    Glob::new(p).map_err(|e| format!("{p:?} is not a valid glob: {}", e.kind()))
}

/// `catalog.globs`: paths relative to the repository root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogGlobs(pub GlobList);

/// `exe` / `parent` of an allow rule: executables are matched by their full path, so each
/// pattern is an absolute path or starts with `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExeGlobs(pub GlobList);

impl std::ops::Deref for CatalogGlobs {
    type Target = GlobList;
    fn deref(&self) -> &GlobList {
        &self.0
    }
}

impl std::ops::Deref for ExeGlobs {
    type Target = GlobList;
    fn deref(&self) -> &GlobList {
        &self.0
    }
}

impl ExeGlobs {
    /// The serde name of one pattern, so a schema probe (the docs check) can answer it with
    /// an absolute path rather than any string.
    pub const PATTERN_SERDE_NAME: &'static str = "ExeGlob";
}

/// One pattern, checked inside the visitor so the TOML reader tags an error with this
/// element's position. `EXE`: an executable pattern ([`ExeGlobs`]).
struct Pattern<const EXE: bool>(String);

struct PatternVisitor<const EXE: bool>;

impl<const EXE: bool> PatternVisitor<EXE> {
    fn check(s: &str) -> Result<Pattern<EXE>, String> {
        if EXE && !s.starts_with('/') && !s.starts_with('*') {
            return Err(format!(
                "{s:?} must be an absolute path or glob (executables are matched by full path)"
            ));
        }
        glob(s)?;
        Ok(Pattern(s.to_string()))
    }
}

impl<'de, const EXE: bool> serde::de::Visitor<'de> for PatternVisitor<EXE> {
    type Value = Pattern<EXE>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a glob")
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Pattern<EXE>, E> {
        Self::check(s).map_err(E::custom)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Pattern<EXE>, D::Error> {
        let s = String::deserialize(d)?;
        Self::check(&s).map_err(serde::de::Error::custom)
    }
}

impl<'de, const EXE: bool> Deserialize<'de> for Pattern<EXE> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if EXE {
            d.deserialize_newtype_struct(ExeGlobs::PATTERN_SERDE_NAME, PatternVisitor::<EXE>)
        } else {
            d.deserialize_str(PatternVisitor::<EXE>)
        }
    }
}

fn list<'de, D: Deserializer<'de>, const EXE: bool>(d: D) -> Result<GlobList, D::Error> {
    let patterns: Vec<String> = Vec::<Pattern<EXE>>::deserialize(d)?
        .into_iter()
        .map(|p| p.0)
        .collect();
    GlobList::new(&patterns).map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for CatalogGlobs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        list::<D, false>(d).map(Self)
    }
}

impl<'de> Deserialize<'de> for ExeGlobs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        list::<D, true>(d).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::{CatalogGlobs, ExeGlobs, GlobList};

    #[test]
    fn compiles_what_the_engine_matches_and_names_a_bad_pattern() {
        let g = GlobList::new(&["apis/*.yaml"]).unwrap();
        assert!(g.set().is_match("apis/x.yaml"));
        assert!(
            g.set().is_match("apis/a/x.yaml"),
            "* crosses / as it always did"
        );
        let e = GlobList::new(&["ok/*.yaml", "a/["]).unwrap_err();
        assert!(e.starts_with("\"a/[\" is not a valid glob"), "{e}");
        assert!(CatalogGlobs::default().is_empty());
    }

    #[test]
    fn executable_patterns_are_absolute() {
        #[derive(Debug, serde::Deserialize)]
        struct T {
            exe: ExeGlobs,
        }
        let t: T = toml::from_str("exe = [\"/usr/bin/git\", \"*/git\"]").unwrap();
        assert!(t.exe.set().is_match("/usr/bin/git"));
        let e = toml::from_str::<T>("exe = [\"/usr/bin/git\", \"git\"]").unwrap_err();
        assert!(
            e.message().contains("\"git\" must be an absolute path"),
            "{e}"
        );
        assert_eq!(e.span().map(|s| s.start), Some(23));
    }
}
