//! [`DocTable`]: every document with the slots of its chunks, held in
//! memory so filters and access lists are evaluated without reading sled.
//! It is built from sled once, then kept in step with writes: each write
//! logs the documents it touched, and the next reader re-reads only those
//! (sharing every other entry with the table before), so a search right
//! after a write costs a few document reads, not a scan.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::{DocStore, SlotSet};
use crate::error::{Error, Result};
use crate::types::{DocId, DocRecord, Slot};

/// Documents logged as changed before the log is dropped and the next
/// reader scans sled instead (a bulk ingest touches more than that).
const MAX_LOGGED: usize = 50_000;
/// Slot sets kept per table; past that they are forgotten all at once.
const MAX_SETS: usize = 64;

/// One document and where its chunks live.
#[derive(Debug)]
pub struct DocEntry {
    /// The record (its `chunks` list emptied, as `slots` replaces it, and
    /// its `title` and `hash` too: filters do not read them).
    pub record: DocRecord,
    /// The slots of its chunks.
    pub slots: Vec<Slot>,
}

/// Every document with its slots, as of one write generation.
#[derive(Debug, Default)]
pub struct DocTable {
    /// The documents, in no particular order.
    pub docs: Vec<Arc<DocEntry>>,
    /// Positions in `docs` of the documents that carry an access list.
    pub restricted: Vec<usize>,
    /// Slot sets already worked out on this table, by what they answer.
    sets: Mutex<HashMap<String, Arc<SlotSet>>>,
}

impl DocTable {
    fn from_entries(docs: Vec<Arc<DocEntry>>) -> DocTable {
        let restricted = docs
            .iter()
            .enumerate()
            .filter(|(_, e)| crate::access::has_access_list(&e.record))
            .map(|(at, _)| at)
            .collect();
        DocTable {
            docs,
            restricted,
            sets: Mutex::default(),
        }
    }

    /// Reads every document and chunk of `store`.
    fn scan(store: &dyn DocStore) -> Result<DocTable> {
        let mut docs = Vec::new();
        store.each_doc(&mut |doc| {
            docs.push(Arc::new(entry(store, doc)?));
            Ok(())
        })?;
        Ok(Self::from_entries(docs))
    }

    /// This table with the documents in `changed` read again from `store`.
    fn updated(&self, store: &dyn DocStore, changed: &HashSet<DocId>) -> Result<DocTable> {
        let mut docs: Vec<Arc<DocEntry>> = self
            .docs
            .iter()
            .filter(|e| !changed.contains(&e.record.id))
            .cloned()
            .collect();
        for id in changed {
            if let Some(doc) = store.doc(id)? {
                docs.push(Arc::new(entry(store, doc)?));
            }
        }
        Ok(Self::from_entries(docs))
    }

    /// The set stored under `key`, or the one `make` builds (then kept).
    pub fn slot_set(&self, key: String, make: impl FnOnce() -> SlotSet) -> Arc<SlotSet> {
        if let Some(set) = self.sets.lock().ok().and_then(|s| s.get(&key).cloned()) {
            return set;
        }
        let set = Arc::new(make());
        if let Ok(mut sets) = self.sets.lock() {
            if sets.len() >= MAX_SETS {
                sets.clear();
            }
            sets.insert(key, set.clone());
        }
        set
    }
}

/// A document's entry: what filters and access lists read (its title and
/// content hash they do not), and the slots of its chunks.
fn entry(store: &dyn DocStore, mut record: DocRecord) -> Result<DocEntry> {
    let mut slots = Vec::with_capacity(record.chunks.len());
    for id in std::mem::take(&mut record.chunks) {
        if let Some(slot) = store.slot(&id)? {
            slots.push(slot);
        }
    }
    record.hash = String::new();
    record.title = None;
    Ok(DocEntry { record, slots })
}

#[derive(Default)]
struct State {
    /// Bumped by every write.
    generation: u64,
    /// The documents each write touched, for every write after `horizon`
    /// (and after the cached table).
    log: Vec<(u64, Vec<DocId>)>,
    logged: usize,
    /// Writes up to this generation are no longer in the log: a table
    /// older than it cannot be brought up to date, only built again.
    horizon: u64,
    /// The newest table built, and its generation.
    cached: Option<(u64, Arc<DocTable>)>,
}

/// The doc table of one index, kept in step with its writes.
#[derive(Default)]
pub struct Tables {
    state: Mutex<State>,
}

