//! `catalog.globs`: extra catalog-file patterns, compiled when the config is read so a bad
//! one is refused at its line instead of stopping the catalog engine later.

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Deserializer};

/// The configured globs (relative to the repository root) and their compiled set.
#[derive(Debug, Clone)]
pub struct CatalogGlobs {
    patterns: Vec<String>,
    set: GlobSet,
}

impl CatalogGlobs {
    /// Compiles `patterns` as the catalog engine matches them (`globset` defaults: `*` may
    /// cross `/`); the error names the pattern and what is wrong with it.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            let p = p.as_ref();
            let glob =
                Glob::new(p).map_err(|e| format!("{p:?} is not a valid glob: {}", e.kind()))?;
            builder.add(glob);
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
}

impl Default for CatalogGlobs {
    fn default() -> Self {
        Self {
            patterns: Vec::new(),
            set: GlobSet::empty(),
        }
    }
}

impl PartialEq for CatalogGlobs {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for CatalogGlobs {}

/// One pattern, checked alone so its error points at its own element of the array.
struct Pattern(String);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Pattern;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a glob")
            }
            // Checked inside the visitor, so the TOML reader tags the error with this
            // element's position.
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Pattern, E> {
                Glob::new(s)
                    .map_err(|e| E::custom(format!("{s:?} is not a valid glob: {}", e.kind())))?;
                Ok(Pattern(s.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for CatalogGlobs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let patterns: Vec<String> = Vec::<Pattern>::deserialize(d)?
            .into_iter()
            .map(|p| p.0)
            .collect();
        Self::new(&patterns).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::CatalogGlobs;

    #[test]
    fn compiles_what_the_engine_matches_and_names_a_bad_pattern() {
        let g = CatalogGlobs::new(&["apis/*.yaml"]).unwrap();
        assert!(g.set().is_match("apis/x.yaml"));
        assert!(
            g.set().is_match("apis/a/x.yaml"),
            "* crosses / as the engine always did"
        );
        let e = CatalogGlobs::new(&["ok/*.yaml", "a/["]).unwrap_err();
        assert!(e.starts_with("\"a/[\" is not a valid glob"), "{e}");
        assert_eq!(CatalogGlobs::default().patterns(), &[] as &[String]);
    }
}
