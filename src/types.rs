//! The data that flows through lore, one type per stage:
//! [`Document`] (loaded text) → [`Chunk`] (a sized piece of it) → stored
//! [`ChunkRecord`] with its vector slot. Ids are newtypes with stable,
//! content-derived values so re-ingesting the same content is a no-op.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Hex digest of `parts`, 16 bytes of BLAKE3: short enough for keys, wide
/// enough that collisions do not happen in practice.
fn short_hash(parts: &[&[u8]]) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().to_hex()[..32].to_string()
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
pub fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    &text[..end]
}

/// How a file path is named in the index: its text, with every byte that
/// is not UTF-8 written `\\xNN` and `\\` doubled, so two names that differ
/// only in invalid bytes stay two names (and the key reads back).
pub fn path_key(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    if let Ok(text) = std::str::from_utf8(bytes)
        && !text.contains('\\')
    {
        return text.to_string();
    }
    let mut key = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        key.push_str(&chunk.valid().replace('\\', "\\\\"));
        for byte in chunk.invalid() {
            key.push_str(&format!("\\x{byte:02x}"));
        }
    }
    key
}

/// `path` made absolute (against the working directory) with `.` and `..`
/// resolved by name: for paths that no longer exist, which cannot be
/// canonicalized.
pub fn normalize(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = std::path::PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Content hash of a byte string (documents, files), hex.
pub fn content_hash(bytes: &[u8]) -> String {
    short_hash(&[bytes])
}

/// Identity of a document: derived from its normalized source path (plus the
/// record id for documents that live inside a corpus file).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct DocId(pub String);

impl DocId {
    /// The id of the document whose source is `path`.
    pub fn from_path(path: &str) -> Self {
        DocId(short_hash(&[b"doc", path.as_bytes()]))
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identity of a chunk: (document, byte range, content hash).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ChunkId(pub String);

impl ChunkId {
    /// The id of the chunk of `doc` covering `range` with text `text`.
    pub fn new(doc: &DocId, range: &Range<usize>, text: &str) -> Self {
        let start = range.start.to_le_bytes();
        let end = range.end.to_le_bytes();
        ChunkId(short_hash(&[
            doc.0.as_bytes(),
            &start,
            &end,
            text.as_bytes(),
        ]))
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Dense internal position of a chunk's vector. Slots are allocated in
/// increasing order and never reused; `DocStore` maps them to [`ChunkId`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Slot(pub u64);

/// What kind of source a document came from; decides how it is chunked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DocKind {
    /// Plain text.
    Text,
    /// Markdown (front matter stripped into metadata).
    Markdown,
    /// HTML, reduced to its visible text.
    Html,
    /// PDF text layer.
    Pdf,
    /// Source code or configuration in the named language.
    Code,
    /// One record of a BEIR-style `corpus.jsonl`.
    Record,
    /// Chunks imported with their vectors (`lore import`).
    Imported,
}

impl DocKind {
    /// Lower-case name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Text => "text",
            DocKind::Markdown => "markdown",
            DocKind::Html => "html",
            DocKind::Pdf => "pdf",
            DocKind::Code => "code",
            DocKind::Record => "record",
            DocKind::Imported => "imported",
        }
    }
}

/// Free-form metadata: front-matter keys, the record id of a corpus line, ...
pub type Metadata = BTreeMap<String, serde_json::Value>;

/// A loaded document: text plus where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// Stable id, from `path`.
    pub id: DocId,
    /// Normalized source path; `file#record` for corpus records.
    pub path: String,
    /// The file the document was read from.
    pub file: String,
    /// Title, when the format has one.
    pub title: Option<String>,
    /// How it was loaded.
    pub kind: DocKind,
    /// Language of code documents (`rust`, `python`, ...).
    pub language: Option<String>,
    /// The text to index.
    pub text: String,
    /// Byte offset of `text` inside the source file (front matter skipped),
    /// so chunk ranges point into the file where that is meaningful.
    pub text_offset: usize,
    /// Metadata for filters.
    pub metadata: Metadata,
    /// Hash of everything above that affects the index.
    pub hash: String,
}

/// A piece of a document sized for the embedder.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Stable id.
    pub id: ChunkId,
    /// Byte range in the document's source (see [`Document::text_offset`]).
    pub byte_range: Range<usize>,
    /// Markdown heading path above the chunk, outermost first.
    pub heading: Vec<String>,
    /// The chunk's text.
    pub text: String,
}

/// A chunk as stored: the chunk plus its document and vector slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// Stable id.
    pub id: ChunkId,
    /// The document it belongs to.
    pub doc_id: DocId,
    /// Where its vector lives.
    pub slot: Slot,
    /// Byte range in the source.
    pub byte_range: Range<usize>,
    /// Heading path.
    pub heading: Vec<String>,
    /// Text.
    pub text: String,
}

/// A document as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct DocRecord {
    /// Stable id.
    pub id: DocId,
    /// Source path.
    pub path: String,
    /// File it came from.
    pub file: String,
    /// Title.
    pub title: Option<String>,
    /// Kind.
    pub kind: DocKind,
    /// Metadata.
    #[cfg_attr(feature = "server", schema(value_type = Object))]
    pub metadata: Metadata,
    /// Content hash; unchanged hash ⇒ nothing to do.
    pub hash: String,
    /// Its chunks, in text order.
    pub chunks: Vec<ChunkId>,
}

