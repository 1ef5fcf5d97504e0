//! [`Engine::import`]: chunks that were embedded elsewhere (another
//! machine, a Spark job, another tool), read from JSON lines and written to
//! a collection as they are, nothing chunked or embedded here. One row per
//! chunk:
//!
//! ```json
//! {"path": "docs/a.md", "text": "…", "vector": [0.1, …],
//!  "chunk_id": "…", "doc_id": "…", "byte_range": [0, 120],
//!  "heading": ["Guide", "Setup"], "title": "…", "metadata": {"team": "sre"}}
//! ```
//!
//! `path`, `text` and `vector` are required; the ids default to the ones
//! `lore ingest` gives (the document's from its path, the chunk's from the
//! document, range and text), the range to the text's length. A
//! document's rows are consecutive, in text order. The whole input is
//! checked before anything is written: a bad row (not JSON, a missing or
//! mistyped field, a vector of another dimension than the collection's
//! embedder, a value that is not finite) fails the import with its line
//! number, and the index is left as it was. A document whose chunk ids
//! are all already stored is left alone; a changed one keeps the vectors of
//! the chunks it still has.

use std::collections::HashSet;
use std::io::BufRead;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::lines::Line;
use super::{Collection, Engine, Progress, WriteScope};
use crate::error::{Error, Result};
use crate::store::{Change, Checkpoint, DocUpdate, StoreSeconds};
use crate::types::{Chunk, ChunkId, DocId, DocKind, DocRecord, Metadata, content_hash};

/// Longest row accepted, in bytes (text and vector of one chunk).
pub const MAX_ROW_BYTES: usize = 4 << 20;
/// Bad rows listed in one error.
const MAX_REPORTED: usize = 10;
/// Documents written per atomic change.
const DOCS_PER_CHANGE: usize = 256;

/// One chunk as a row of the import format.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRow {
    /// The document's path (names it, as for ingested files).
    pub path: String,
    /// The chunk's text.
    pub text: String,
    /// Its embedding (normalised on import).
    pub vector: Vec<f32>,
    /// Chunk id (default: as `lore ingest` computes it).
    #[serde(default)]
    pub chunk_id: Option<String>,
    /// Document id (default: from the path).
    #[serde(default)]
    pub doc_id: Option<String>,
    /// Byte range in the source (default: `0..len(text)`).
    #[serde(default)]
    pub byte_range: Option<Range<usize>>,
    /// Heading path.
    #[serde(default)]
    pub heading: Vec<String>,
    /// Document title.
    #[serde(default)]
    pub title: Option<String>,
    /// Document metadata (filters, `access`).
    #[serde(default)]
    pub metadata: Metadata,
}

/// What `lore import` did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImportReport {
    /// Rows read.
    pub rows: u64,
    /// Documents new to the collection.
    pub added: u64,
    /// Documents whose chunks changed.
    pub updated: u64,
    /// Documents already stored as they are.
    pub unchanged: u64,
    /// Chunks written with their vectors.
    pub chunks_written: u64,
    /// Imported documents absent from the input, removed (`prune`).
    pub removed: u64,
    /// Wall time.
    pub seconds: f64,
    /// What the writes' time went to, store by store (the rest is reading
    /// and checking the rows).
    pub stores: StoreSeconds,
}

/// One document gathered from its rows.
struct Doc {
    record: DocRecord,
    chunks: Vec<(Chunk, Vec<f32>)>,
}

