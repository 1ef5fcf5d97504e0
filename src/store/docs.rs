//! The sled-backed [`DocStore`]. One tree, keys prefixed by kind:
//!
//! | prefix | key            | value                                  |
//! |--------|----------------|----------------------------------------|
//! | `f`    | file path      | [`FileRecord`] (JSON)                  |
//! | `d`    | doc id         | [`DocRecord`] (JSON)                   |
//! | `c`    | chunk id       | its slot (BE u64)                      |
//! | `s`    | slot (BE u64)  | chunk id                               |
//! | `v`    | slot (BE u64)  | where the chunk lies in the chunk log  |
//! | `k`    | slot (BE u64)  | — keyword entry not committed          |
//! | `t`    | slot (BE u64)  | — tombstone in the vector graph        |
//! | `n`    | —              | next slot (BE u64)                     |
//! | `i`    | —              | this store's instance id               |
//! | `C`    | —              | live documents and chunks (BE u64 ×2)  |
//! | `L`    | —              | the chunk log's generation, end, garbage |
//! | `F`    | —              | the layout's version (absent: before the log) |
//!
//! Each chunk's vector and [`ChunkRecord`] are not in sled but in the
//! append-only chunk log beside it ([`super::log`]): sled takes about four
//! times the bytes of the large values it holds.
//!
//! Every [`Change`] is one `apply_batch`, so it is atomic; the chunks it adds
//! are appended to the log and synced first. The instance id is made when
//! the store is created; the derived stores record it, so after `docs/` is
//! lost (a new store, a new id) they are known to be someone else's and
//! rebuilt. A store written before the log is converted once on open.

use std::collections::HashSet;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::log::{ChunkLog, Location};

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
/// The chunk log's generation, committed end and garbage bytes.
const LOG: &[u8] = b"L";
/// The layout's version: absent before the chunk log.
const FORMAT: &[u8] = b"F";
/// The layout written here.
const FORMAT_VERSION: u8 = 2;
/// Chunks converted per batch when an older store is opened.
const CONVERT_BATCH: usize = 4096;
/// The log is compacted once its garbage is at least this and at least
/// as large as what is live.
const COMPACT_MIN_GARBAGE: u64 = 64 << 20;
/// sled's page cache (its default is 1 GiB). sled holds only small records
/// now (the chunk log holds the bytes), searches read a few each, and bulk
/// writes stream past it; what it does not hold, the kernel's page cache
/// usually does. At 1M chunks, 128 MiB (which sled's in-memory pages
/// overshoot) cost 200 MiB of peak memory under search; 16 MiB did not
/// change search latency.
const CACHE_BYTES: u64 = 16 << 20;
/// A store that wrote at least this many chunks since it was opened is
/// opened once more as it closes (see [`SledDocStore`]'s `Drop`).
const REFRESH_AFTER_CHUNKS: u64 = 50_000;

/// sled-backed document store.
pub struct SledDocStore {
    /// Closed by hand in `Drop`, before the store may be opened again.
    db: ManuallyDrop<sled::Db>,
    dir: PathBuf,
    /// Chunks written since the store was opened.
    written: AtomicU64,
    /// Chunks written after which closing refreshes sled's snapshot.
    refresh_after: u64,
    log: ChunkLog,
    /// Bytes of the log that no chunk names any more.
    garbage: AtomicU64,
    /// Garbage bytes below which the log is never compacted.
    compact_min: u64,
    next_slot: AtomicU64,
    instance: String,
}

/// What sled records of the chunk log.
#[derive(Debug, Clone, Copy, Default)]
struct LogState {
    generation: u64,
    end: u64,
    garbage: u64,
}

