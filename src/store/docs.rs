//! The sled-backed [`DocStore`]. One tree, keys prefixed by kind:
//!
//! | prefix | key            | value                          |
//! |--------|----------------|--------------------------------|
//! | `f`    | file path      | [`FileRecord`] (JSON)          |
//! | `d`    | doc id         | [`DocRecord`] (JSON)           |
//! | `c`    | chunk id       | [`ChunkRecord`] (JSON)         |
//! | `s`    | slot (BE u64)  | chunk id                       |
//! | `v`    | slot (BE u64)  | vector (little-endian f32s)    |
//! | `k`    | slot (BE u64)  | — keyword entry not committed  |
//! | `t`    | slot (BE u64)  | — tombstone in the vector graph|
//! | `n`    | —              | next slot (BE u64)             |
//! | `i`    | —              | this store's instance id       |
//!
//! Every [`Change`] is one `apply_batch`, so it is atomic. The instance id
//! is made when the store is created; the derived stores record it, so
//! after `docs/` is lost (a new store, a new id) they are known to be
//! someone else's and rebuilt.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Applied, Change, DocCounts, DocStore, DocUpdate, VectorSource};
use crate::error::{Error, Result};
use crate::types::{ChunkId, ChunkRecord, DocId, DocRecord, FileRecord, Slot};

const FILE: u8 = b'f';
const DOC: u8 = b'd';
const CHUNK: u8 = b'c';
const SLOT: u8 = b's';
const VECTOR: u8 = b'v';
const PENDING: u8 = b'k';
const TOMBSTONE: u8 = b't';
const NEXT_SLOT: &[u8] = b"n";
const INSTANCE: &[u8] = b"i";
/// Live documents and chunks, kept in every write's own batch so that an
/// open can check the derived stores against them without a scan.
const COUNTS: &[u8] = b"C";
/// sled's page cache (its default is 1 GiB). Searches read a few records
/// each; bulk writes stream past it. What it does not hold, the kernel's
/// page cache usually does.
const CACHE_BYTES: u64 = 128 << 20;

/// sled-backed document store.
pub struct SledDocStore {
    db: sled::Db,
    next_slot: AtomicU64,
    instance: String,
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len() + 1);
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

fn slot_key(prefix: u8, slot: Slot) -> Vec<u8> {
    key(prefix, &slot.0.to_be_bytes())
}

fn slot_of(key: &[u8]) -> Slot {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&key[1..9]);
    Slot(u64::from_be_bytes(bytes))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::store("docs", e))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::store("docs", format!("corrupt record: {e}")))
}

