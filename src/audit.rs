//! The audit trail: one event per write (ingest, import, upload, delete,
//! remove, collection and key changes) with who did it (a key id, never a
//! secret), the collection, the action, its counts and the ids of the
//! documents it touched. Each write is recorded where it is made (the
//! engine, the key store), whoever calls it: CLI, server, watcher or a
//! program that links the library.
//!
//! Every event goes through tracing under the target `lore::audit`, so it
//! lands wherever logs go. An index may also name an audit file
//! (`lore serve --audit-log FILE` records it in `<index>/audit-log.path`):
//! then every process that writes to that index appends its events to that
//! file as JSON lines, a key created by `lore key create` next to a running
//! server included.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::types::DocId;

/// The tracing target of audit events.
pub const TARGET: &str = "lore::audit";

/// The file in an index directory that names its audit file.
const POINTER: &str = "audit-log.path";
/// Ids an event shows in the log (the audit file holds them all): a big
/// ingest must not print a megabyte line to stderr.
const LOGGED_IDS: usize = 20;

/// One write, as the trail records it.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    /// Who wrote: a key id, `local`, `cli`, `watch`.
    pub actor: &'a str,
    /// The collection written to (`*` for key changes).
    pub collection: &'a str,
    /// What was done.
    pub action: Action,
    /// Documents added, replaced or removed.
    pub documents: usize,
    /// Chunks written or dropped.
    pub chunks: usize,
    /// The ids of the documents touched (key ids for key changes).
    pub ids: Vec<&'a str>,
}

/// What a write did, as the trail names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Files ingested (or a watcher's batch).
    Ingest,
    /// Rows imported.
    Import,
    /// A document uploaded through the API.
    Upload,
    /// A document deleted by id.
    Delete,
    /// Files, folders or a document removed.
    Remove,
    /// A collection created.
    CollectionCreate,
    /// A collection dropped.
    CollectionDrop,
    /// An API key created.
    KeyCreate,
    /// An API key revoked.
    KeyRevoke,
}

impl Action {
    /// Its name, as in the trail.
    pub fn name(self) -> &'static str {
        match self {
            Action::Ingest => "ingest",
            Action::Import => "import",
            Action::Upload => "upload",
            Action::Delete => "delete",
            Action::Remove => "remove",
            Action::CollectionCreate => "collection_create",
            Action::CollectionDrop => "collection_drop",
            Action::KeyCreate => "key_create",
            Action::KeyRevoke => "key_revoke",
        }
    }
}

impl<'a> Event<'a> {
    /// A write by `actor` to `collection`, with no counts yet.
    pub fn new(actor: &'a str, collection: &'a str, action: Action) -> Event<'a> {
        Event {
            actor,
            collection,
            action,
            documents: 0,
            chunks: 0,
            ids: Vec::new(),
        }
    }

    /// The documents touched (their count is the documents count).
    pub fn documents(mut self, ids: &'a [DocId]) -> Event<'a> {
        self.ids = ids.iter().map(|id| id.0.as_str()).collect();
        self.documents = ids.len();
        self
    }

    /// The chunks written or dropped.
    pub fn chunks(mut self, chunks: usize) -> Event<'a> {
        self.chunks = chunks;
        self
    }

    /// Names one object touched that is not a document (a key id).
    pub fn object(mut self, id: &'a str) -> Event<'a> {
        self.ids = vec![id];
        self
    }

    /// Records the event for the index in `index`: to tracing, and to the
    /// index's audit file when it names one. A trail that cannot be
    /// written is an error in the log, never a silent gap.
    pub fn record(&self, index: &Path) {
        tracing::info!(
            target: TARGET,
            actor = self.actor,
            collection = self.collection,
            action = self.action.name(),
            documents = self.documents,
            chunks = self.chunks,
            ids = logged_ids(&self.ids),
            "audit"
        );
        if let Err(e) = self.append(index) {
            tracing::error!(
                target: TARGET,
                action = self.action.name(),
                "the audit trail could not be written: {e}"
            );
        }
    }

    fn append(&self, index: &Path) -> Result<()> {
        let Some(file) = audit_file(index)? else {
            return Ok(());
        };
        let line = Line {
            time: jiff::Timestamp::now().to_string(),
            pid: std::process::id(),
            event: self,
        };
        let mut line = serde_json::to_vec(&line).map_err(|e| Error::store("audit", e))?;
        line.push(b'\n');
        // One append per event: concurrent writers never interleave a line.
        let mut out = open(&file)?;
        out.write_all(&line).map_err(|e| Error::io(&file, e))
    }
}