impl LogState {
    fn read(db: &sled::Db) -> Result<Self> {
        let Some(bytes) = db.get(LOG)? else {
            return Ok(LogState::default());
        };
        let corrupt = || Error::store("docs", "corrupt chunk-log record");
        let word = |at: usize| -> Result<u64> {
            let b = bytes.get(at..at + 8).ok_or_else(corrupt)?;
            Ok(u64::from_be_bytes(b.try_into().map_err(|_| corrupt())?))
        };
        if bytes.len() != 24 {
            return Err(corrupt());
        }
        Ok(LogState {
            generation: word(0)?,
            end: word(8)?,
            garbage: word(16)?,
        })
    }

    fn bytes(&self) -> Vec<u8> {
        [self.generation, self.end, self.garbage]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect()
    }
}

fn slot_bytes(slot: Slot) -> [u8; 8] {
    slot.0.to_be_bytes()
}

fn slot_from(bytes: &[u8]) -> Result<Slot> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::store("docs", "corrupt chunk record: not a slot"))?;
    Ok(Slot(u64::from_be_bytes(bytes)))
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

/// A chunk record as the log keeps it: its JSON, LZ4-compressed, after
/// the JSON's length (LE u32).
fn pack(record: &ChunkRecord) -> Result<Vec<u8>> {
    let json = encode(record)?;
    let len = u32::try_from(json.len()).map_err(|_| Error::store("docs", "chunk too large"))?;
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(&lz4_flex::block::compress(&json));
    Ok(out)
}