fn counts_bytes(counts: [u64; 2]) -> Vec<u8> {
    counts.iter().flat_map(|c| c.to_be_bytes()).collect()
}

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vector_of(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Deletes sled's half-written snapshots (`snap.*.generating`) in `dir`.
/// sled writes a snapshot there, syncs it and renames it, but reads any
/// file named `snap.*` back, so one left empty by a full disk or a kill
/// would fail every later open. They are deleted only under sled's own
/// lock on `db`: no other process is writing one.
fn drop_half_written_snapshots(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let half_written: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"))
        })
        .collect();
    if half_written.is_empty() {
        return Ok(());
    }
    let db = dir.join("db");
    let lock = std::fs::File::open(&db).map_err(|e| Error::io(&db, e))?;
    if lock.try_lock().is_err() {
        // The process holding the store owns them; opening will say so.
        return Ok(());
    }
    for path in half_written {
        tracing::warn!(path = %path.display(), "removing a half-written sled snapshot");
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

impl SledDocStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        drop_half_written_snapshots(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    Error::IndexLocked {
                        index: dir.parent().unwrap_or(dir).to_path_buf(),
                    }
                }
                other => Error::from(other),
            })?;
        let next = match db.get(NEXT_SLOT)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| Error::store("docs", "corrupt slot counter"))?,
            ),
            None => 0,
        };
        let instance = match db.get(INSTANCE)? {
            Some(id) => String::from_utf8_lossy(&id).into_owned(),
            None => {
                let id = crate::types::random_id();
                db.insert(INSTANCE, id.as_bytes())?;
                db.flush()?;
                id
            }
        };
        if db.get(COUNTS)?.is_none_or(|c| c.len() != 16) {
            // Written before the counts were kept, or the record is
            // damaged: counted once, here, under the store's lock.
            let counts = [DOC, CHUNK].map(|p| db.scan_prefix([p]).keys().count() as u64);
            db.insert(COUNTS, counts_bytes(counts).as_slice())?;
            db.flush()?;
        }
        Ok(SledDocStore {
            db,
            next_slot: AtomicU64::new(next),
            instance,
        })
    }

    /// The kept counts: live documents and chunks.
    fn kept(&self) -> Result<[u64; 2]> {
        let bytes = self.db.get(COUNTS)?.unwrap_or_default();
        let corrupt = || Error::store("docs", "corrupt counts record");
        let field = |at: usize| -> Result<u64> {
            let b = bytes.get(at..at + 8).ok_or_else(corrupt)?;
            Ok(u64::from_be_bytes(b.try_into().map_err(|_| corrupt())?))
        };
        Ok([field(0)?, field(8)?])
    }

    fn get<T: DeserializeOwned>(&self, k: &[u8]) -> Result<Option<T>> {
        self.db.get(k)?.map(|v| decode(&v)).transpose()
    }

    fn count(&self, prefix: u8) -> u64 {
        self.db.scan_prefix([prefix]).keys().count() as u64
    }

    fn slots_with(&self, prefix: u8) -> Result<Vec<Slot>> {
        self.db
            .scan_prefix([prefix])
            .keys()
            .map(|k| Ok(slot_of(&k?)))
            .collect()
    }

    /// Adds the removal of a document's chunks to `batch`.
    fn remove_doc(
        &self,
        record: &DocRecord,
        keep: &HashSet<&ChunkId>,
        batch: &mut sled::Batch,
        applied: &mut Applied,
    ) -> Result<()> {
        for id in record.chunks.iter().filter(|id| !keep.contains(id)) {
            let Some(chunk) = self.chunk(id)? else {
                continue;
            };
            batch.remove(key(CHUNK, id.0.as_bytes()));
            batch.remove(slot_key(SLOT, chunk.slot));
            batch.remove(slot_key(VECTOR, chunk.slot));
            batch.insert(slot_key(PENDING, chunk.slot), &[]);
            batch.insert(slot_key(TOMBSTONE, chunk.slot), &[]);
            applied.removed.push(chunk.slot);
        }
        Ok(())
    }

    /// Adds one document's new state to `batch`.
    fn put_doc(
        &self,
        update: DocUpdate,
        next: &mut u64,
        batch: &mut sled::Batch,
        applied: &mut Applied,
    ) -> Result<()> {
        let DocUpdate { mut record, chunks } = update;
        let old: Option<DocRecord> = self.doc(&record.id)?;
        let keep: HashSet<&ChunkId> = chunks
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(c, _)| &c.id)
            .collect();
        if let Some(old) = &old {
            self.remove_doc(old, &keep, batch, applied)?;
        }
        record.chunks = chunks.iter().map(|(c, _)| c.id.clone()).collect();
        for (chunk, vector) in chunks {
            let Some(vector) = vector else { continue };
            let slot = Slot(*next);
            *next += 1;
            let stored = ChunkRecord {
                id: chunk.id,
                doc_id: record.id.clone(),
                slot,
                byte_range: chunk.byte_range,
                heading: chunk.heading,
                text: chunk.text,
            };
            batch.insert(key(CHUNK, stored.id.0.as_bytes()), encode(&stored)?);
            batch.insert(slot_key(SLOT, slot), stored.id.0.as_bytes());
            batch.insert(slot_key(VECTOR, slot), vector_bytes(&vector));
            batch.insert(slot_key(PENDING, slot), &[]);
            applied.added.push((stored, vector));
        }
        batch.insert(key(DOC, record.id.0.as_bytes()), encode(&record)?);
        Ok(())
    }
}

impl VectorSource for SledDocStore {
    fn vector(&self, slot: Slot) -> Result<Option<Vec<f32>>> {
        Ok(self.db.get(slot_key(VECTOR, slot))?.map(|v| vector_of(&v)))
    }

    fn scan_vectors(
        &self,
        from: Slot,
        each: &mut dyn FnMut(Slot, Vec<f32>) -> Result<()>,
    ) -> Result<()> {
        for kv in self.db.range(slot_key(VECTOR, from)..key(VECTOR + 1, &[])) {
            let (k, v) = kv?;
            each(slot_of(&k), vector_of(&v))?;
        }
        Ok(())
    }
}

impl DocStore for SledDocStore {
    fn file(&self, path: &str) -> Result<Option<FileRecord>> {
        self.get(&key(FILE, path.as_bytes()))
    }

