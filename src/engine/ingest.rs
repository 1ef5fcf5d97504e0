//! The ingest pipeline behind [`Engine::ingest`]: walk → compare with what
//! the index remembers (size and mtime, then content hashes) → load and chunk
//! in parallel → embed only new chunks, in batches → apply atomically →
//! checkpoint. A file's record is written only after all its documents, so
//! a run killed half-way redoes exactly the unfinished files.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::{Collection, Engine};
use crate::chunk::embedding_input;
use crate::error::{Error, Result};
use crate::ingest::walk::{FoundFile, walk};
use crate::ingest::{Reason, Skipped, load};
use crate::search::Readers;
use crate::store::{Change, DocUpdate};
use crate::types::{
    Chunk, ChunkId, DocId, DocRecord, Document, FileRecord, content_hash, normalize, path_key,
};

/// Files read and parsed in parallel at a time.
const LOAD_GROUP: usize = 32;
/// Largest metadata an uploaded document may carry (JSON bytes): it is
/// stored with the document and copied into its chunks.
const MAX_METADATA_BYTES: usize = 64 * 1024;
/// New chunks gathered before they are embedded and written.
const EMBED_BATCH: usize = 64;

/// Observes an ingest run; the CLI draws progress bars from it. All methods
/// default to doing nothing.
pub trait Progress: Sync {
    /// The walk found `files` files to consider.
    fn started(&self, _files: u64) {}
    /// `chunks` more chunks will be embedded.
    fn planned(&self, _chunks: u64) {}
    /// One file is done (ingested, unchanged or skipped).
    fn file_done(&self, _path: &str) {}
    /// A file was skipped.
    fn skipped(&self, _skipped: &Skipped) {}
    /// `chunks` chunks were embedded and written.
    fn embedded(&self, _chunks: u64) {}
    /// The files to read (new or changed) hold `bytes` bytes in all.
    fn bytes_planned(&self, _bytes: u64) {}
    /// Files of `bytes` bytes more were read and chunked (their chunks are
    /// in [`Progress::planned`]): with [`Progress::bytes_planned`], how many
    /// chunks are still to come.
    fn bytes_read(&self, _bytes: u64) {}
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {}

/// Summary of an ingest run (`lore ingest --json`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, serde::Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct IngestReport {
    /// Files the walk found (skipped ones included).
    pub files_seen: u64,
    /// Files new to the index.
    pub added: u64,
    /// Files whose content changed.
    pub updated: u64,
    /// Files left as they were.
    pub unchanged: u64,
    /// Files that disappeared and were removed.
    pub removed: u64,
    /// Files left out, with reasons.
    pub skipped: Vec<Skipped>,
    /// Chunks embedded in this run.
    pub chunks_embedded: u64,
    /// Wall time.
    pub seconds: f64,
}

impl IngestReport {
    /// Adds the counts of another run (ingesting several paths one by one).
    pub fn absorb(&mut self, other: IngestReport) {
        self.files_seen += other.files_seen;
        self.added += other.added;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.removed += other.removed;
        self.skipped.extend(other.skipped);
        self.chunks_embedded += other.chunks_embedded;
        self.seconds += other.seconds;
    }
}

/// Summary of `lore remove`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, serde::Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct RemoveReport {
    /// File records removed.
    pub files: u64,
    /// Documents removed.
    pub documents: u64,
}

/// A document whose chunks must be (re)written.
struct DocWork {
    record: DocRecord,
    chunks: Vec<Chunk>,
    /// Chunk ids the stored version already has (not re-embedded).
    existing: HashSet<ChunkId>,
}

impl DocWork {
    fn new_chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.chunks
            .iter()
            .filter(|c| !self.existing.contains(&c.id))
    }
}

/// A file read from disk: its hash and documents, or why it was skipped.
type Loaded = std::result::Result<(String, Vec<Document>), Reason>;