/// Reads what [`pack`] wrote. The length is checked against what LZ4 can
/// expand the rest to before anything is allocated.
fn unpack(bytes: &[u8], slot: Slot) -> Result<ChunkRecord> {
    let corrupt = |why: &str| {
        Error::store(
            "docs",
            format!("the chunk record at slot {} is corrupt: {why}", slot.0),
        )
    };
    let (len, body) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("too short"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > body.len().saturating_mul(255) + 16 {
        return Err(corrupt("its length is more than it can expand to"));
    }
    let mut json = vec![0u8; len];
    match lz4_flex::block::decompress_into(body, &mut json) {
        Ok(n) if n == len => decode(&json),
        Ok(_) => Err(corrupt("shorter than its length")),
        Err(e) => Err(corrupt(&e.to_string())),
    }
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

/// How long an open waits for a lock this process may still hold: sled's
/// flusher thread keeps a dropped store's file (and its lock) until its next
/// pass, so a store closed and opened again at once (a collection created
/// under a temporary name, then opened in place) can find it locked.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens sled in `dir`; a lock held past [`LOCK_WAIT`] is
/// [`Error::IndexLocked`].
fn open_sled(dir: &Path) -> Result<sled::Db> {
    let start = std::time::Instant::now();
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io))
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                if start.elapsed() >= LOCK_WAIT {
                    return Err(Error::IndexLocked {
                        index: dir.parent().unwrap_or(dir).to_path_buf(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(other) => return Err(Error::from(other)),
        }
    }
}

/// sled opens by reading its last recovery snapshot and then every log
/// entry written after it, and writes a new snapshot only then. After a
/// bulk write (an import of a million chunks) the next open would read
/// the whole log again (0.9 s at a million chunks, against 0.2 s); so a
/// store that wrote that much opens sled once more as it closes, and the
/// writer pays the time instead of the next reader. A failure here loses
/// nothing (the next open reads the log): it is logged.
impl Drop for SledDocStore {
    fn drop(&mut self) {
        // SAFETY: `db` is taken once, here, and never used again.
        drop(unsafe { ManuallyDrop::take(&mut self.db) });
        // A store moved or deleted while open (a collection dropped) is
        // not opened again: sled would make an empty one in its place.
        if self.written.load(Ordering::Relaxed) < self.refresh_after
            || !self.dir.join("db").is_file()
        {
            return;
        }
        let refreshed = drop_half_written_snapshots(&self.dir).and_then(|()| open_sled(&self.dir));
        if let Err(e) = refreshed {
            tracing::warn!(
                dir = %self.dir.display(),
                error = %e,
                "could not refresh sled's recovery snapshot; the next open reads its whole log"
            );
        }
    }
}

impl SledDocStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        drop_half_written_snapshots(dir)?;
        let db = open_sled(dir)?;
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
        let state = LogState::read(&db)?;
        let store = SledDocStore {
            log: ChunkLog::open(dir, state.generation, state.end)?,
            garbage: AtomicU64::new(state.garbage),
            compact_min: COMPACT_MIN_GARBAGE,
            db: ManuallyDrop::new(db),
            dir: dir.to_path_buf(),
            written: AtomicU64::new(0),
            refresh_after: REFRESH_AFTER_CHUNKS,
            next_slot: AtomicU64::new(next),
            instance,
        };
        match store.db.get(FORMAT)?.as_deref() {
            Some([FORMAT_VERSION]) => {}
            None => store.convert()?,
            Some(other) => {
                return Err(Error::store(
                    "docs",
                    format!("unknown store layout {other:?}: written by a newer lore?"),
                ));
            }
        }
        Ok(store)
    }

    /// Moves the vectors and chunk records of a store written before the
    /// chunk log into the log, a batch at a time; a conversion killed half
    /// way resumes where it stopped (a converted chunk's record is a slot).
    fn convert(&self) -> Result<()> {
        let garbage = self.garbage.load(Ordering::SeqCst);
        let mut batch = Vec::new();
        let mut converted = 0usize;
        for kv in self.db.scan_prefix([CHUNK]) {
            let (_, value) = kv?;
            if value.len() == 8 {
                continue;
            }
            let record: ChunkRecord = decode(&value)?;
            let vector = self.db.get(slot_key(VECTOR, record.slot))?.ok_or_else(|| {
                Error::store("docs", format!("chunk {} has no vector", record.id.0))
            })?;
            batch.push((record, vector.to_vec()));
            if batch.len() == CONVERT_BATCH {
                converted += batch.len();
                self.write_chunks(std::mem::take(&mut batch), sled::Batch::default(), garbage)?;
                tracing::info!(converted, "moving chunks into the chunk log");
            }
        }
        converted += batch.len();
        self.write_chunks(batch, sled::Batch::default(), garbage)?;
        self.db.insert(FORMAT, &[FORMAT_VERSION])?;
        self.db.flush()?;
        if converted > 0 {
            tracing::info!(converted, "the store now keeps its chunks in the chunk log");
        }
        Ok(())
    }

    /// Appends `chunks` (records with their vector bytes) to the log, then
    /// applies `batch` with where they lie and the log's new end.
    /// `garbage` is the log's garbage once it has been applied.
    fn write_chunks(
        &self,
        chunks: Vec<(ChunkRecord, Vec<u8>)>,
        mut batch: sled::Batch,
        garbage: u64,
    ) -> Result<()> {
        let records = chunks
            .iter()
            .map(|(record, vector)| Ok((vector.clone(), pack(record)?)))
            .collect::<Result<Vec<_>>>()?;
        self.written
            .fetch_add(chunks.len() as u64, Ordering::Relaxed);
        self.log.append(&records, |locations, generation, end| {
            for ((record, _), loc) in chunks.iter().zip(locations) {
                batch.insert(key(CHUNK, record.id.0.as_bytes()), &slot_bytes(record.slot));
                batch.insert(slot_key(VECTOR, record.slot), &loc.to_bytes());
            }
            let state = LogState {
                generation,
                end,
                garbage,
            };
            batch.insert(LOG, state.bytes());
            Ok(self.db.apply_batch(batch)?)
        })
    }

    /// Copies the live chunks into a new log file once at least half of
    /// the log is garbage (and enough to be worth it).
    fn compact_if_due(&self) -> Result<()> {
        let garbage = self.garbage.load(Ordering::SeqCst);
        let end = self.log.reader().end();
        if garbage < self.compact_min || garbage * 2 < end {
            return Ok(());
        }
        tracing::info!(garbage, end, "compacting the chunk log");
        let live = self
            .db
            .range(slot_key(VECTOR, Slot(0))..key(VECTOR + 1, &[]))
            .map(|kv| {
                let (k, v) = kv?;
                let slot = slot_of(&k);
                Ok((slot, Location::from_bytes(&v, slot)?))
            });
        self.log.compact(live, |moved, generation, end| {
            let mut batch = sled::Batch::default();
            for (slot, loc) in moved {
                batch.insert(slot_key(VECTOR, *slot), &loc.to_bytes());
            }
            let state = LogState {
                generation,
                end,
                garbage: 0,
            };
            batch.insert(LOG, state.bytes());
            self.db.apply_batch(batch)?;
            self.db.flush()?;
            Ok(())
        })?;
        self.garbage.store(0, Ordering::SeqCst);
        Ok(())
    }

    /// Where the chunk at `slot` lies in the log.
    fn location(&self, slot: Slot) -> Result<Option<Location>> {
        self.db
            .get(slot_key(VECTOR, slot))?
            .map(|v| Location::from_bytes(&v, slot))
            .transpose()
    }

    /// Where the chunks in `slots` lie, in order.
    fn locations(&self, slots: &[Slot]) -> Result<Vec<Option<Location>>> {
        slots.iter().map(|&slot| self.location(slot)).collect()
    }

    /// The slot of chunk `id`.
    fn slot_of_chunk(&self, id: &ChunkId) -> Result<Option<Slot>> {
        self.db
            .get(key(CHUNK, id.0.as_bytes()))?
            .map(|v| slot_from(&v))
            .transpose()
    }

    /// The stored record of the chunk at `slot`.
    fn record_at(&self, slot: Slot) -> Result<Option<ChunkRecord>> {
        let reader = self.log.reader();
        match self.location(slot)? {
            Some(loc) => unpack(&reader.record(loc, slot)?, slot).map(Some),
            None => Ok(None),
        }
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
        b: &mut Building,
    ) -> Result<()> {
        for id in record.chunks.iter().filter(|id| !keep.contains(id)) {
            let Some(slot) = self.slot_of_chunk(id)? else {
                continue;
            };
            if let Some(loc) = self.location(slot)? {
                b.garbage += loc.span();
            }
            b.batch.remove(key(CHUNK, id.0.as_bytes()));
            b.batch.remove(slot_key(SLOT, slot));
            b.batch.remove(slot_key(VECTOR, slot));
            b.batch.insert(slot_key(PENDING, slot), &[]);
            b.batch.insert(slot_key(TOMBSTONE, slot), &[]);
            b.applied.removed.push(slot);
        }
        Ok(())
    }

    /// Adds one document's new state to `b`.
    fn put_doc(&self, update: DocUpdate, next: &mut u64, b: &mut Building) -> Result<()> {
        let DocUpdate { mut record, chunks } = update;
        let old: Option<DocRecord> = self.doc(&record.id)?;
        let keep: HashSet<&ChunkId> = chunks
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(c, _)| &c.id)
            .collect();
        if let Some(old) = &old {
            self.remove_doc(old, &keep, b)?;
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
            b.batch.insert(slot_key(SLOT, slot), stored.id.0.as_bytes());
            b.batch.insert(slot_key(PENDING, slot), &[]);
            b.chunks.push((stored.clone(), vector_bytes(&vector)));
            b.applied.added.push((stored, vector));
        }
        b.batch
            .insert(key(DOC, record.id.0.as_bytes()), encode(&record)?);
        Ok(())
    }
}