impl Engine {
    /// Imports the chunks `open` reads (called twice: once to check every
    /// row, once to write) into `collection`. With `prune`, the input is
    /// the whole of what was imported: imported documents it no longer
    /// holds are removed (ingested ones are never touched). `scope` says
    /// who writes, for the audit trail.
    pub fn import(
        &self,
        collection: &str,
        open: &dyn Fn() -> Result<Box<dyn BufRead>>,
        prune: bool,
        scope: &WriteScope,
        progress: &dyn Progress,
    ) -> Result<ImportReport> {
        let start = std::time::Instant::now();
        let _writer = self.writer()?;
        let collection = self.collection(collection)?;
        let dim = collection.embedder_info().dim;
        let spent_before = collection.index().store_seconds();
        let (rows, seen) = check_all(open()?, dim)?;
        progress.started(1);
        progress.planned(rows);
        let every = self.config.ingest.checkpoint_chunks as u64;
        let mut checkpointed = 0;
        let mut report = ImportReport {
            rows,
            ..ImportReport::default()
        };
        let mut batch = Vec::new();
        let mut touched = Vec::new();
        let mut current: Option<Doc> = None;
        for (line, row) in read_rows(open()?) {
            let row = row.map_err(|reason| bad_row(line, &reason))?;
            let doc_id = doc_id(&row);
            if current.as_ref().is_some_and(|d| d.record.id != doc_id) {
                batch.extend(current.take());
            }
            let doc = current.get_or_insert_with(|| new_doc(&row, doc_id));
            doc.chunks.push(chunk(&doc.record.id, row));
            if batch.len() >= DOCS_PER_CHANGE {
                let docs = std::mem::take(&mut batch);
                touched.extend(write(&collection, docs, &mut report, progress)?);
                if report.chunks_written - checkpointed >= every {
                    // The graph is merged once, at the end, and dumped
                    // only as it doubles.
                    collection.index().checkpoint_with(Checkpoint::Bulk)?;
                    checkpointed = report.chunks_written;
                }
            }
        }
        batch.extend(current);
        touched.extend(write(&collection, batch, &mut report, progress)?);
        if prune {
            let gone = remove_unseen(&collection, &seen)?;
            report.removed = gone.len() as u64;
            touched.extend(gone);
        }
        collection.index().checkpoint()?;
        if !touched.is_empty() {
            crate::audit::Event::new(
                &scope.actor,
                collection.name(),
                crate::audit::Action::Import,
            )
            .documents(&touched)
            .chunks(report.chunks_written as usize)
            .record(self.dir());
        }
        progress.file_done("import");
        report.seconds = start.elapsed().as_secs_f64();
        report.stores = collection.index().store_seconds().since(spent_before);
        Ok(report)
    }
}

/// Removes the imported documents of `collection` not in `seen`; returns
/// their ids.
fn remove_unseen(collection: &Collection, seen: &HashSet<DocId>) -> Result<Vec<DocId>> {
    let gone: Vec<DocId> = collection
        .index()
        .docs()
        .all_docs()?
        .into_iter()
        .filter(|d| d.kind == DocKind::Imported && !seen.contains(&d.id))
        .map(|d| d.id)
        .collect();
    for batch in gone.chunks(DOCS_PER_CHANGE) {
        collection.index().apply(Change {
            delete_docs: batch.to_vec(),
            ..Change::default()
        })?;
    }
    Ok(gone)
}

/// Checks every row; counts them and the documents they name, or fails
/// naming the bad lines.
fn check_all(reader: Box<dyn BufRead>, dim: usize) -> Result<(u64, HashSet<DocId>)> {
    let mut rows = 0;
    let mut bad = Vec::new();
    let mut seen_docs: HashSet<DocId> = HashSet::new();
    let mut last: Option<DocId> = None;
    let mut chunk_ids: HashSet<ChunkId> = HashSet::new();
    for (line, row) in read_rows(reader) {
        rows += 1;
        let problem = match row {
            Err(reason) => Some(reason),
            Ok(row) => check_row(&row, dim).err().or_else(|| {
                let id = doc_id(&row);
                let new_doc = last.as_ref() != Some(&id);
                let split = new_doc && seen_docs.contains(&id);
                if new_doc {
                    chunk_ids.clear();
                }
                let (chunk, _) = chunk(&id, row.clone());
                let repeated = !chunk_ids.insert(chunk.id);
                seen_docs.insert(id.clone());
                last = Some(id);
                if split {
                    Some(format!(
                        "document {} continues here after other documents: a document's rows \
                         must be consecutive",
                        row.path
                    ))
                } else {
                    repeated.then(|| "the same chunk twice in one document".to_string())
                }
            }),
        };
        if let Some(reason) = problem {
            bad.push(format!("line {line}: {reason}"));
            if bad.len() == MAX_REPORTED {
                break;
            }
        }
    }
    if bad.is_empty() {
        Ok((rows, seen_docs))
    } else {
        Err(Error::InvalidRequest(format!(
            "nothing imported; bad rows:\n  {}",
            bad.join("\n  ")
        )))
    }
}

fn check_row(row: &ImportRow, dim: usize) -> std::result::Result<(), String> {
    if row.vector.len() != dim {
        return Err(format!(
            "the vector has {} dimensions; this collection's embedder has {dim}",
            row.vector.len()
        ));
    }
    if row.vector.iter().any(|x| !x.is_finite()) {
        return Err("the vector holds a value that is not a finite number".into());
    }
    if row.vector.iter().all(|x| *x == 0.0) {
        return Err("the vector is all zeros".into());
    }
    if row.path.trim().is_empty() {
        return Err("path is empty".into());
    }
    if row.text.trim().is_empty() {
        return Err("text is empty".into());
    }
    if row.byte_range.as_ref().is_some_and(|r| r.start > r.end) {
        return Err("byte_range ends before it starts".into());
    }
    crate::types::check_access(&row.metadata).map_err(|e| format!("metadata: {e}"))
}

