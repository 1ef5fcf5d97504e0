//! Who may read what: [`Readers`] (everyone, or the groups of a key) and
//! documents' access lists (metadata `access`). Low in the house so the
//! stores, search and the key store all decide with the same rule.

use crate::types::{ACCESS_KEY, DocRecord};

/// Who is reading: what decides which documents with an access list
/// (metadata `access`, e.g. front matter `access: [sre, eng]`) they see.
/// Documents without one are visible to everyone.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Readers {
    /// Every document (the local CLI; a server without keys).
    #[default]
    Everyone,
    /// Documents without an access list, or sharing a group with these.
    Groups(Vec<String>),
}

impl Readers {
    /// True when they may read `doc`.
    pub fn may_read(&self, doc: &DocRecord) -> bool {
        let Readers::Groups(groups) = self else {
            return true;
        };
        match doc.metadata.get(ACCESS_KEY) {
            Some(list) if has_access_list(doc) => groups.iter().any(|g| value_matches(list, g)),
            _ => true,
        }
    }

    /// True when some documents may be hidden from them.
    pub fn restricted(&self) -> bool {
        matches!(self, Readers::Groups(_))
    }
}

/// True when `doc` carries a non-empty access list.
pub fn has_access_list(doc: &DocRecord) -> bool {
    match doc.metadata.get(ACCESS_KEY) {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Array(items)) => !items.is_empty(),
        Some(_) => true,
    }
}

/// True when the metadata value `have` (a string, number, bool or a list
/// of them) matches `want`.
pub(crate) fn value_matches(have: &serde_json::Value, want: &str) -> bool {
    match have {
        serde_json::Value::String(s) => s == want,
        serde_json::Value::Array(items) => items.iter().any(|item| value_matches(item, want)),
        serde_json::Value::Number(n) => want.parse::<f64>().ok() == n.as_f64(),
        serde_json::Value::Bool(b) => want.parse::<bool>().ok() == Some(*b),
        serde_json::Value::Null | serde_json::Value::Object(_) => false,
    }
}