/// State of one ingest run.
struct Run<'a> {
    engine: &'a Engine,
    collection: &'a Collection,
    progress: &'a dyn Progress,
    report: IngestReport,
    queue: Vec<DocWork>,
    queued_chunks: usize,
    delete_docs: Vec<DocId>,
    files_ready: Vec<FileRecord>,
    since_checkpoint: usize,
    changed: bool,
    /// Documents written or deleted, for the audit trail.
    touched: Vec<DocId>,
}

impl Engine {
    /// Ingests files and folders into `collection`: new and changed files
    /// are (re)indexed, unchanged ones skipped, files gone from an ingested
    /// folder removed. Per-file problems are reported in
    /// [`IngestReport::skipped`]; only failures of the index itself are
    /// errors. `scope` says who writes (for the audit trail) and where
    /// (each path must lie under its roots).
    pub fn ingest(
        &self,
        collection: &str,
        paths: &[PathBuf],
        scope: &WriteScope,
        progress: &dyn Progress,
    ) -> Result<IngestReport> {
        for path in paths {
            let resolved = path.canonicalize().unwrap_or_else(|_| normalize(path));
            scope.check_path(&resolved)?;
        }
        // The writer first: a collection dropped meanwhile is not written to.
        let _writer = self.writer()?;
        let collection = self.collection(collection)?;
        let start = Instant::now();
        let index_dir = self.dir().canonicalize().ok();
        let found = walk(paths, &self.config.ingest, index_dir.as_deref())?;
        let _span = tracing::info_span!(
            "ingest",
            collection = collection.name(),
            files = found.files.len()
        )
        .entered();
        let index = collection.index();
        let mut run = Run::new(
            self,
            &collection,
            progress,
            (found.files.len() + found.skipped.len()) as u64,
        );
        // Skips found by the walk are reported as done files too.
        progress.started(run.report.files_seen);
        for skipped in found.skipped {
            run.skip(skipped);
        }
        run.remove_vanished(&found.roots, &found.files)?;
        let (unchanged, stale): (Vec<&FoundFile>, Vec<&FoundFile>) = found.files.iter().try_fold(
            (Vec::new(), Vec::new()),
            |(mut same, mut stale), file| {
                if run.is_unchanged(file)? {
                    same.push(file);
                } else {
                    stale.push(file);
                }
                Ok::<_, Error>((same, stale))
            },
        )?;
        run.report.unchanged = unchanged.len() as u64;
        for file in unchanged {
            progress.file_done(&path_key(&file.path));
        }
        let max_bytes = self.config.ingest.max_file_bytes;
        progress.bytes_planned(stale.iter().map(|f| f.size).sum());
        for group in stale.chunks(LOAD_GROUP) {
            let loaded: Vec<Loaded> = group
                .par_iter()
                .map(|f| read_and_load(&f.path, max_bytes))
                .collect();
            run.process_group(group, loaded)?;
        }
        run.flush()?;
        if run.changed {
            index.checkpoint()?;
        }
        run.report.seconds = start.elapsed().as_secs_f64();
        if run.changed {
            let documents = run.touched();
            crate::audit::Event::new(
                &scope.actor,
                collection.name(),
                crate::audit::Action::Ingest,
            )
            .documents(&documents)
            .chunks(run.report.chunks_embedded as usize)
            .record(self.dir());
        }
        tracing::info!(
            added = run.report.added,
            updated = run.report.updated,
            removed = run.report.removed,
            skipped = run.report.skipped.len(),
            chunks = run.report.chunks_embedded,
            "ingest finished"
        );
        Ok(run.report)
    }