/// What the index remembers of an ingested file, to skip it when unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Normalized path.
    pub path: String,
    /// Size in bytes when ingested.
    pub size: u64,
    /// Modification time (ns since the epoch) when ingested.
    pub mtime_ns: u128,
    /// Hash of the file's bytes.
    pub hash: String,
    /// The documents the file produced.
    pub docs: Vec<DocId>,
}

/// OpenAPI schema of a byte range as serde writes it: `{start, end}`.
#[cfg(feature = "server")]
pub fn byte_range_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let offset = || {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
    };
    ObjectBuilder::new()
        .property("start", offset())
        .property("end", offset())
        .required("start")
        .required("end")
        .build()
}

/// An unguessable hex id (128 bits from the OS-seeded hasher keys), for
/// tokens and response ids.
pub fn random_id() -> String {
    use std::hash::BuildHasher;
    let random = || std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!("{:016x}{:016x}", random(), random())
}

/// The collection every index has, and that requests name when they name none.
pub const DEFAULT_COLLECTION: &str = "default";
/// Longest collection name.
const MAX_COLLECTION_NAME: usize = 64;

/// Checks a collection name: letters, digits, `-`, `_` and `.`, starting
/// with a letter or digit, at most 64 bytes (so it is a safe directory
/// name and never a list separator).
pub fn check_collection_name(name: &str) -> Result<()> {
    let ok = name.len() <= MAX_COLLECTION_NAME
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "collection name '{name}' must start with a letter or digit and hold only letters, \
             digits, '-', '_' or '.' (at most {MAX_COLLECTION_NAME})"
        )))
    }
}

/// The metadata key that lists the groups who may read a document.
pub const ACCESS_KEY: &str = "access";
/// Longest group name.
const MAX_GROUP_NAME: usize = 64;

/// True for a group name: letters, digits, `-`, `_`, `.`, at most 64.
pub fn is_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_GROUP_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Checks the access list in `metadata`, wherever it came from (front
/// matter, an upload, an import row): absent, an empty list (readable by
/// everyone), a group name, or a list of group names. Anything else is
/// refused, so a list that cannot be read never makes a document public.
pub fn check_access(metadata: &Metadata) -> std::result::Result<(), String> {
    use serde_json::Value;
    let Some(access) = metadata.get(ACCESS_KEY) else {
        return Ok(());
    };
    let groups: Vec<&Value> = match access {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    for group in groups {
        match group {
            Value::String(name) if is_group_name(name) => {}
            other => {
                return Err(format!(
                    "its access list holds {other}, which is not a group name (letters, \
                     digits, '-', '_', '.'); write `access: [group, ...]`, or `access: []` \
                     for everyone"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn access_lists_are_group_names_or_refused() {
        let meta = |v: serde_json::Value| {
            let mut m = super::Metadata::new();
            m.insert(super::ACCESS_KEY.into(), v);
            m
        };
        use serde_json::json;
        assert!(super::check_access(&super::Metadata::new()).is_ok());
        for good in [json!([]), json!("hr"), json!(["sre", "eng-2", "a.b"])] {
            assert!(super::check_access(&meta(good.clone())).is_ok(), "{good}");
        }
        for bad in [
            json!(null),
            json!(""),
            json!({"hr": true}),
            json!([["hr"]]),
            json!([1]),
            json!(true),
            json!("HR team"),
            json!(["hr", null]),
        ] {
            assert!(super::check_access(&meta(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn collection_names_are_safe_directory_names() {
        for good in ["default", "handbook", "on-call_2", "a.b", "X9"] {
            assert!(super::check_collection_name(good).is_ok(), "{good}");
        }
        let long = "x".repeat(65);
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a,b",
            "a b",
            "*",
            "é",
            long.as_str(),
        ] {
            assert!(super::check_collection_name(bad).is_err(), "{bad:?}");
        }
    }

    use super::*;

    #[test]
    fn path_keys_keep_invalid_bytes_apart() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let key = |b: &[u8]| path_key(std::path::Path::new(OsStr::from_bytes(b)));
        assert_eq!(key(b"/d/plain.md"), "/d/plain.md");
        assert_ne!(key(b"/d/a\xff.md"), key(b"/d/a\xfe.md"));
        assert_eq!(key(b"/d/a\xff.md"), "/d/a\\xff.md");
        // A name that spells an escape literally is not the escaped name.
        assert_ne!(key(b"/d/a\\xff.md"), key(b"/d/a\xff.md"));
    }

    #[test]
    fn normalized_paths_resolve_dots_by_name() {
        let p = |s: &str| normalize(std::path::Path::new(s));
        assert_eq!(
            p("/srv/docs/a/../b/./c.md"),
            std::path::Path::new("/srv/docs/b/c.md")
        );
        assert_eq!(p("/srv/../../etc"), std::path::Path::new("/etc"));
        assert!(p("rel/x.md").is_absolute());
    }

    #[test]
    fn prefixes_end_on_char_boundaries() {
        assert_eq!(prefix("héllo", 2), "h");
        assert_eq!(prefix("héllo", 3), "hé");
        assert_eq!(prefix("abc", 10), "abc");
    }
}
