//! Durable state of an index, split along three seams — [`DocStore`]
//! (documents, chunks, vectors, the chunk↔slot map; sled), [`VectorIndex`]
//! (approximate nearest neighbours; hnsw_rs) and [`KeywordIndex`] (BM25;
//! tantivy) — and [`Index`], which keeps the three consistent across crashes.
//!
//! The doc store is the source of truth. Every change is one atomic sled
//! batch that also records what the derived stores still owe: a pending
//! keyword entry per touched slot, a tombstone per removed vector. The keyword
//! index commits, and the vector graph is dumped, only after sled is flushed,
//! so neither can ever refer to data sled lacks; on open, whatever they had not
//! persisted is replayed from sled.

pub mod docs;
pub mod flat;
pub mod keywords;
pub mod log;
pub mod manifest;
#[cfg(feature = "milvus")]
pub mod milvus;
mod prewarm;
pub mod segment;
pub mod vectors;

mod index;
mod table;

pub use index::{Checkpoint, Index, IndexSizes, IndexStatus, StoreSeconds, VectorsAt};
pub use table::{DocEntry, DocTable};

use crate::error::Result;
use crate::types::{Chunk, ChunkId, ChunkRecord, DocId, DocRecord, FileRecord, Slot};

/// The file of an index's `vectors/` that says its vectors live in Milvus
/// (it records the Milvus collection and the watermark).
pub const MILVUS_RECORD: &str = "milvus.json";

/// The slots a search is restricted to: a bitmap over the slot range
/// (slots are allocated densely and never reused), so building one is a
/// bit set per slot and a lookup is a bit test.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotSet {
    words: Vec<u64>,
    len: usize,
}

impl SlotSet {
    /// Adds `slot`; false when it was there already.
    pub fn insert(&mut self, slot: Slot) -> bool {
        let (word, bit) = ((slot.0 / 64) as usize, slot.0 % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let fresh = self.words[word] & (1 << bit) == 0;
        self.words[word] |= 1 << bit;
        self.len += usize::from(fresh);
        fresh
    }

    /// True when `slot` is in the set.
    pub fn contains(&self, slot: Slot) -> bool {
        let word = (slot.0 / 64) as usize;
        self.words
            .get(word)
            .is_some_and(|w| w & (1 << (slot.0 % 64)) != 0)
    }

    /// Slots in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slots, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = Slot> + '_ {
        self.words.iter().enumerate().flat_map(|(at, &word)| {
            (0..64)
                .filter(move |bit| word & (1 << bit) != 0)
                .map(move |bit| Slot(at as u64 * 64 + bit))
        })
    }
}

impl FromIterator<Slot> for SlotSet {
    fn from_iter<I: IntoIterator<Item = Slot>>(slots: I) -> Self {
        let mut set = SlotSet::default();
        for slot in slots {
            set.insert(slot);
        }
        set
    }
}

/// The best `k` of `scored`, highest first, ties broken by slot.
pub fn top_k(mut scored: Vec<(Slot, f32)>, k: usize) -> Vec<(Slot, f32)> {
    let order = |a: &(Slot, f32), b: &(Slot, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if scored.len() > k && k > 0 {
        scored.select_nth_unstable_by(k - 1, order);
        scored.truncate(k);
    }
    scored.sort_by(order);
    scored.truncate(k);
    scored
}

/// Every vector of `source` that `keep` accepts, scored exactly against
/// `query` (unit vectors: the dot product is the cosine). The answer when
/// an approximate index cannot give one: a damaged segment, a remote
/// engine that cannot fill `k`.
pub fn score_source(
    source: &dyn VectorSource,
    query: &[f32],
    keep: &dyn Fn(Slot) -> bool,
) -> Result<Vec<(Slot, f32)>> {
    let mut scored = Vec::new();
    source.scan_vectors(Slot(0), &mut |slot, vector| {
        if keep(slot) {
            scored.push((slot, crate::kernels::dot(query, &vector)));
        }
        Ok(())
    })?;
    Ok(scored)
}

/// One document to write: its record and its chunks. A chunk whose id the
/// document already had keeps its slot and vector (`vector` is `None`); a new
/// chunk brings its vector.
#[derive(Debug, Clone)]
pub struct DocUpdate {
    /// The document record (its `chunks` list is filled in by the store).
    pub record: DocRecord,
    /// Chunks in text order.
    pub chunks: Vec<(Chunk, Option<Vec<f32>>)>,
}

/// A set of changes applied atomically by [`DocStore::apply`].
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// Documents added or replaced.
    pub put_docs: Vec<DocUpdate>,
    /// Documents removed.
    pub delete_docs: Vec<DocId>,
    /// File records written (after their documents).
    pub put_files: Vec<FileRecord>,
    /// File records removed.
    pub delete_files: Vec<String>,
}

