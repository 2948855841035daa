//! Key rules: which keys are Lance's write-once files (cached with no revalidation), which
//! are mutable pointers (never cached), and everything else (keyed by ETag, revalidated
//! after a TTL). Every fleet member classifies a key with these same rules. Globs: `*`
//! stays inside one path segment, `**` crosses `/`; each list is matched as one `GlobSet`.

use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};

/// Compiles one glob with the rules' syntax (`*` inside a segment, `**` across `/`).
pub fn compile_glob(pattern: &str) -> Result<GlobMatcher, String> {
    glob(pattern).map(|g| g.compile_matcher())
}

fn glob(pattern: &str) -> Result<Glob, String> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("invalid glob {pattern:?}: {e}"))
}

/// Compiles `patterns` into one set (one match per key, whatever their number).
pub fn glob_set(patterns: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(glob(p)?);
    }
    b.build().map_err(|e| format!("invalid globs: {e}"))
}

/// Lance files that are written once and never change.
pub fn default_immutable() -> Vec<String> {
    ["**/data/*.lance", "**/_indices/**", "**/_deletions/*", "**/_versions/*.manifest", "**/_transactions/*"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// Lance's mutable pointers to the latest version.
pub fn default_never_cache() -> Vec<String> {
    ["**/_latest.manifest", "**/_versions/*version_hint*", "**/_versions/*.json"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// How the identity of an object's content is established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyClass {
    /// Written once, never changed: metadata is cached until a write through this node.
    Immutable,
    /// May change: keyed by ETag, metadata revalidated with HEAD after the TTL.
    Revalidated,
    /// A mutable pointer: every read goes to the origin.
    NeverCache,
}

pub struct KeyRules {
    immutable: GlobSet,
    never_cache: GlobSet,
    spec: KeyRuleSpec,
}

/// Key rules as configured: what a node publishes to fleet members and what they compare.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRuleSpec {
    pub immutable: Vec<String>,
    pub never_cache: Vec<String>,
}

impl KeyRuleSpec {
    /// Equal as rule sets: the order of globs and repeats do not matter.
    pub fn same_as(&self, other: &KeyRuleSpec) -> bool {
        let norm = |v: &[String]| v.iter().cloned().collect::<std::collections::BTreeSet<_>>();
        norm(&self.immutable) == norm(&other.immutable) && norm(&self.never_cache) == norm(&other.never_cache)
    }
}

impl KeyRules {
    pub fn new(immutable: &[String], never_cache: &[String]) -> Result<Self, String> {
        Ok(Self {
            immutable: glob_set(immutable)?,
            never_cache: glob_set(never_cache)?,
            spec: KeyRuleSpec { immutable: immutable.to_vec(), never_cache: never_cache.to_vec() },
        })
    }

    pub fn from_spec(spec: &KeyRuleSpec) -> Result<Self, String> {
        Self::new(&spec.immutable, &spec.never_cache)
    }

    /// The rules a fleet runs with unless configured otherwise.
    pub fn lance_defaults() -> Self {
        // The default globs are fixed and valid; an empty set can only come from a bug.
        Self::new(&default_immutable(), &default_never_cache()).unwrap_or(Self {
            immutable: GlobSet::empty(),
            never_cache: GlobSet::empty(),
            spec: KeyRuleSpec { immutable: Vec::new(), never_cache: Vec::new() },
        })
    }

    pub fn spec(&self) -> &KeyRuleSpec {
        &self.spec
    }

    pub fn classify(&self, key: &str) -> KeyClass {
        if self.never_cache.is_match(key) {
            KeyClass::NeverCache
        } else if self.immutable.is_match(key) {
            KeyClass::Immutable
        } else {
            KeyClass::Revalidated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lance_layout_is_classified() {
        let rules =
            KeyRules::new(&default_immutable(), &default_never_cache()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rules.classify("t.lance/data/0a1b.lance"), KeyClass::Immutable);
        assert_eq!(rules.classify("a/b/t.lance/_indices/uuid/index.idx"), KeyClass::Immutable);
        assert_eq!(rules.classify("t.lance/_versions/18446744073709551614.manifest"), KeyClass::Immutable);
        assert_eq!(rules.classify("t.lance/_latest.manifest"), KeyClass::NeverCache);
        assert_eq!(rules.classify("t.lance/_versions/latest_version_hint.json"), KeyClass::NeverCache);
        assert_eq!(rules.classify("photos/cat.jpg"), KeyClass::Revalidated);
        assert_eq!(rules.classify("data/x.lance.tmp"), KeyClass::Revalidated);
        assert_eq!(KeyRules::lance_defaults().classify("t.lance/data/0a1b.lance"), KeyClass::Immutable);
        assert!(KeyRules::new(&["a[".into()], &[]).is_err());
    }
}