/// Rows with their 1-based line numbers; blank lines are skipped. A row
/// over [`MAX_ROW_BYTES`] is refused without being held in memory.
fn read_rows(
    mut reader: Box<dyn BufRead>,
) -> impl Iterator<Item = (usize, std::result::Result<ImportRow, String>)> {
    let mut n = 0;
    std::iter::from_fn(move || {
        loop {
            let line = super::lines::next_line(&mut reader, MAX_ROW_BYTES).transpose()?;
            n += 1;
            let row = match line {
                Err(e) => Err(format!("cannot read: {e}")),
                Ok(Line::TooLong(_)) => Err(format!("the row is over {MAX_ROW_BYTES} bytes")),
                Ok(Line::Whole(bytes)) if bytes.iter().all(u8::is_ascii_whitespace) => continue,
                Ok(Line::Whole(bytes)) => serde_json::from_slice::<ImportRow>(&bytes)
                    .map_err(|e| format!("not an import row: {e}")),
            };
            return Some((n, row));
        }
    })
}

fn bad_row(line: usize, reason: &str) -> Error {
    Error::InvalidRequest(format!(
        "line {line}: {reason} (the input changed while it was imported)"
    ))
}

fn doc_id(row: &ImportRow) -> DocId {
    row.doc_id
        .clone()
        .map_or_else(|| DocId::from_path(&row.path), DocId)
}

fn new_doc(row: &ImportRow, id: DocId) -> Doc {
    Doc {
        record: DocRecord {
            id,
            path: row.path.clone(),
            file: row.path.clone(),
            title: row.title.clone(),
            kind: DocKind::Imported,
            metadata: row.metadata.clone(),
            hash: String::new(),
            chunks: Vec::new(),
        },
        chunks: Vec::new(),
    }
}

fn chunk(doc: &DocId, row: ImportRow) -> (Chunk, Vec<f32>) {
    let range = row.byte_range.unwrap_or(0..row.text.len());
    let id = row
        .chunk_id
        .map_or_else(|| ChunkId::new(doc, &range, &row.text), ChunkId);
    let mut vector = row.vector;
    crate::embed::normalize(&mut vector);
    let chunk = Chunk {
        id,
        byte_range: range,
        heading: row.heading,
        text: row.text,
    };
    (chunk, vector)
}

/// Writes `docs` as one change: unchanged documents are skipped, chunks a
/// document already had keep their stored vectors.
fn write(
    collection: &Collection,
    docs: Vec<Doc>,
    report: &mut ImportReport,
    progress: &dyn Progress,
) -> Result<Vec<DocId>> {
    let store = collection.index().docs();
    let mut change = Change::default();
    let mut written = 0;
    for mut doc in docs {
        let ids: Vec<&str> = doc.chunks.iter().map(|(c, _)| c.id.0.as_str()).collect();
        let meta = serde_json::to_string(&doc.record.metadata).unwrap_or_default();
        doc.record.hash = content_hash(
            format!(
                "{}\0{}\0{meta}\0{}",
                doc.record.path,
                doc.record.title.as_deref().unwrap_or_default(),
                ids.join(",")
            )
            .as_bytes(),
        );
        let rows = doc.chunks.len() as u64;
        let stored = store.doc(&doc.record.id)?;
        let existing: HashSet<ChunkId> = match stored {
            Some(s) if s.hash == doc.record.hash => {
                report.unchanged += 1;
                progress.embedded(rows);
                continue;
            }
            Some(s) => {
                report.updated += 1;
                s.chunks.into_iter().collect()
            }
            None => {
                report.added += 1;
                HashSet::new()
            }
        };
        let chunks = doc
            .chunks
            .into_iter()
            .map(|(c, v)| {
                let vector = (!existing.contains(&c.id)).then_some(v);
                written += u64::from(vector.is_some());
                (c, vector)
            })
            .collect();
        change.put_docs.push(DocUpdate {
            record: doc.record,
            chunks,
        });
        progress.embedded(rows);
    }
    report.chunks_written += written;
    let ids = change
        .put_docs
        .iter()
        .map(|d| d.record.id.clone())
        .collect();
    if !change.is_empty() {
        collection.index().apply(change)?;
    }
    Ok(ids)
}