impl Change {
    /// True when the change writes nothing.
    pub fn is_empty(&self) -> bool {
        self.put_docs.is_empty()
            && self.delete_docs.is_empty()
            && self.put_files.is_empty()
            && self.delete_files.is_empty()
    }
}

/// What [`DocStore::apply`] did to slots, for the derived stores to follow.
#[derive(Debug, Default)]
pub struct Applied {
    /// New chunks with their slots and vectors.
    pub added: Vec<(ChunkRecord, Vec<f32>)>,
    /// Slots whose chunks were removed.
    pub removed: Vec<Slot>,
}

/// Counts kept by the doc store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DocCounts {
    /// Documents.
    pub documents: u64,
    /// Chunks (each with a live slot and a vector).
    pub chunks: u64,
    /// Live slots (must equal `chunks`).
    pub slots: u64,
    /// Vectors stored (must equal `chunks`).
    pub vectors: u64,
    /// Slots whose keyword entry is not committed yet.
    pub pending_keywords: u64,
    /// Removed slots still present in the vector graph.
    pub tombstones: u64,
}

/// The doc store that derived stores (keywords, vector graph) must belong
/// to: they record its instance id when they persist, and one recorded
/// for another store (`docs/` was lost and made anew) is discarded and
/// rebuilt, never mixed with slots this store does not know.
#[derive(Debug, Clone)]
pub struct Owner {
    /// The doc store's instance id.
    pub id: String,
    /// Keep derived stores that record no owner (written before owners
    /// were recorded) — only when the doc store has data of its own.
    pub adopt_unowned: bool,
}

impl Owner {
    /// Whether a derived store that recorded `owner` belongs here.
    pub fn accepts(&self, owner: Option<&str>) -> bool {
        owner.map_or(self.adopt_unowned, |o| o == self.id)
    }
}

/// Exact vectors by slot: what an index that searches approximations
/// (the compact segment's int8 vectors) rescores its candidates with. The
/// doc store is one.
pub trait VectorSource: Send + Sync {
    /// The vector in `slot`, if the slot is live.
    fn vector(&self, slot: Slot) -> Result<Option<Vec<f32>>>;
    /// The vectors in `slots`, in order (a store may read them in
    /// parallel).
    fn vectors(&self, slots: &[Slot]) -> Result<Vec<Option<Vec<f32>>>> {
        slots.iter().map(|&slot| self.vector(slot)).collect()
    }
    /// Live slots at or above `from`, with their vectors, one at a time in
    /// slot order, without holding them all.
    fn scan_vectors(
        &self,
        from: Slot,
        each: &mut dyn FnMut(Slot, Vec<f32>) -> Result<()>,
    ) -> Result<()>;
}

