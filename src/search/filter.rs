//! Filters on where a chunk came from: path (prefix or glob), file type, and
//! metadata `key=value` (front-matter tags and the like). A filter is turned
//! into the set of allowed slots before searching, so both retrievers search
//! inside the subset and still return `k` hits when `k` exist.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::access::value_matches;
pub use crate::access::{Readers, has_access_list};
use crate::error::{Error, Result};
use crate::store::{Index, SlotSet};
use crate::types::DocRecord;

/// Conditions a document must meet, all of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// Path prefix, or a glob when it contains `*`, `?`, `[` or `{`.
    pub path: Option<String>,
    /// File type: a kind (`markdown`, `html`, `pdf`, `text`, `code`,
    /// `record`) or a file extension (`md`, `py`, ...).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Metadata values; a list-valued key matches when any element does.
    pub metadata: BTreeMap<String, String>,
}

impl Filter {
    /// Parses `KEY=VALUE` pairs: `path=…`, `type=…`, anything else is a
    /// metadata key. Relative paths that exist are made absolute.
    pub fn parse(pairs: &[String]) -> Result<Filter> {
        let mut filter = Filter::default();
        for pair in pairs {
            let (key, value) = pair
                .split_once('=')
                .filter(|(k, v)| !k.trim().is_empty() && !v.is_empty())
                .ok_or_else(|| {
                    Error::InvalidRequest(format!("filter '{pair}' is not KEY=VALUE"))
                })?;
            match key.trim() {
                "path" => filter.path = Some(absolute_if_exists(value)),
                "type" => filter.kind = Some(value.to_ascii_lowercase()),
                key => {
                    filter.metadata.insert(key.to_string(), value.to_string());
                }
            }
        }
        Ok(filter)
    }

    /// True when the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        self.path.is_none() && self.kind.is_none() && self.metadata.is_empty()
    }

    /// A compiled form, checked once.
    pub fn compile(&self) -> Result<Compiled<'_>> {
        let glob = match &self.path {
            Some(p) if p.contains(['*', '?', '[', '{']) => {
                let pattern = if p.starts_with('/') || p.starts_with('*') {
                    p.clone()
                } else {
                    format!("**/{p}")
                };
                Some(
                    Glob::new(&pattern)
                        .map_err(|e| Error::InvalidRequest(format!("bad path glob '{p}': {e}")))?
                        .compile_matcher(),
                )
            }
            _ => None,
        };
        Ok(Compiled { filter: self, glob })
    }
}

fn absolute_if_exists(value: &str) -> String {
    match Path::new(value).canonicalize() {
        Ok(path) if !value.starts_with('/') => {
            let mut s = path.display().to_string();
            if value.ends_with('/') && !s.ends_with('/') {
                s.push('/');
            }
            s
        }
        _ => value.to_string(),
    }
}

/// A [`Filter`] ready to test documents.
pub struct Compiled<'a> {
    filter: &'a Filter,
    glob: Option<GlobMatcher>,
}

impl Compiled<'_> {
    /// True when `doc` meets every condition.
    pub fn matches(&self, doc: &DocRecord) -> bool {
        let f = self.filter;
        let path_ok = match (&f.path, &self.glob) {
            (_, Some(glob)) => glob.is_match(&doc.path) || glob.is_match(&doc.file),
            (Some(prefix), None) => doc.path.starts_with(prefix.as_str()),
            (None, None) => true,
        };
        let kind_ok = f.kind.as_deref().is_none_or(|kind| {
            doc.kind.as_str() == kind
                || Path::new(&doc.file)
                    .extension()
                    .is_some_and(|ext| ext.to_string_lossy().eq_ignore_ascii_case(kind))
        });
        path_ok
            && kind_ok
            && f.metadata.iter().all(|(key, want)| {
                doc.metadata
                    .get(key)
                    .is_some_and(|have| value_matches(have, want))
            })
    }
}

pub use crate::types::ACCESS_KEY;

