//! [`Index`]: the three stores of one index directory, written in an order
//! that keeps them consistent whatever moment the process dies at.
//!
//! Layout: `manifest.json`, `docs/` (sled), `keywords/` (tantivy),
//! `vectors/gen-N/` (hnsw_rs dumps).
//!
//! Invariants:
//! - sled is written first and is the truth; each [`Change`] is atomic there.
//! - The keyword index commits, and the graph is dumped, only after sled has
//!   been flushed, so neither ever holds a slot sled lost.
//! - What the derived stores have not persisted is recoverable from sled:
//!   pending keyword slots (`k` keys) are replayed, and live vectors at or
//!   above the dump's watermark are re-inserted, on every open.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::docs::SledDocStore;
use super::keywords::TantivyKeywordIndex;
use super::manifest::{EmbedderInfo, Manifest};
use super::table::{DocTable, Tables};
use super::vectors::HnswVectorIndex;
use super::{Change, DocStore, KeywordDoc, KeywordIndex, MILVUS_RECORD, Owner, VectorIndex};
use crate::config::{HnswConfig, MilvusConfig};
use crate::error::{Error, Result};
use crate::types::{ChunkRecord, DocId, Slot};

/// The store sizes that cost nothing to read.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct IndexSizes {
    /// Live vectors (one per chunk).
    pub vectors: u64,
    /// Keyword index entries.
    pub keyword_docs: u64,
    /// Removed vectors still in the graph.
    pub tombstones: u64,
}

/// Counts of every store and whether they agree.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IndexStatus {
    /// Documents.
    pub documents: u64,
    /// Chunks.
    pub chunks: u64,
    /// Live vectors in the graph.
    pub vectors: u64,
    /// Committed keyword entries.
    pub keyword_docs: u64,
    /// Removed vectors still in the graph.
    pub tombstones: u64,
    /// Keyword entries not yet committed.
    pub pending: u64,
    /// Bytes on disk.
    pub index_bytes: u64,
    /// True when documents, chunks, vectors and keyword entries agree.
    pub consistent: bool,
}

/// Seconds spent writing each store (writes and checkpoints), since the
/// index was opened: what a bulk write's time went to.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct StoreSeconds {
    /// sled: records, vectors, flushes.
    pub docs: f64,
    /// tantivy: adds, deletes, commits.
    pub keywords: f64,
    /// hnsw_rs: inserts, rebuilds, dumps.
    pub graph: f64,
}

impl StoreSeconds {
    /// What was spent since `earlier`.
    pub fn since(self, earlier: StoreSeconds) -> StoreSeconds {
        StoreSeconds {
            docs: self.docs - earlier.docs,
            keywords: self.keywords - earlier.keywords,
            graph: self.graph - earlier.graph,
        }
    }
}

/// Nanoseconds per store, added to as writes run.
#[derive(Default)]
struct Spent {
    docs: AtomicU64,
    keywords: AtomicU64,
    graph: AtomicU64,
}

/// Runs `f`, adding its wall time to `counter`.
fn timed<T>(counter: &AtomicU64, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let value = f();
    counter.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    value
}

/// What a checkpoint does with the vector graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    /// Rebuild or merge when due, then dump.
    Full,
    /// Dump, merging nothing (putting a finished background merge in place).
    Settle,
    /// In the middle of a bulk write: merge nothing, and dump only when the
    /// graph has doubled since its last dump (sled holds everything, and
    /// recovery replays what the dump lacks).
    Bulk,
}

/// The stores of one index directory.
pub struct Index {
    dir: PathBuf,
    docs: Arc<dyn DocStore>,
    vectors: Box<dyn VectorIndex>,
    keywords: Box<dyn KeywordIndex>,
    rebuild_ratio: f64,
    merge_min: u64,
    merge_ratio: f64,
    /// Points in the graph at its last dump.
    dumped: AtomicU64,
    /// Every document with its slots, kept in step with writes.
    tables: Tables,
    spent: Spent,
}

impl Index {
    /// Opens (or creates) the index in `dir` for `embedder`, then brings the
    /// derived stores up to date with sled (crash recovery).
    pub fn open(dir: &Path, embedder: &EmbedderInfo, hnsw: &HnswConfig) -> Result<Index> {
        Index::open_with(dir, embedder, hnsw, VectorsAt::Embedded)
    }