    fn files_with_prefix(&self, prefix: &str) -> Result<Vec<FileRecord>> {
        self.db
            .scan_prefix(key(FILE, prefix.as_bytes()))
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    fn doc(&self, id: &DocId) -> Result<Option<DocRecord>> {
        self.get(&key(DOC, id.0.as_bytes()))
    }

    fn chunk(&self, id: &ChunkId) -> Result<Option<ChunkRecord>> {
        self.get(&key(CHUNK, id.0.as_bytes()))
    }

    fn chunk_at(&self, slot: Slot) -> Result<Option<ChunkRecord>> {
        match self.db.get(slot_key(SLOT, slot))? {
            Some(id) => self.get(&key(CHUNK, &id)),
            None => Ok(None),
        }
    }

    fn all_docs(&self) -> Result<Vec<DocRecord>> {
        self.db
            .scan_prefix([DOC])
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    fn vectors_from(&self, from: Slot) -> Result<Vec<(Slot, Vec<f32>)>> {
        let mut all = Vec::new();
        self.scan_vectors(from, &mut |slot, vector| {
            all.push((slot, vector));
            Ok(())
        })?;
        Ok(all)
    }

    fn apply(&self, change: Change) -> Result<Applied> {
        let mut batch = sled::Batch::default();
        let mut applied = Applied::default();
        let mut next = self.next_slot.load(Ordering::SeqCst);
        let [mut documents, chunks] = self.kept()?;
        for id in &change.delete_docs {
            if let Some(record) = self.doc(id)? {
                self.remove_doc(&record, &HashSet::new(), &mut batch, &mut applied)?;
                batch.remove(key(DOC, id.0.as_bytes()));
                documents = documents.saturating_sub(1);
            }
        }
        let mut put = HashSet::new();
        for update in change.put_docs {
            if !put.insert(update.record.id.clone()) {
                return Err(Error::store(
                    "docs",
                    format!("document {} twice in one change", update.record.id.0),
                ));
            }
            if self.doc(&update.record.id)?.is_none() {
                documents += 1;
            }
            self.put_doc(update, &mut next, &mut batch, &mut applied)?;
        }
        let chunks =
            (chunks + applied.added.len() as u64).saturating_sub(applied.removed.len() as u64);
        batch.insert(COUNTS, counts_bytes([documents, chunks]));
        for file in &change.put_files {
            batch.insert(key(FILE, file.path.as_bytes()), encode(file)?);
        }
        for path in &change.delete_files {
            batch.remove(key(FILE, path.as_bytes()));
        }
        batch.insert(NEXT_SLOT, &next.to_be_bytes());
        self.db.apply_batch(batch)?;
        self.next_slot.store(next, Ordering::SeqCst);
        Ok(applied)
    }

    fn next_slot(&self) -> Slot {
        Slot(self.next_slot.load(Ordering::SeqCst))
    }

    fn instance(&self) -> &str {
        &self.instance
    }

    fn pending_keywords(&self) -> Result<Vec<Slot>> {
        self.slots_with(PENDING)
    }

    fn clear_pending_keywords(&self, slots: &[Slot]) -> Result<()> {
        let mut batch = sled::Batch::default();
        slots
            .iter()
            .for_each(|s| batch.remove(slot_key(PENDING, *s)));
        Ok(self.db.apply_batch(batch)?)
    }

    fn tombstones(&self) -> Result<Vec<Slot>> {
        self.slots_with(TOMBSTONE)
    }

    fn clear_tombstones(&self, slots: &[Slot]) -> Result<()> {
        let mut batch = sled::Batch::default();
        slots
            .iter()
            .for_each(|s| batch.remove(slot_key(TOMBSTONE, *s)));
        Ok(self.db.apply_batch(batch)?)
    }

    fn live_chunks(&self) -> Result<u64> {
        Ok(self.kept()?[1])
    }

    fn counts(&self) -> Result<DocCounts> {
        Ok(DocCounts {
            documents: self.count(DOC),
            chunks: self.count(CHUNK),
            slots: self.count(SLOT),
            vectors: self.count(VECTOR),
            pending_keywords: self.count(PENDING),
            tombstones: self.count(TOMBSTONE),
        })
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::table::tests::doc;

    #[test]
    fn kept_counts_follow_every_write_and_are_made_once_for_older_stores() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledDocStore::open(dir.path()).unwrap();
        let agree = |store: &SledDocStore| {
            let counts = store.counts().unwrap();
            assert_eq!(store.kept().unwrap(), [counts.documents, counts.chunks]);
            counts.chunks
        };
        let put = |docs: Vec<DocUpdate>| Change {
            put_docs: docs,
            ..Change::default()
        };
        store
            .apply(put((0..5).map(|n| doc(n, false)).collect()))
            .unwrap();
        assert_eq!(agree(&store), 10);
        // Replaced (the same document again), removed, removed when absent.
        let mut changed = doc(1, false);
        changed.chunks.truncate(1);
        store.apply(put(vec![changed])).unwrap();
        store
            .apply(Change {
                delete_docs: vec![doc(2, false).record.id, doc(9, false).record.id],
                ..Change::default()
            })
            .unwrap();
        assert_eq!(agree(&store), 7);
        // One document twice in one change is refused, and changes nothing.
        assert!(
            store
                .apply(put(vec![doc(7, false), doc(7, false)]))
                .is_err()
        );
        assert_eq!(agree(&store), 7);
        // A store written before the counts were kept, or whose record is
        // damaged, counts once on open.
        for damage in [None, Some(&b"garbage"[..])] {
            match damage {
                None => store.db.remove(COUNTS).map(drop).unwrap(),
                Some(bytes) => store.db.insert(COUNTS, bytes).map(drop).unwrap(),
            }
            store.flush().unwrap();
            drop(store);
            store = SledDocStore::open(dir.path()).unwrap();
            assert_eq!(agree(&store), 7);
            assert_eq!(store.live_chunks().unwrap(), 7);
        }
    }
}