/// One change as it is built: the sled batch, what it does, the bytes of
/// log it turns into garbage and the chunks it adds.
#[derive(Default)]
struct Building {
    batch: sled::Batch,
    applied: Applied,
    garbage: u64,
    chunks: Vec<(ChunkRecord, Vec<u8>)>,
}

impl VectorSource for SledDocStore {
    fn vector(&self, slot: Slot) -> Result<Option<Vec<f32>>> {
        let reader = self.log.reader();
        match self.location(slot)? {
            Some(loc) => Ok(Some(vector_of(&reader.vector(loc, slot)?))),
            None => Ok(None),
        }
    }

    fn vectors(&self, slots: &[Slot]) -> Result<Vec<Option<Vec<f32>>>> {
        let locs = self.locations(slots)?;
        let reader = self.log.reader();
        reader.will_need(&locs.iter().flatten().copied().collect::<Vec<_>>());
        slots
            .iter()
            .zip(locs)
            .map(|(&slot, loc)| match loc {
                Some(loc) => Ok(Some(vector_of(&reader.vector(loc, slot)?))),
                None => Ok(None),
            })
            .collect()
    }

    fn scan_vectors(
        &self,
        from: Slot,
        each: &mut dyn FnMut(Slot, Vec<f32>) -> Result<()>,
    ) -> Result<()> {
        // Read a page at a time under the log's read lock, and hand them
        // out after it is released: `each` may read the store again.
        const PAGE: usize = 1024;
        let mut next = slot_key(VECTOR, from);
        loop {
            let mut page = Vec::with_capacity(PAGE);
            {
                let reader = self.log.reader();
                for kv in self.db.range(next.clone()..key(VECTOR + 1, &[])).take(PAGE) {
                    let (k, v) = kv?;
                    let slot = slot_of(&k);
                    let loc = Location::from_bytes(&v, slot)?;
                    page.push((slot, vector_of(&reader.vector(loc, slot)?)));
                }
            }
            let Some(&(last, _)) = page.last() else {
                return Ok(());
            };
            let full = page.len() == PAGE;
            for (slot, vector) in page {
                each(slot, vector)?;
            }
            if !full {
                return Ok(());
            }
            next = slot_key(VECTOR, Slot(last.0 + 1));
        }
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
        match self.slot_of_chunk(id)? {
            Some(slot) => self.record_at(slot),
            None => Ok(None),
        }
    }