/// Documents, chunks, vectors and the chunk↔slot map: the source of truth.
///
/// Contract: [`DocStore::apply`] is atomic (all of a change or none of it
/// survives a crash) and visible to readers at once; it is durable after
/// [`DocStore::flush`]. Slots are allocated in increasing order, never reused.
/// One writer at a time; readers may run concurrently.
pub trait DocStore: VectorSource {
    /// The record of an ingested file.
    fn file(&self, path: &str) -> Result<Option<FileRecord>>;
    /// Records of all files whose path starts with `prefix`.
    fn files_with_prefix(&self, prefix: &str) -> Result<Vec<FileRecord>>;
    /// A document record.
    fn doc(&self, id: &DocId) -> Result<Option<DocRecord>>;
    /// A chunk record.
    fn chunk(&self, id: &ChunkId) -> Result<Option<ChunkRecord>>;
    /// The slot of a chunk, without reading its record.
    fn slot(&self, id: &ChunkId) -> Result<Option<Slot>>;
    /// The chunk living in `slot`, if the slot is live.
    fn chunk_at(&self, slot: Slot) -> Result<Option<ChunkRecord>>;
    /// A hint: the chunks in `slots` are about to be read (a store on disk
    /// may start reading them all at once).
    fn read_ahead(&self, _slots: &[Slot]) -> Result<()> {
        Ok(())
    }
    /// Every document record (a full scan: O(documents)).
    fn all_docs(&self) -> Result<Vec<DocRecord>> {
        let mut all = Vec::new();
        self.each_doc(&mut |doc| {
            all.push(doc);
            Ok(())
        })?;
        Ok(all)
    }
    /// Hands every document record to `f` in turn, holding one at a time.
    fn each_doc(&self, f: &mut dyn FnMut(DocRecord) -> Result<()>) -> Result<()>;
    /// Live slots at or above `from`, with their vectors, in slot order.
    fn vectors_from(&self, from: Slot) -> Result<Vec<(Slot, Vec<f32>)>>;
    /// Applies `change` atomically.
    fn apply(&self, change: Change) -> Result<Applied>;
    /// The next slot to be allocated: every live slot is below it.
    fn next_slot(&self) -> Slot;
    /// Id made when this store was created; derived stores record it.
    fn instance(&self) -> &str;
    /// Slots whose keyword entries are not committed.
    fn pending_keywords(&self) -> Result<Vec<Slot>>;
    /// Marks keyword entries as committed.
    fn clear_pending_keywords(&self, slots: &[Slot]) -> Result<()>;
    /// Removed slots that the vector graph may still hold.
    fn tombstones(&self) -> Result<Vec<Slot>>;
    /// Forgets tombstones (after a graph rebuild, or for slots never dumped).
    fn clear_tombstones(&self, slots: &[Slot]) -> Result<()>;
    /// Counts for status and consistency checks (a scan of every key).
    fn counts(&self) -> Result<DocCounts>;
    /// Live chunks, as kept with every write (no scan): what an open
    /// checks the derived stores against.
    fn live_chunks(&self) -> Result<u64>;
    /// Makes every applied change durable.
    fn flush(&self) -> Result<()>;
}

/// Fails with [`crate::Error::DimensionMismatch`] unless every vector has
/// `dim` elements (shared by the [`VectorIndex`] implementations).
pub fn check_dims<'a>(dim: usize, vectors: impl IntoIterator<Item = &'a [f32]>) -> Result<()> {
    match vectors.into_iter().find(|v| v.len() != dim) {
        Some(v) => Err(crate::Error::DimensionMismatch {
            expected: dim,
            got: v.len(),
        }),
        None => Ok(()),
    }
}