    /// [`Index::open`], its vectors kept where `at` says.
    pub fn open_with(
        dir: &Path,
        embedder: &EmbedderInfo,
        hnsw: &HnswConfig,
        at: VectorsAt<'_>,
    ) -> Result<Index> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Manifest::open_or_create(dir, embedder)?;
        let docs: Arc<dyn DocStore> = Arc::new(SledDocStore::open(&dir.join("docs"))?);
        let owner = Owner {
            id: docs.instance().to_string(),
            adopt_unowned: docs.next_slot() > Slot(0),
        };
        let keywords = TantivyKeywordIndex::open(&dir.join("keywords"), &owner)?;
        let vectors_dir = dir.join("vectors");
        let source = docs.clone() as Arc<dyn super::VectorSource>;
        let (vectors, watermark) = match at {
            VectorsAt::Embedded => open_graph(&vectors_dir, embedder.dim, hnsw, &owner, source)?,
            VectorsAt::Milvus {
                config,
                collection,
                read_only,
            } => open_milvus(
                &vectors_dir,
                embedder.dim,
                hnsw,
                config,
                collection,
                read_only,
                &docs,
            )?,
        };
        let index = Index {
            dir: dir.to_path_buf(),
            docs,
            vectors,
            keywords: Box::new(keywords),
            rebuild_ratio: hnsw.rebuild_ratio,
            merge_min: hnsw.merge_min as u64,
            merge_ratio: hnsw.merge_ratio,
            dumped: AtomicU64::new(0),
            tables: Tables::default(),
            spent: Spent::default(),
        };
        index.recover(watermark)?;
        super::prewarm::start(dir);
        Ok(index)
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The doc store (read access for search and status).
    pub fn docs(&self) -> &dyn DocStore {
        self.docs.as_ref()
    }

    /// The vector index.
    pub fn vectors(&self) -> &dyn VectorIndex {
        self.vectors.as_ref()
    }

    /// The keyword index.
    pub fn keywords(&self) -> &dyn KeywordIndex {
        self.keywords.as_ref()
    }

    /// Replays what the derived stores had not persisted when the index was
    /// last closed (or killed), then checks them against sled.
    fn recover(&self, watermark: Slot) -> Result<()> {
        let forgotten = self.vectors.restore_tombstones(&self.docs.tombstones()?)?;
        self.docs.clear_tombstones(&forgotten)?;
        let missing = self.docs.vectors_from(watermark)?;
        let pending = self.docs.pending_keywords()?;
        if !(missing.is_empty() && pending.is_empty() && forgotten.is_empty()) {
            tracing::info!(
                vectors = missing.len(),
                keyword_entries = pending.len(),
                "recovering work not persisted by the previous run"
            );
            self.vectors.insert(&missing)?;
            self.sync_keywords(&pending)?;
            self.checkpoint()?;
        }
        self.verify()
    }