    fn chunk_at(&self, slot: Slot) -> Result<Option<ChunkRecord>> {
        self.record_at(slot)
    }

    fn read_ahead(&self, slots: &[Slot]) -> Result<()> {
        let locs: Vec<Location> = self.locations(slots)?.into_iter().flatten().collect();
        self.log.reader().will_need(&locs);
        Ok(())
    }

    fn slot(&self, id: &ChunkId) -> Result<Option<Slot>> {
        self.slot_of_chunk(id)
    }

    fn each_doc(&self, f: &mut dyn FnMut(DocRecord) -> Result<()>) -> Result<()> {
        for value in self.db.scan_prefix([DOC]).values() {
            f(decode(&value?)?)?;
        }
        Ok(())
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
        let mut b = Building::default();
        let mut next = self.next_slot.load(Ordering::SeqCst);
        let [mut documents, chunks] = self.kept()?;
        for id in &change.delete_docs {
            if let Some(record) = self.doc(id)? {
                self.remove_doc(&record, &HashSet::new(), &mut b)?;
                b.batch.remove(key(DOC, id.0.as_bytes()));
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
            self.put_doc(update, &mut next, &mut b)?;
        }
        let Building {
            mut batch,
            applied,
            garbage,
            chunks: added,
        } = b;
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
        let garbage = self.garbage.load(Ordering::SeqCst) + garbage;
        self.write_chunks(added, batch, garbage)?;
        self.garbage.store(garbage, Ordering::SeqCst);
        self.next_slot.store(next, Ordering::SeqCst);
        self.compact_if_due()?;
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

    fn put(docs: Vec<DocUpdate>) -> Change {
        Change {
            put_docs: docs,
            ..Change::default()
        }
    }

    /// Every live chunk reads back with its vector.
    fn read_back(store: &SledDocStore, docs: impl Iterator<Item = usize>) {
        for n in docs {
            let update = doc(n, false);
            for (chunk, vector) in update.chunks {
                let stored = store.chunk(&chunk.id).unwrap().expect("stored");
                assert_eq!(stored.text, chunk.text);
                assert_eq!(store.chunk_at(stored.slot).unwrap().unwrap(), stored);
                assert_eq!(store.vector(stored.slot).unwrap(), vector);
                store.read_ahead(&[stored.slot]).unwrap();
                // Read together (read ahead at once), with a slot that
                // holds nothing.
                let together = store.vectors(&[stored.slot, Slot(u64::MAX)]).unwrap();
                assert_eq!(together, [vector, None]);
            }
        }
    }

    #[test]
    fn a_store_written_before_the_chunk_log_is_converted_once_and_a_killed_conversion_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledDocStore::open(dir.path()).unwrap();
        store
            .apply(put((0..6).map(|n| doc(n, false)).collect()))
            .unwrap();
        // Write the chunks back the way the previous release kept them:
        // the record in `c`, the vector in `v`, no layout version.
        let slots = store.db.scan_prefix([VECTOR]).keys().count();
        for n in 0..6 {
            for (chunk, _) in doc(n, false).chunks {
                let stored = store.chunk(&chunk.id).unwrap().unwrap();
                let vector = store.vector(stored.slot).unwrap().unwrap();
                let id = key(CHUNK, stored.id.0.as_bytes());
                store.db.insert(id, encode(&stored).unwrap()).unwrap();
                let at = slot_key(VECTOR, stored.slot);
                store.db.insert(at, vector_bytes(&vector)).unwrap();
            }
        }
        store.db.remove(FORMAT).unwrap();
        store.db.remove(LOG).unwrap();
        store.flush().unwrap();
        drop(store);
        for log in std::fs::read_dir(dir.path()).unwrap().flatten() {
            if log.file_name().to_string_lossy().ends_with(".log") {
                std::fs::remove_file(log.path()).unwrap();
            }
        }
        let store = SledDocStore::open(dir.path()).unwrap();
        read_back(&store, 0..6);
        assert_eq!(store.db.scan_prefix([VECTOR]).keys().count(), slots);
        let end = store.log.reader().end();
        // A conversion killed half way: one chunk still in the old layout.
        let (chunk, _) = doc(3, false).chunks.remove(0);
        let stored = store.chunk(&chunk.id).unwrap().unwrap();
        let vector = store.vector(stored.slot).unwrap().unwrap();
        store
            .db
            .insert(key(CHUNK, stored.id.0.as_bytes()), encode(&stored).unwrap())
            .unwrap();
        store
            .db
            .insert(slot_key(VECTOR, stored.slot), vector_bytes(&vector))
            .unwrap();
        store.db.remove(FORMAT).unwrap();
        store.flush().unwrap();
        drop(store);
        let store = SledDocStore::open(dir.path()).unwrap();
        read_back(&store, 0..6);
        let one = Location {
            offset: 0,
            vector_len: 16,
            record_len: pack(&stored).unwrap().len() as u32,
        };
        assert_eq!(store.log.reader().end(), end + one.span());
        // Converted: the next open leaves the log as it is.
        drop(store);
        let store = SledDocStore::open(dir.path()).unwrap();
        assert_eq!(store.log.reader().end(), end + one.span());
    }

    /// The newest of sled's recovery snapshots in `dir` (their names hold
    /// the log position, in fixed-width hex).
    fn newest_snapshot(dir: &Path) -> Option<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("snap.") && !n.ends_with(".generating"))
            .max()
    }

    #[test]
    fn a_store_that_wrote_much_leaves_a_fresh_snapshot_as_it_closes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledDocStore::open(dir.path()).unwrap();
        store.refresh_after = 5;
        store
            .apply(put((0..10).map(|n| doc(n, false)).collect()))
            .unwrap();
        store.flush().unwrap();
        let before = newest_snapshot(dir.path());
        drop(store);
        let after = newest_snapshot(dir.path());
        assert!(
            after.is_some() && after > before,
            "{before:?} then {after:?}"
        );
        // Below the bound, closing leaves sled's snapshot as it was.
        let store = SledDocStore::open(dir.path()).unwrap();
        read_back(&store, 0..10);
        let opened = newest_snapshot(dir.path());
        store.apply(put(vec![doc(10, false)])).unwrap();
        store.flush().unwrap();
        drop(store);
        assert_eq!(newest_snapshot(dir.path()), opened);
        read_back(&SledDocStore::open(dir.path()).unwrap(), 0..11);

        // A store moved away while open is not made again where it was.
        let moved = dir.path().with_extension("dropped");
        let mut store = SledDocStore::open(dir.path()).unwrap();
        store.refresh_after = 1;
        store.apply(put(vec![doc(11, false)])).unwrap();
        std::fs::rename(dir.path(), &moved).unwrap();
        drop(store);
        assert!(!dir.path().exists());
        std::fs::remove_dir_all(&moved).unwrap();
    }

    #[test]
    fn removed_chunks_become_garbage_that_a_compaction_drops() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledDocStore::open(dir.path()).unwrap();
        store.compact_min = 1;
        store
            .apply(put((0..10).map(|n| doc(n, false)).collect()))
            .unwrap();
        let full = store.log.reader().end();
        assert_eq!(store.garbage.load(Ordering::SeqCst), 0);
        // Four of ten removed: garbage, not yet half.
        let delete = |docs: std::ops::Range<usize>| Change {
            delete_docs: docs.map(|n| doc(n, false).record.id).collect(),
            ..Change::default()
        };
        store.apply(delete(0..4)).unwrap();
        assert_eq!(store.log.reader().generation(), 0);
        assert!(store.garbage.load(Ordering::SeqCst) * 3 > full);
        read_back(&store, 4..10);
        // Two more: past half, so the live six are copied to a new file.
        store.apply(delete(4..6)).unwrap();
        assert_eq!(store.log.reader().generation(), 1);
        assert_eq!(store.garbage.load(Ordering::SeqCst), 0);
        assert!(store.log.reader().end() * 2 < full);
        read_back(&store, 6..10);
        assert!(
            store
                .chunk(&doc(5, false).chunks[0].0.id)
                .unwrap()
                .is_none()
        );
        drop(store);
        let store = SledDocStore::open(dir.path()).unwrap();
        read_back(&store, 6..10);
        let logs: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .collect();
        assert_eq!(logs.len(), 1);
    }

    #[test]
    fn a_damaged_chunk_log_is_an_error_naming_the_slot_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledDocStore::open(dir.path()).unwrap();
        store
            .apply(put((0..3).map(|n| doc(n, false)).collect()))
            .unwrap();
        let end = store.log.reader().end();
        drop(store);
        let path = dir.path().join(super::super::log::file_name(0));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let store = SledDocStore::open(dir.path()).unwrap();
        let last_doc = doc(2, false);
        let err = store.chunk(&last_doc.chunks[1].0.id).unwrap_err();
        assert!(err.to_string().contains("slot 5"), "{err}");
        read_back(&store, 0..2);
        // A record whose length claims more than its bytes can expand to is
        // refused before anything that size is allocated.
        assert!(unpack(&[0xff, 0xff, 0xff, 0x7f, 0x10, 0x41], Slot(0)).is_err());
        let packed = pack(&store.chunk_at(Slot(0)).unwrap().unwrap()).unwrap();
        assert!(unpack(&packed[..packed.len() - 1], Slot(0)).is_err());
        // Cut short: the store refuses to open rather than lose chunks.
        drop(store);
        std::fs::write(&path, &bytes[..(end / 2) as usize]).unwrap();
        let err = SledDocStore::open(dir.path()).err().expect("refused");
        assert!(err.to_string().contains("cut short"), "{err}");
    }
}