/// Approximate nearest-neighbour search over unit vectors, keyed by slot.
///
/// Contract: `insert` and `remove` are visible to `search` at once and
/// durable after `persist`; a removed slot never appears in results.
/// Scores are cosine similarities, highest first.
pub trait VectorIndex: Send + Sync {
    /// Adds vectors (each of the index's dimension).
    fn insert(&self, items: &[(Slot, Vec<f32>)]) -> Result<()>;
    /// Hides slots from search (tombstones).
    fn remove(&self, slots: &[Slot]);
    /// The `k` nearest live slots to `query` that pass `filter`.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&(dyn Fn(Slot) -> bool + Sync)>,
    ) -> Result<Vec<(Slot, f32)>>;
    /// The `k` nearest to `query` among the live `slots`, each compared
    /// exactly: for filters that leave few candidates, where a graph search
    /// would explore most of the graph to find them.
    fn search_among(&self, query: &[f32], k: usize, slots: &SlotSet) -> Result<Vec<(Slot, f32)>>;
    /// Live vectors.
    fn len(&self) -> u64;
    /// True when no live vector is indexed.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Removed vectors still held.
    fn tombstone_count(&self) -> u64;
    /// On open: marks `slots` (the doc store's tombstones) as removed and
    /// returns those the graph does not hold at all, which the caller forgets.
    fn restore_tombstones(&self, slots: &[Slot]) -> Result<Vec<Slot>>;
    /// Writes the graph durably; `watermark` is recorded with it: every live
    /// slot below it is in the graph.
    fn persist(&self, watermark: Slot) -> Result<()>;
    /// Replaces the graph with exactly `items` (drops all tombstones).
    fn rebuild(&self, items: &[(Slot, Vec<f32>)]) -> Result<()>;
    /// Vectors written since the last merge, held in a mutable part.
    fn unmerged(&self) -> u64 {
        0
    }
    /// Folds the mutable part into the read-only one; `all` lists every
    /// live vector, for when that takes a full build.
    fn merge(&self, all: &dyn Fn() -> Result<Vec<(Slot, Vec<f32>)>>) -> Result<()> {
        let _ = all;
        Ok(())
    }
    /// Puts in place a merge that finished in the background; returns the
    /// tombstones it dropped (their slots are in neither part any more).
    fn settle(&self) -> Result<Vec<Slot>> {
        Ok(Vec::new())
    }
    /// True when a merge built in the background waits to be put in place
    /// (by [`VectorIndex::settle`], which the next checkpoint calls).
    fn merge_finished(&self) -> bool {
        false
    }
    /// True when stored data was found damaged: searches still answer
    /// (exactly, more slowly) and the next checkpoint rebuilds.
    fn damaged(&self) -> bool {
        false
    }
}

/// One chunk as the keyword index sees it.
#[derive(Debug, Clone)]
pub struct KeywordDoc {
    /// Slot of the chunk.
    pub slot: Slot,
    /// Document title.
    pub title: String,
    /// Heading path, joined.
    pub heading: String,
    /// Chunk text.
    pub text: String,
}

/// BM25 search over chunk text, keyed by slot.
///
/// Contract: `upsert` and `delete` are idempotent and become visible and
/// durable at `commit`. Scores are BM25, highest first.
pub trait KeywordIndex: Send + Sync {
    /// Adds or replaces the entries of these slots.
    fn upsert(&self, docs: &[KeywordDoc]) -> Result<()>;
    /// Removes the entries of these slots.
    fn delete(&self, slots: &[Slot]) -> Result<()>;
    /// Makes all changes durable and visible.
    fn commit(&self) -> Result<()>;
    /// Deletes every entry (visible after the next commit).
    fn clear(&self) -> Result<()>;
    /// The best `k` slots for `query`, only among `allowed` when given.
    fn search(
        &self,
        query: &str,
        k: usize,
        allowed: Option<&std::sync::Arc<SlotSet>>,
    ) -> Result<Vec<(Slot, f32)>>;
    /// Committed entries.
    fn count(&self) -> Result<u64>;
    /// How much of what `question` asks about `text` mentions: the share
    /// of the question's terms, each weighted by its inverse document
    /// frequency among `allowed` (all entries when none), that `text`
    /// holds. Words that only frame a question ("how", "which", "often")
    /// are left out. 1 when nothing is left (nothing in particular is
    /// asked, so nothing can be missing).
    fn coverage(
        &self,
        question: &str,
        text: &str,
        allowed: Option<&std::sync::Arc<SlotSet>>,
    ) -> Result<f64>;
}