    /// Removes a file, every file under a folder, or one document (by id)
    /// from all stores of `collection`, on behalf of `scope`. `target` is
    /// resolved once, as a path (canonical, or normalized against the
    /// working directory when it no longer exists): when the index holds
    /// files there, that path must lie under `scope`'s roots; otherwise
    /// `target` is a document id. Only documents `scope` may read are
    /// removed or counted.
    pub fn remove(
        &self,
        collection: &str,
        target: &str,
        scope: &WriteScope,
    ) -> Result<RemoveReport> {
        if target.trim().is_empty() {
            return Err(Error::InvalidRequest(
                "nothing to remove: name a file, a folder or a document id".into(),
            ));
        }
        // A path that no longer exists still names its records.
        let resolved = Path::new(target)
            .canonicalize()
            .unwrap_or_else(|_| normalize(Path::new(target)));
        let path = path_key(&resolved);
        if path.trim_end_matches('/').is_empty() {
            return Err(Error::InvalidRequest(format!(
                "refusing to remove everything under '{target}'"
            )));
        }
        let _writer = self.writer()?;
        let collection = self.collection(collection)?;
        let index = collection.index();
        let docs = index.docs();
        let mut files = docs.file(&path)?.into_iter().collect::<Vec<_>>();
        if files.is_empty() {
            files = docs.files_with_prefix(&format!("{}/", path.trim_end_matches('/')))?;
        }
        if files.is_empty() {
            let id = DocId(target.to_string());
            let report = remove_document_locked(&collection, &id, scope)?;
            self.audit_delete(&scope.actor, collection.name(), &id);
            return Ok(report);
        }
        scope.check_path(&resolved)?;
        let mut change = Change::default();
        let mut report = RemoveReport::default();
        for mut file in files {
            let (mut kept, mut gone) = (Vec::new(), Vec::new());
            for id in std::mem::take(&mut file.docs) {
                // Only a restricted writer needs each record read.
                let hidden = scope.readers.restricted()
                    && docs
                        .doc(&id)?
                        .is_some_and(|doc| !scope.readers.may_read(&doc));
                if hidden { kept.push(id) } else { gone.push(id) }
            }
            if kept.is_empty() {
                change.delete_files.push(file.path.clone());
                report.files += 1;
            } else if !gone.is_empty() {
                // Part of the file stays: the next ingest looks again.
                file.docs = kept;
                file.hash.clear();
                change.put_files.push(file);
            }
            change.delete_docs.extend(gone);
        }
        report.documents = change.delete_docs.len() as u64;
        let ids = change.delete_docs.clone();
        index.apply(change)?;
        index.checkpoint()?;
        crate::audit::Event::new(
            &scope.actor,
            collection.name(),
            crate::audit::Action::Remove,
        )
        .documents(&ids)
        .record(self.dir());
        Ok(report)
    }

    /// Removes one document of `collection` by id (never read as a path);
    /// one `scope` may not read is as missing as one that does not exist.
    pub fn remove_document(
        &self,
        collection: &str,
        id: &DocId,
        scope: &WriteScope,
    ) -> Result<RemoveReport> {
        let _writer = self.writer()?;
        let collection = self.collection(collection)?;
        let report = remove_document_locked(&collection, id, scope)?;
        self.audit_delete(&scope.actor, collection.name(), id);
        Ok(report)
    }

    fn audit_delete(&self, actor: &str, collection: &str, id: &DocId) {
        crate::audit::Event::new(actor, collection, crate::audit::Action::Delete)
            .documents(std::slice::from_ref(id))
            .record(self.dir());
    }
}

/// On whose behalf a write runs: it may change only the documents its
/// readers may read, and remove by path only under its roots.
#[derive(Debug, Clone, Default)]
pub struct WriteScope {
    /// Who writes, for the audit trail (a key id, `local`, `cli`).
    pub actor: String,
    /// Whose documents these are (`Everyone`: any document).
    pub readers: Readers,
    /// Folders a remove may name by path (`None`: anywhere).
    pub roots: Option<Vec<PathBuf>>,
}

impl WriteScope {
    /// The machine's owner, as `actor`: every document, every path.
    pub fn owner(actor: impl Into<String>) -> WriteScope {
        WriteScope {
            actor: actor.into(),
            ..WriteScope::default()
        }
    }