/// The slots both retrievers must search inside: those of every document
/// `filter` lets through and `readers` may read, or `None` when that is
/// every slot (no filter, and no document is hidden from them — checked
/// on the documents with an access list alone). The set is worked out
/// once per filter and readers until the next write (the doc table keeps
/// it), so the same key searching again does not scan the documents.
pub fn allowed(index: &Index, filter: &Filter, readers: &Readers) -> Result<Option<Arc<SlotSet>>> {
    if filter.is_empty() && !readers.restricted() {
        return Ok(None);
    }
    let compiled = filter.compile()?;
    let table = index.doc_table()?;
    let hides_some = readers.restricted()
        && table
            .restricted
            .iter()
            .any(|&at| !readers.may_read(&table.docs[at].record));
    if filter.is_empty() && !hides_some {
        return Ok(None);
    }
    let key = format!(
        "{}\u{0}{:?}",
        serde_json::to_string(filter).unwrap_or_default(),
        hides_some.then_some(readers)
    );
    Ok(Some(table.slot_set(key, || {
        let mut slots = SlotSet::default();
        for entry in &table.docs {
            let doc = &entry.record;
            if compiled.matches(doc) && (!hides_some || readers.may_read(doc)) {
                for &slot in &entry.slots {
                    slots.insert(slot);
                }
            }
        }
        slots
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DocId, DocKind, Metadata};

    fn doc(path: &str, kind: DocKind, metadata: serde_json::Value) -> DocRecord {
        DocRecord {
            id: DocId::from_path(path),
            path: path.into(),
            file: path.into(),
            title: None,
            kind,
            metadata: serde_json::from_value::<Metadata>(metadata).unwrap(),
            hash: String::new(),
            chunks: Vec::new(),
        }
    }

    #[test]
    fn path_prefix_glob_type_and_metadata() {
        let runbook = doc(
            "/h/oncall/runbook.md",
            DocKind::Markdown,
            serde_json::json!({"tags": ["oncall", "runbook"], "owner": "sre"}),
        );
        let policy = doc("/h/hr/travel.pdf", DocKind::Pdf, serde_json::json!({}));
        let check = |pairs: &[&str], d: &DocRecord| {
            let pairs: Vec<String> = pairs.iter().map(|s| s.to_string()).collect();
            Filter::parse(&pairs).unwrap().compile().unwrap().matches(d)
        };
        assert!(check(&["path=/h/oncall/"], &runbook));
        assert!(!check(&["path=/h/oncall/"], &policy));
        assert!(check(&["path=oncall/*.md"], &runbook));
        assert!(check(&["type=pdf"], &policy));
        assert!(check(&["type=markdown"], &runbook));
        assert!(check(&["type=md"], &runbook));
        assert!(check(&["tags=runbook", "owner=sre"], &runbook));
        assert!(!check(&["tags=runbook", "owner=hr"], &runbook));
        assert!(!check(&["tags=runbook"], &policy));
    }

    #[test]
    fn malformed_pairs_are_rejected() {
        assert!(Filter::parse(&["novalue".to_string()]).is_err());
        assert!(Filter::parse(&["=x".to_string()]).is_err());
    }

    #[test]
    fn access_lists_hide_documents_from_other_groups_only() {
        let open = doc("/a.md", DocKind::Markdown, serde_json::json!({}));
        let empty = doc(
            "/b.md",
            DocKind::Markdown,
            serde_json::json!({"access": []}),
        );
        let sre = doc(
            "/c.md",
            DocKind::Markdown,
            serde_json::json!({"access": ["sre", "eng"]}),
        );
        let hr = doc(
            "/d.md",
            DocKind::Markdown,
            serde_json::json!({"access": "hr"}),
        );
        let sre_key = Readers::Groups(vec!["sre".into()]);
        let no_groups = Readers::Groups(Vec::new());
        for d in [&open, &empty] {
            assert!(sre_key.may_read(d) && no_groups.may_read(d));
        }
        assert!(sre_key.may_read(&sre) && !sre_key.may_read(&hr));
        assert!(!no_groups.may_read(&sre) && !no_groups.may_read(&hr));
        assert!(Readers::Everyone.may_read(&hr));
    }
}