impl Tables {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::store("docs", "an earlier table update panicked"))
    }

    /// Records a write that touched `ids` (call after it is applied).
    pub fn changed(&self, ids: Vec<DocId>) -> Result<()> {
        let mut state = self.lock()?;
        state.generation += 1;
        state.logged += ids.len();
        if state.logged > MAX_LOGGED {
            // Cheaper to scan once than to replay this many.
            state.log.clear();
            state.logged = 0;
            state.horizon = state.generation;
        } else {
            let generation = state.generation;
            state.log.push((generation, ids));
        }
        Ok(())
    }

    /// The table as of now, built or brought up to date from `store`.
    pub fn current(&self, store: &dyn DocStore) -> Result<Arc<DocTable>> {
        let (now, base, changed) = {
            let state = self.lock()?;
            match &state.cached {
                Some((at, table)) if *at == state.generation => return Ok(table.clone()),
                Some((at, table)) if *at >= state.horizon => {
                    let changed: HashSet<DocId> = state
                        .log
                        .iter()
                        .filter(|(generation, _)| generation > at)
                        .flat_map(|(_, ids)| ids.iter().cloned())
                        .collect();
                    (state.generation, Some(table.clone()), changed)
                }
                _ => (state.generation, None, HashSet::new()),
            }
        };
        // Read outside the lock; a write meanwhile is logged under a later
        // generation and replayed by the next reader.
        let table = Arc::new(match base {
            Some(base) => base.updated(store, &changed)?,
            None => DocTable::scan(store)?,
        });
        let mut state = self.lock()?;
        if state.cached.as_ref().is_none_or(|(at, _)| *at < now) {
            state.cached = Some((now, table.clone()));
            state.log.retain(|(generation, _)| *generation > now);
            state.logged = state.log.iter().map(|(_, ids)| ids.len()).sum();
        }
        Ok(table)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::HnswConfig;
    use crate::embed::EmbedderInfo;
    use crate::store::{Change, DocUpdate, Index};
    use crate::types::{Chunk, ChunkId, DocKind};

    pub(crate) fn doc(n: usize, access: bool) -> DocUpdate {
        let path = format!("/d{n}.md");
        let id = DocId::from_path(&path);
        let mut metadata = crate::types::Metadata::new();
        if access {
            metadata.insert("access".into(), serde_json::json!(["sre"]));
        }
        let chunks = (0..2)
            .map(|c| {
                let text = format!("doc {n} chunk {c}");
                let range = c * 100..c * 100 + text.len();
                let chunk = Chunk {
                    id: ChunkId::new(&id, &range, &text),
                    byte_range: range,
                    heading: Vec::new(),
                    text,
                };
                (chunk, Some(vec![0.5; 4]))
            })
            .collect();
        DocUpdate {
            record: DocRecord {
                id,
                path: path.clone(),
                file: path,
                title: None,
                kind: DocKind::Markdown,
                metadata,
                hash: format!("h{n}"),
                chunks: Vec::new(),
            },
            chunks,
        }
    }

    #[test]
    fn the_table_follows_every_write_rereading_only_what_it_touched() {
        let dir = tempfile::tempdir().unwrap();
        let info = EmbedderInfo {
            id: "test".into(),
            dim: 4,
            documents: Default::default(),
        };
        let index = Index::open(dir.path(), &info, &HnswConfig::default()).unwrap();
        let put = |docs| Change {
            put_docs: docs,
            ..Change::default()
        };
        index.apply(put(vec![doc(0, false), doc(1, true)])).unwrap();
        let first = index.doc_table().unwrap();
        assert_eq!(first.docs.len(), 2);
        assert_eq!(first.restricted.len(), 1);
        assert!(
            Arc::ptr_eq(&first, &index.doc_table().unwrap()),
            "no write, same table"
        );
        index.apply(put(vec![doc(2, true)])).unwrap();
        index
            .apply(Change {
                delete_docs: vec![DocId::from_path("/d0.md")],
                ..Change::default()
            })
            .unwrap();
        let second = index.doc_table().unwrap();
        let ids: HashSet<&str> = second.docs.iter().map(|e| e.record.id.0.as_str()).collect();
        let expected: HashSet<String> = [1, 2]
            .map(|n| DocId::from_path(&format!("/d{n}.md")).0)
            .into();
        assert_eq!(ids, expected.iter().map(String::as_str).collect());
        assert_eq!(second.restricted.len(), 2);
        // Untouched documents are shared with the table before: not re-read.
        let of = |table: &DocTable, n: usize| {
            let id = DocId::from_path(&format!("/d{n}.md"));
            table
                .docs
                .iter()
                .find(|e| e.record.id == id)
                .cloned()
                .unwrap()
        };
        assert!(Arc::ptr_eq(&of(&first, 1), &of(&second, 1)));
        // A new document's slots are its chunks' slots.
        let new = of(&second, 2);
        assert_eq!(new.slots.len(), 2);
        for slot in &new.slots {
            let chunk = index.chunk_at(*slot).unwrap().unwrap();
            assert_eq!(chunk.doc_id, new.record.id);
        }
        // The same as a table built from scratch.
        let scanned = DocTable::scan(index.docs()).unwrap();
        let slots = |t: &DocTable| {
            let mut all: Vec<Slot> = t.docs.iter().flat_map(|e| e.slots.clone()).collect();
            all.sort();
            all
        };
        assert_eq!(slots(&scanned), slots(&second));
    }
}