    /// Rebuilds from sled a derived store whose size disagrees with it
    /// after recovery: lost, or damaged in a way its own checks missed.
    /// sled's live chunks are the count kept with every write, so this
    /// costs no scan.
    fn verify(&self) -> Result<()> {
        let chunks = self.docs.live_chunks()?;
        let mut rebuilt = false;
        if self.vectors.len() != chunks {
            tracing::warn!(
                graph = self.vectors.len(),
                sled = chunks,
                "vector graph disagrees with the doc store; rebuilding it"
            );
            self.vectors.rebuild(&self.docs.vectors_from(Slot(0))?)?;
            self.docs.clear_tombstones(&self.docs.tombstones()?)?;
            rebuilt = true;
        }
        if self.keywords.count()? != chunks {
            tracing::warn!(
                keywords = self.keywords.count()?,
                sled = chunks,
                "keyword index disagrees with the doc store; rebuilding it"
            );
            self.keywords.clear()?;
            let slots: Vec<Slot> = self
                .docs
                .vectors_from(Slot(0))?
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            self.sync_keywords(&slots)?;
            rebuilt = true;
        }
        if rebuilt {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Brings the keyword entries of `slots` in line with sled.
    fn sync_keywords(&self, slots: &[Slot]) -> Result<()> {
        self.keywords.delete(slots)?;
        let mut titles: HashMap<DocId, String> = HashMap::new();
        let mut upserts = Vec::new();
        for &slot in slots {
            if let Some(chunk) = self.docs.chunk_at(slot)? {
                let title = match titles.get(&chunk.doc_id) {
                    Some(title) => title.clone(),
                    None => {
                        let title = self
                            .docs
                            .doc(&chunk.doc_id)?
                            .and_then(|d| d.title)
                            .unwrap_or_default();
                        titles.insert(chunk.doc_id.clone(), title.clone());
                        title
                    }
                };
                upserts.push(keyword_doc(&chunk, title));
            }
        }
        self.keywords.upsert(&upserts)
    }

    /// Applies `change` to all three stores. Visible to search at once (the
    /// keyword side after the next [`Index::checkpoint`]); durable after it.
    pub fn apply(&self, change: Change) -> Result<()> {
        let titles: HashMap<DocId, String> = change
            .put_docs
            .iter()
            .map(|d| {
                (
                    d.record.id.clone(),
                    d.record.title.clone().unwrap_or_default(),
                )
            })
            .collect();
        let touched: Vec<DocId> = change
            .put_docs
            .iter()
            .map(|d| d.record.id.clone())
            .chain(change.delete_docs.iter().cloned())
            .collect();
        let applied = timed(&self.spent.docs, || self.docs.apply(change));
        self.tables.changed(touched)?;
        let applied = applied?;
        self.vectors.remove(&applied.removed);
        let keyword_docs: Vec<KeywordDoc> = applied
            .added
            .iter()
            .map(|(chunk, _)| {
                keyword_doc(
                    chunk,
                    titles.get(&chunk.doc_id).cloned().unwrap_or_default(),
                )
            })
            .collect();
        timed(&self.spent.keywords, || {
            self.keywords.delete(&applied.removed)?;
            self.keywords.upsert(&keyword_docs)
        })?;
        let vectors: Vec<(Slot, Vec<f32>)> = applied
            .added
            .into_iter()
            .map(|(c, v)| (c.slot, v))
            .collect();
        timed(&self.spent.graph, || self.vectors.insert(&vectors))
    }

    /// Makes everything applied so far durable in every store: sled first,
    /// then the keyword commit, then the vector dump. Before the dump the
    /// graph is rebuilt when tombstones pass their threshold or a damaged
    /// segment was found, and the mutable graph is merged into a new
    /// segment when it has grown past its own.
    pub fn checkpoint(&self) -> Result<()> {
        self.checkpoint_with(Checkpoint::Full)
    }

    /// [`Index::checkpoint`], doing with the vector graph what `how` says.
    pub fn checkpoint_with(&self, how: Checkpoint) -> Result<()> {
        let dropped = self.vectors.settle()?;
        timed(&self.spent.docs, || self.docs.flush())?;
        let pending = self.docs.pending_keywords()?;
        timed(&self.spent.keywords, || self.keywords.commit())?;
        self.docs.clear_pending_keywords(&pending)?;
        let tombstones = self.vectors.tombstone_count();
        let points = self.vectors.len() + tombstones;
        let unmerged = self.vectors.unmerged();
        let damaged = self.vectors.damaged();
        let rebuild =
            damaged || tombstones > 0 && tombstones as f64 > self.rebuild_ratio * points as f64;
        let merge = how == Checkpoint::Full
            && unmerged >= self.merge_min
            && unmerged as f64 >= self.merge_ratio * (points - unmerged) as f64;
        timed(&self.spent.graph, || -> Result<()> {
            if rebuild {
                tracing::info!(tombstones, points, damaged, "rebuilding the vector graph");
                self.vectors.rebuild(&self.docs.vectors_from(Slot(0))?)?;
            } else if merge {
                tracing::info!(
                    unmerged,
                    points,
                    "merging new vectors into the graph segment"
                );
                self.vectors.merge(&|| self.docs.vectors_from(Slot(0)))?;
            }
            // A bulk write dumps the mutable graph (what a dump writes)
            // each time it has doubled: the dumps add up to twice the last
            // one, not to one per batch, and what a crash leaves to replay
            // is at most half of it.
            let unmerged = self.vectors.unmerged();
            let due = unmerged >= 2 * self.dumped.load(Ordering::Relaxed);
            if how != Checkpoint::Bulk || rebuild || !dropped.is_empty() || due {
                self.vectors.persist(self.docs.next_slot())?;
                self.dumped.store(unmerged.max(1), Ordering::Relaxed);
            }
            Ok(())
        })?;
        if rebuild {
            self.docs.clear_tombstones(&self.docs.tombstones()?)?;
        } else {
            self.docs.clear_tombstones(&dropped)?;
        }
        timed(&self.spent.docs, || self.docs.flush())
    }

    /// Refills the derived stores from sled, whatever they hold: every live
    /// vector sent again (a new graph, or the Milvus collection made anew)
    /// and the keyword index rewritten; then a checkpoint.
    pub fn rebuild(&self) -> Result<()> {
        let all = self.docs.vectors_from(Slot(0))?;
        tracing::info!(
            vectors = all.len(),
            "rebuilding the derived stores from the doc store"
        );
        self.vectors.rebuild(&all)?;
        self.docs.clear_tombstones(&self.docs.tombstones()?)?;
        self.keywords.clear()?;
        let slots: Vec<Slot> = all.into_iter().map(|(s, _)| s).collect();
        self.sync_keywords(&slots)?;
        self.checkpoint()
    }

    /// Seconds spent writing each store since the index was opened.
    pub fn store_seconds(&self) -> StoreSeconds {
        let seconds = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / 1e9;
        StoreSeconds {
            docs: seconds(&self.spent.docs),
            keywords: seconds(&self.spent.keywords),
            graph: seconds(&self.spent.graph),
        }
    }

    /// Counts of every store and whether they agree.
    pub fn status(&self) -> Result<IndexStatus> {
        let counts = self.docs.counts()?;
        let vectors = self.vectors.len();
        let keyword_docs = self.keywords.count()?;
        let tombstones = self.vectors.tombstone_count();
        let consistent = counts.chunks == self.docs.live_chunks()?
            && counts.chunks == counts.slots
            && counts.chunks == counts.vectors
            && counts.chunks == vectors
            && counts.chunks == keyword_docs
            && counts.pending_keywords == 0
            && counts.tombstones == tombstones;
        Ok(IndexStatus {
            documents: counts.documents,
            chunks: counts.chunks,
            vectors,
            keyword_docs,
            tombstones,
            pending: counts.pending_keywords,
            index_bytes: dir_size(&self.dir, true),
            consistent,
        })
    }

    /// Bytes on disk of each store (`docs`, `keywords`, `vectors`).
    pub fn disk_by_store(&self) -> Vec<(String, u64)> {
        ["docs", "keywords", "vectors"]
            .iter()
            .map(|store| (store.to_string(), dir_size(&self.dir.join(store), false)))
            .collect()
    }

    /// Sizes that are read without scanning any store (for metrics and
    /// probes): live vectors, keyword entries, tombstones.
    pub fn sizes(&self) -> Result<IndexSizes> {
        Ok(IndexSizes {
            vectors: self.vectors.len(),
            keyword_docs: self.keywords.count()?,
            tombstones: self.vectors.tombstone_count(),
        })
    }

    /// Every document with its slots, as of now (built from sled once,
    /// then brought up to date with the documents each write touched).
    pub fn doc_table(&self) -> Result<Arc<DocTable>> {
        self.tables.current(self.docs.as_ref())
    }

    /// The chunk in `slot`, if live.
    pub fn chunk_at(&self, slot: Slot) -> Result<Option<ChunkRecord>> {
        self.docs.chunk_at(slot)
    }

    /// A hint: the chunks in `slots` are about to be read.
    pub fn read_ahead(&self, slots: &[Slot]) -> Result<()> {
        self.docs.read_ahead(slots)
    }
}

/// Where an index keeps its vectors.
#[derive(Debug, Clone, Copy)]
pub enum VectorsAt<'a> {
    /// The embedded graph, in the index directory.
    Embedded,
    /// A Milvus server (lore built with the `milvus` feature).
    Milvus {
        /// The server.
        config: &'a MilvusConfig,
        /// The lore collection the index is.
        collection: &'a str,
        /// A read-only replica of a snapshot: it never writes to Milvus,
        /// and sees only the slots its snapshot knows.
        read_only: bool,
    },
}

type Opened = (Box<dyn VectorIndex>, Slot);

/// The embedded graph; one that cannot be opened is rebuilt from sled.
fn open_graph(
    dir: &Path,
    dim: usize,
    hnsw: &HnswConfig,
    owner: &Owner,
    source: Arc<dyn super::VectorSource>,
) -> Result<Opened> {
    if dir.join(MILVUS_RECORD).exists() {
        return Err(Error::Config(format!(
            "this index keeps its vectors in Milvus ({}): configure its collection with \
             [collections.NAME] vectors = \"milvus\" (or delete that file to index them here again)",
            dir.join(MILVUS_RECORD).display()
        )));
    }
    match HnswVectorIndex::open(dir, dim, hnsw, owner, source.clone()) {
        Ok((graph, watermark)) => Ok((Box::new(graph), watermark)),
        Err(e) => {
            tracing::warn!(error = %e, "vector graph unusable; rebuilding it from the doc store");
            let graph = HnswVectorIndex::create_empty(dir, dim, hnsw, owner, source)?;
            Ok((Box::new(graph), Slot(0)))
        }
    }
}

#[cfg(feature = "milvus")]
fn open_milvus(
    dir: &Path,
    dim: usize,
    hnsw: &HnswConfig,
    config: &MilvusConfig,
    collection: &str,
    read_only: bool,
    docs: &Arc<dyn DocStore>,
) -> Result<Opened> {
    let how = super::milvus::MilvusOpen {
        config,
        name: super::milvus::collection_name(config, collection, docs.instance()),
        ef: hnsw.ef_search,
        read_only: read_only.then(|| docs.next_slot()),
    };
    let source = docs.clone() as Arc<dyn super::VectorSource>;
    let (index, watermark) = super::milvus::MilvusVectorIndex::open(dir, dim, how, source)?;
    Ok((Box::new(index), watermark))
}

#[cfg(not(feature = "milvus"))]
fn open_milvus(
    _: &Path,
    _: usize,
    _: &HnswConfig,
    _: &MilvusConfig,
    collection: &str,
    _: bool,
    _: &Arc<dyn DocStore>,
) -> Result<Opened> {
    Err(Error::Config(format!(
        "collection '{collection}' keeps its vectors in Milvus, but this lore was built \
         without the `milvus` feature (cargo build --release --features milvus)"
    )))
}

fn keyword_doc(chunk: &ChunkRecord, title: String) -> KeywordDoc {
    KeywordDoc {
        slot: chunk.slot,
        title,
        heading: chunk.heading.join(" > "),
        text: chunk.text.clone(),
    }
}

/// Total size of the files under `dir` (unreadable entries count as 0);
/// at the `top` of an index, other collections' folders are not its own.
fn dir_size(dir: &Path, top: bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| !(top && entry.file_name() == "collections"))
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_size(&entry.path(), false),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::table::tests::doc;

    fn generation(dir: &Path) -> u64 {
        std::fs::read_dir(dir.join("vectors"))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_prefix("gen-")?.parse::<u64>().ok()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_bulk_write_dumps_the_graph_as_it_doubles_and_a_kill_replays_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let info = EmbedderInfo {
            id: "test".into(),
            dim: 4,
            documents: Default::default(),
        };
        let hnsw = HnswConfig::default();
        {
            let index = Index::open(dir.path(), &info, &hnsw).unwrap();
            let before = generation(dir.path());
            // 20 batches of 2 chunks: the graph holds 2, 4, …, 40 vectors.
            for n in 0..20 {
                index
                    .apply(Change {
                        put_docs: vec![doc(n, false)],
                        ..Change::default()
                    })
                    .unwrap();
                index.checkpoint_with(Checkpoint::Bulk).unwrap();
            }
            // Dumped at 2, 4, 8, 16 and 32 vectors, not 20 times.
            assert_eq!(generation(dir.path()) - before, 5);
            // Killed here: the last 8 vectors were never dumped.
        }
        let index = Index::open(dir.path(), &info, &hnsw).unwrap();
        let status = index.status().unwrap();
        assert!(status.consistent, "{status:?}");
        assert_eq!(status.vectors, 40);
    }
}