/// The first [`LOGGED_IDS`] of `ids`, and how many more there are.
fn logged_ids(ids: &[&str]) -> String {
    let shown = ids[..ids.len().min(LOGGED_IDS)].join(",");
    match ids.len().saturating_sub(LOGGED_IDS) {
        0 => shown,
        more => format!("{shown},… {more} more (all in the audit file)"),
    }
}

/// One line of the audit file.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    pid: u32,
    #[serde(flatten)]
    event: &'a Event<'a>,
}

/// Makes `file` the audit file of the index in `index`: every later write
/// to that index, from any process, is appended to it. Refuses a file
/// that cannot be opened for appending.
pub fn set_file(index: &Path, file: &Path) -> Result<PathBuf> {
    drop(open(file)?);
    let file = file.canonicalize().map_err(|e| Error::io(file, e))?;
    let text = file.to_str().ok_or_else(|| {
        Error::InvalidRequest(format!("the audit log {} is not UTF-8", file.display()))
    })?;
    let pointer = index.join(POINTER);
    let tmp = index.join(format!("{POINTER}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, format!("{text}\n")).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &pointer).map_err(|e| Error::io(&pointer, e))?;
    Ok(file)
}

/// The audit file the index in `index` names, if any. A pointer that
/// exists but cannot be read is an error, not "no audit file".
pub fn audit_file(index: &Path) -> Result<Option<PathBuf>> {
    let pointer = index.join(POINTER);
    match std::fs::read_to_string(&pointer) {
        Ok(text) if text.trim().is_empty() => Err(Error::Config(format!(
            "{} is empty; remove it to stop the audit file",
            pointer.display()
        ))),
        Ok(text) => Ok(Some(PathBuf::from(text.trim_end_matches('\n')))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&pointer, e)),
    }
}

fn open(file: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| Error::io(file, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_process_writing_an_index_appends_to_the_file_it_names() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("audit.jsonl");
        Event::new("cli", "default", Action::Ingest).record(tmp.path());
        assert!(!log.exists(), "no audit file named yet");
        set_file(tmp.path(), &log).unwrap();
        let ids = [DocId("a.md#0".into()), DocId("b.md#0".into())];
        Event::new("k1", "default", Action::Delete)
            .documents(&ids)
            .chunks(3)
            .record(tmp.path());
        Event::new("cli", "*", Action::KeyCreate)
            .object("k2")
            .record(tmp.path());
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["actor"], "k1");
        assert_eq!(lines[0]["documents"], 2);
        assert_eq!(lines[0]["ids"], serde_json::json!(["a.md#0", "b.md#0"]));
        assert_eq!(lines[1]["action"], "key_create");
        assert_eq!(lines[1]["ids"], serde_json::json!(["k2"]));
        assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn the_log_shows_a_few_ids_and_the_file_all_of_them() {
        let ids: Vec<String> = (0..25).map(|n| format!("d{n}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let logged = logged_ids(&ids);
        assert!(logged.starts_with("d0,d1,") && logged.ends_with("5 more (all in the audit file)"));
        assert_eq!(logged_ids(&ids[..2]), "d0,d1");
    }

    #[test]
    fn an_audit_file_that_cannot_be_opened_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("no/such/dir/audit.jsonl");
        assert!(set_file(tmp.path(), &missing).is_err());
        assert!(audit_file(tmp.path()).unwrap().is_none());
        std::fs::write(tmp.path().join(POINTER), "").unwrap();
        assert!(audit_file(tmp.path()).is_err());
    }
}