    fn check_path(&self, path: &Path) -> Result<()> {
        match &self.roots {
            Some(roots) if !roots.iter().any(|r| path.starts_with(r)) => {
                Err(Error::Forbidden(if roots.is_empty() {
                    "no ingest roots are configured (server.ingest_roots)".to_string()
                } else {
                    format!(
                        "{} is not under the configured ingest roots",
                        path.display()
                    )
                }))
            }
            _ => Ok(()),
        }
    }
}

fn remove_document_locked(
    collection: &Collection,
    id: &DocId,
    scope: &WriteScope,
) -> Result<RemoveReport> {
    let index = collection.index();
    let docs = index.docs();
    let record = docs
        .doc(id)?
        .filter(|doc| scope.readers.may_read(doc))
        .ok_or_else(|| Error::NotFound(id.0.clone()))?;
    let mut change = Change::default();
    if let Some(mut file) = docs.file(&record.file)? {
        file.docs.retain(|d| d != id);
        // A changed hash makes the next ingest look at the file again.
        file.hash.clear();
        change.put_files.push(file);
    }
    change.delete_docs.push(id.clone());
    index.apply(change)?;
    index.checkpoint()?;
    Ok(RemoveReport {
        files: 0,
        documents: 1,
    })
}

impl Engine {
    /// Ingests one document sent as bytes (the HTTP API) into
    /// `collection`: `path` names it and picks the loader by extension;
    /// `metadata` is added to what the file itself carries. Sending the
    /// same path again replaces it, if every document there is one
    /// `scope` may read.
    pub fn add_document(
        &self,
        collection: &str,
        path: &str,
        bytes: &[u8],
        metadata: &crate::types::Metadata,
        scope: &WriteScope,
    ) -> Result<Vec<DocRecord>> {
        let path = path.trim().trim_start_matches('/');
        let extra = serde_json::to_string(metadata).unwrap_or_default();
        if extra.len() > MAX_METADATA_BYTES {
            return Err(Error::InvalidRequest(format!(
                "metadata is {} bytes of JSON; at most {MAX_METADATA_BYTES} are accepted",
                extra.len()
            )));
        }
        if path.is_empty() || path.split('/').any(|part| part == "..") {
            return Err(Error::InvalidRequest(format!(
                "document path '{path}' must be a non-empty relative name without '..'"
            )));
        }
        crate::types::check_access(metadata)
            .map_err(|e| Error::InvalidRequest(format!("metadata: {e}")))?;
        let max_bytes = self.config.ingest.max_file_bytes as usize;
        let mut docs = load::load(Path::new(path), bytes, max_bytes).map_err(|reason| {
            Error::UnsupportedFile {
                path: PathBuf::from(path),
                reason: reason.message,
            }
        })?;
        dedup_last(&mut docs);
        for doc in &mut docs {
            doc.metadata
                .extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
            doc.hash = content_hash(format!("{}\0{extra}", doc.hash).as_bytes());
        }
        let ids: Vec<DocId> = docs.iter().map(|d| d.id.clone()).collect();
        let hash = file_hash([bytes, extra.as_bytes()].concat().as_slice());
        let file = FoundFile {
            path: PathBuf::from(path),
            size: bytes.len() as u64,
            mtime_ns: 0,
        };
        let _writer = self.writer()?;
        let collection = self.collection(collection)?;
        check_replaceable(&collection, path, scope)?;
        let mut run = Run::new(self, &collection, &NoProgress, 1);
        run.process_group(&[&file], vec![Ok((hash, docs))])?;
        run.flush()?;
        let index = collection.index();
        index.checkpoint()?;
        let records = ids
            .iter()
            .map(|id| {
                index.docs().doc(id)?.ok_or_else(|| {
                    Error::store("docs", format!("document {} missing after ingest", id.0))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let chunks = records.iter().map(|d| d.chunks.len()).sum();
        crate::audit::Event::new(
            &scope.actor,
            collection.name(),
            crate::audit::Action::Upload,
        )
        .documents(&ids)
        .chunks(chunks)
        .record(self.dir());
        Ok(records)
    }
}

/// Refuses an upload to `path` that would replace a document `scope` may
/// not read (and so must not change).
fn check_replaceable(collection: &Collection, path: &str, scope: &WriteScope) -> Result<()> {
    let docs = collection.index().docs();
    let Some(file) = docs.file(&path_key(Path::new(path)))? else {
        return Ok(());
    };
    for id in &file.docs {
        if docs
            .doc(id)?
            .is_some_and(|doc| !scope.readers.may_read(&doc))
        {
            return Err(Error::Forbidden(format!(
                "'{path}' holds a document this key may not read, so it may not replace it"
            )));
        }
    }
    Ok(())
}

/// What the loaders and the chunker make of a file's bytes, in versions;
/// a file's recorded hash starts with the version that read it. When lore
/// reads files differently (2: a definition list's term became a heading;
/// 3: a heading cut from its section is no chunk of its own),
/// a file an older lore ingested is read again on the next run although its
/// bytes did not change, so an upgrade reaches existing indexes; chunks
/// whose text did not change keep their vectors.
const LAYOUT: &str = "layout3:";

/// The recorded hash of a file's bytes, under the current [`LAYOUT`].
fn file_hash(bytes: &[u8]) -> String {
    format!("{LAYOUT}{}", content_hash(bytes))
}

/// Reads a file and loads its documents; any failure is a reason.
fn read_and_load(path: &Path, max_bytes: u64) -> Loaded {
    let bytes = load::read(path, max_bytes)?;
    let hash = file_hash(&bytes);
    let mut docs = load::load(path, &bytes, max_bytes as usize)?;
    dedup_last(&mut docs);
    Ok((hash, docs))
}

/// Keeps the last of documents sharing an id (a corpus line repeated).
fn dedup_last(docs: &mut Vec<Document>) {
    let mut seen = HashSet::new();
    docs.reverse();
    docs.retain(|d| seen.insert(d.id.clone()));
    docs.reverse();
}

impl<'a> Run<'a> {
    fn new(
        engine: &'a Engine,
        collection: &'a Collection,
        progress: &'a dyn Progress,
        files_seen: u64,
    ) -> Self {
        Run {
            engine,
            collection,
            progress,
            report: IngestReport {
                files_seen,
                ..IngestReport::default()
            },
            queue: Vec::new(),
            queued_chunks: 0,
            delete_docs: Vec::new(),
            files_ready: Vec::new(),
            since_checkpoint: 0,
            changed: false,
            touched: Vec::new(),
        }
    }

    /// The documents this run wrote or deleted, each once, sorted.
    fn touched(&mut self) -> Vec<DocId> {
        let mut ids = std::mem::take(&mut self.touched);
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        ids.dedup();
        ids
    }

    fn skip(&mut self, skipped: Skipped) {
        tracing::info!(path = %skipped.path, reason = %skipped.reason, "skipped");
        self.progress.skipped(&skipped);
        self.progress.file_done(&skipped.path);
        self.report.skipped.push(skipped);
    }

    fn is_unchanged(&self, file: &FoundFile) -> Result<bool> {
        let path = path_key(&file.path);
        Ok(match self.collection.index().docs().file(&path)? {
            Some(record) => {
                record.size == file.size
                    && record.mtime_ns == file.mtime_ns
                    && record.hash.starts_with(LAYOUT)
            }
            None => false,
        })
    }

    /// Removes files recorded under a walked folder that no longer exist.
    fn remove_vanished(&mut self, roots: &[PathBuf], files: &[FoundFile]) -> Result<()> {
        let present: HashSet<String> = files.iter().map(|f| path_key(&f.path)).collect();
        let mut change = Change::default();
        for root in roots.iter().filter(|r| r.is_dir()) {
            let prefix = format!("{}/", path_key(root));
            for record in self.collection.index().docs().files_with_prefix(&prefix)? {
                if !present.contains(&record.path) && !Path::new(&record.path).exists() {
                    change.delete_docs.extend(record.docs.iter().cloned());
                    change.delete_files.push(record.path.clone());
                    self.report.removed += 1;
                }
            }
        }
        if !change.is_empty() {
            self.touched.extend(change.delete_docs.iter().cloned());
            self.collection.index().apply(change)?;
            self.changed = true;
        }
        Ok(())
    }

    /// Compares loaded files with the index, chunks what changed (in
    /// parallel) and queues it for embedding.
    fn process_group(&mut self, group: &[&FoundFile], loaded: Vec<Loaded>) -> Result<()> {
        let store = self.collection.index().docs();
        let mut to_chunk: Vec<(usize, Document, HashSet<ChunkId>)> = Vec::new();
        let mut records: Vec<Option<FileRecord>> = Vec::with_capacity(group.len());
        for (n, (file, outcome)) in group.iter().zip(loaded).enumerate() {
            let path = path_key(&file.path);
            let (hash, docs) = match outcome {
                Ok(ok) => ok,
                Err(reason) => {
                    self.skip(Skipped::new(path, reason));
                    records.push(None);
                    continue;
                }
            };
            let old = store.file(&path)?;
            let new_ids: HashSet<&DocId> = docs.iter().map(|d| &d.id).collect();
            match &old {
                Some(old) if old.hash == hash => self.report.unchanged += 1,
                Some(old) => {
                    self.report.updated += 1;
                    self.delete_docs
                        .extend(old.docs.iter().filter(|d| !new_ids.contains(d)).cloned());
                }
                None => self.report.added += 1,
            }
            for doc in docs
                .iter()
                .filter(|_| old.as_ref().is_none_or(|o| o.hash != hash))
            {
                let stored = store.doc(&doc.id)?;
                if stored.as_ref().is_some_and(|s| s.hash == doc.hash) {
                    continue;
                }
                let existing = stored
                    .map(|s| s.chunks.into_iter().collect())
                    .unwrap_or_default();
                to_chunk.push((n, doc.clone(), existing));
            }
            records.push(Some(FileRecord {
                path,
                size: file.size,
                mtime_ns: file.mtime_ns,
                hash,
                docs: docs.iter().map(|d| d.id.clone()).collect(),
            }));
        }
        let chunker = self.collection.chunker(&self.engine.config)?;
        let mut works: Vec<(usize, DocWork)> = to_chunk
            .into_par_iter()
            .map(|(n, doc, existing)| {
                let chunks = chunker.chunk(&doc);
                (
                    n,
                    DocWork {
                        record: doc_record(&doc),
                        chunks,
                        existing,
                    },
                )
            })
            .collect();
        let planned: usize = works.iter().map(|(_, w)| w.new_chunks().count()).sum();
        self.progress.planned(planned as u64);
        self.progress.bytes_read(group.iter().map(|f| f.size).sum());
        let mut by_file: HashMap<usize, Vec<DocWork>> = HashMap::new();
        for (n, work) in works.drain(..) {
            by_file.entry(n).or_default().push(work);
        }
        for (n, record) in records.into_iter().enumerate() {
            let Some(record) = record else { continue };
            for work in by_file.remove(&n).unwrap_or_default() {
                self.enqueue(work)?;
            }
            self.progress.file_done(&record.path);
            self.files_ready.push(record);
        }
        Ok(())
    }

    fn enqueue(&mut self, work: DocWork) -> Result<()> {
        self.queued_chunks += work.new_chunks().count();
        self.queue.push(work);
        if self.queued_chunks >= EMBED_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Embeds the queued chunks and writes the queued documents and the file
    /// records that are complete, as one atomic change.
    fn flush(&mut self) -> Result<()> {
        let works = std::mem::take(&mut self.queue);
        let texts: Vec<String> = works
            .iter()
            .flat_map(|w| w.new_chunks().map(|c| embedding_input(&c.heading, &c.text)))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut vectors = if refs.is_empty() {
            Vec::new()
        } else {
            self.collection.embedder()?.embed(&refs)?
        }
        .into_iter();
        let mut change = Change {
            delete_docs: std::mem::take(&mut self.delete_docs),
            put_files: std::mem::take(&mut self.files_ready),
            ..Change::default()
        };
        for work in works {
            let chunks = work
                .chunks
                .into_iter()
                .map(|c| {
                    let vector = if work.existing.contains(&c.id) {
                        None
                    } else {
                        vectors.next()
                    };
                    (c, vector)
                })
                .collect();
            change.put_docs.push(DocUpdate {
                record: work.record,
                chunks,
            });
        }
        if change.is_empty() {
            return Ok(());
        }
        self.touched.extend(change.delete_docs.iter().cloned());
        self.touched
            .extend(change.put_docs.iter().map(|d| d.record.id.clone()));
        self.collection.index().apply(change)?;
        self.changed = true;
        let embedded = std::mem::take(&mut self.queued_chunks);
        self.report.chunks_embedded += embedded as u64;
        self.progress.embedded(embedded as u64);
        self.since_checkpoint += embedded;
        if self.since_checkpoint >= self.engine.config.ingest.checkpoint_chunks {
            self.collection.index().checkpoint()?;
            self.since_checkpoint = 0;
        }
        Ok(())
    }
}

/// A document's stored metadata: its own, and the detected language.
pub(crate) fn record_metadata(doc: &Document) -> crate::types::Metadata {
    let mut metadata = doc.metadata.clone();
    if let Some(language) = &doc.language {
        metadata.insert(
            "language".into(),
            serde_json::Value::String(language.clone()),
        );
    }
    metadata
}

fn doc_record(doc: &Document) -> DocRecord {
    DocRecord {
        id: doc.id.clone(),
        path: doc.path.clone(),
        file: doc.file.clone(),
        title: doc.title.clone(),
        kind: doc.kind,
        metadata: record_metadata(doc),
        hash: doc.hash.clone(),
        chunks: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::embed::hash::HashEmbedder;
    use crate::search::{Mode, SearchRequest};
    use crate::types::DEFAULT_COLLECTION;

    fn owner() -> WriteScope {
        WriteScope::owner("test")
    }

    fn engine(dir: &Path, rebuild_ratio: f64) -> Engine {
        let mut config = Config {
            index: dir.join("index"),
            ..Config::default()
        };
        config.chunk.max_tokens = 200;
        config.hnsw.rebuild_ratio = rebuild_ratio;
        Engine::with_embedder(config, Arc::new(HashEmbedder::new(32))).unwrap()
    }

    fn write_docs(dir: &Path, n: usize, version: &str) {
        std::fs::create_dir_all(dir).unwrap();
        for i in 0..n {
            let text = format!(
                "# Doc {i}\n\nalpha beta {version} gamma {i}\n\n## More\n\ndelta {version} epsilon\n"
            );
            std::fs::write(dir.join(format!("d{i}.md")), text).unwrap();
        }
    }

    /// Ingests the folder `docs` into the default collection.
    fn ingest_folder(engine: &Engine, docs: &Path) -> IngestReport {
        engine
            .ingest(
                DEFAULT_COLLECTION,
                &[docs.to_path_buf()],
                &owner(),
                &NoProgress,
            )
            .unwrap()
    }

    #[test]
    fn unchanged_file_is_not_reembedded_and_changed_file_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let docs = tmp.path().join("docs");
        write_docs(&docs, 5, "v1");
        let engine = engine(tmp.path(), 0.25);
        let first = ingest_folder(&engine, &docs);
        assert_eq!(first.added, 5);
        let again = ingest_folder(&engine, &docs);
        assert_eq!((again.unchanged, again.chunks_embedded), (5, 0));
        std::fs::write(docs.join("d0.md"), "# Doc 0\n\nzeta\n").unwrap();
        let changed = ingest_folder(&engine, &docs);
        assert_eq!((changed.updated, changed.unchanged), (1, 4));
        let status = engine.status(DEFAULT_COLLECTION).unwrap();
        assert!(status.consistent, "{status:?}");
        let hits = engine
            .search(&SearchRequest::new("zeta", 3, Mode::Bm25))
            .unwrap();
        assert!(hits.hits[0].text.contains("zeta"));
    }

    #[test]
    fn a_file_read_by_an_older_layout_is_read_again_once() {
        let tmp = tempfile::tempdir().unwrap();
        let docs = tmp.path().join("docs");
        write_docs(&docs, 2, "v1");
        let engine = engine(tmp.path(), 0.25);
        let ingest = || ingest_folder(&engine, &docs);
        assert_eq!(ingest().added, 2);
        // As an older lore recorded it: the same bytes, no layout version.
        let collection = engine.collection(DEFAULT_COLLECTION).unwrap();
        let path = path_key(&docs.join("d0.md"));
        let mut record = collection.index().docs().file(&path).unwrap().unwrap();
        record.hash = content_hash(&std::fs::read(docs.join("d0.md")).unwrap());
        collection
            .index()
            .apply(Change {
                put_files: vec![record],
                ..Change::default()
            })
            .unwrap();
        let again = ingest();
        assert_eq!((again.updated, again.unchanged), (1, 1));
        // Its text did not change, so nothing is embedded again.
        assert_eq!(again.chunks_embedded, 0);
        let third = ingest();
        assert_eq!((third.updated, third.unchanged), (0, 2));
    }

    #[test]
    fn many_tombstones_trigger_a_graph_rebuild() {
        let tmp = tempfile::tempdir().unwrap();
        let docs = tmp.path().join("docs");
        write_docs(&docs, 20, "v1");
        let engine = engine(tmp.path(), 0.25);
        ingest_folder(&engine, &docs);
        write_docs(&docs, 20, "v2");
        ingest_folder(&engine, &docs);
        let status = engine.status(DEFAULT_COLLECTION).unwrap();
        assert!(status.consistent, "{status:?}");
        assert_eq!(
            status.tombstones, 0,
            "rebuilt graph holds no tombstones: {status:?}"
        );
        assert_eq!(status.vectors, status.chunks);
    }

    #[test]
    fn work_not_checkpointed_is_replayed_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let docs = tmp.path().join("docs");
        write_docs(&docs, 4, "v1");
        {
            let engine = engine(tmp.path(), 1.0);
            let mut run_docs = Vec::new();
            for i in 0..4 {
                let path = docs.join(format!("d{i}.md"));
                let bytes = std::fs::read(&path).unwrap();
                run_docs.extend(load::load(&path, &bytes, 1 << 20).unwrap());
            }
            let collection = engine.collection(DEFAULT_COLLECTION).unwrap();
            let chunker = collection.chunker(engine.config()).unwrap();
            let embedder = collection.embedder().unwrap().clone();
            let mut change = Change::default();
            for doc in &run_docs {
                let chunks = chunker.chunk(doc);
                let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
                let vectors = embedder.embed(&texts).unwrap();
                change.put_docs.push(DocUpdate {
                    record: doc_record(doc),
                    chunks: chunks
                        .into_iter()
                        .zip(vectors.into_iter().map(Some))
                        .collect(),
                });
            }
            // Applied (and flushed by sled on drop) but never checkpointed:
            // the keyword index never committed, the graph never dumped.
            collection.index().apply(change).unwrap();
        }
        let engine = engine(tmp.path(), 1.0);
        let status = engine.status(DEFAULT_COLLECTION).unwrap();
        assert!(status.consistent, "{status:?}");
        assert_eq!(status.documents, 4);
        assert_eq!(status.keyword_docs, status.chunks);
        assert_eq!(status.vectors, status.chunks);
    }
}
