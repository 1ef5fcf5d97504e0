//! The chunk log: each chunk's f32 vector and stored record, written once
//! to an append-only file beside sled and read back by offset.
//!
//! sled keeps small records well but takes about four times the bytes of
//! large values it holds (its pages are rewritten as they change), and a
//! chunk's vector and text are most of an index. So the doc store keeps in
//! sled only where each chunk lies here ([`Location`]), the file's name and
//! the end of what sled has committed; the bytes live in this file.
//!
//! A record is `crc(vector) u32 | crc(record) u32 | vector | record`, both
//! CRC-32 (little-endian). Records are appended (and synced) before the
//! sled batch that names them is applied, so sled never names bytes that
//! were not written; whatever lies past sled's end (a write killed half
//! way) is cut off on open. A removed chunk's bytes stay as garbage until
//! [`ChunkLog::compact`] copies the live records into a new file.
//!
//! Every read is checked against the file's end and both checksums: a
//! damaged or hostile file is an error naming the slot, never a read out of
//! bounds or an allocation sized by the file.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use crate::error::{Error, Result};
use crate::types::Slot;

/// Bytes before each record's payload: its two checksums.
const HEADER: u64 = 8;
/// The largest vector a location may name (262,144 f32 components).
const MAX_VECTOR_BYTES: u32 = 1 << 20;
/// The largest stored record a location may name.
const MAX_RECORD_BYTES: u32 = 64 << 20;

/// Where one chunk lies in the log: sled's value for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Byte offset of the record's header.
    pub offset: u64,
    /// Bytes of the vector.
    pub vector_len: u32,
    /// Bytes of the stored record.
    pub record_len: u32,
}

impl Location {
    /// Bytes the record takes in the file, header included.
    pub fn span(&self) -> u64 {
        HEADER + self.vector_len as u64 + self.record_len as u64
    }

    /// The 16 bytes sled keeps.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.offset.to_le_bytes());
        out[8..12].copy_from_slice(&self.vector_len.to_le_bytes());
        out[12..].copy_from_slice(&self.record_len.to_le_bytes());
        out
    }

    /// Reads what [`Location::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8], slot: Slot) -> Result<Self> {
        let bytes: &[u8; 16] = bytes
            .try_into()
            .map_err(|_| damaged(slot, "its location is not 16 bytes"))?;
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        Ok(Location {
            offset: u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            vector_len: word(8),
            record_len: word(12),
        })
    }
}

/// The open log file and how far it is written.
pub struct Active {
    file: File,
    generation: u64,
    end: AtomicU64,
}

/// The append-only chunk log of one doc store.
pub struct ChunkLog {
    dir: PathBuf,
    active: RwLock<Active>,
    writer: Mutex<()>,
}

fn damaged(slot: Slot, why: impl std::fmt::Display) -> Error {
    Error::store(
        "docs",
        format!(
            "the chunk log's record for slot {} is damaged: {why}",
            slot.0
        ),
    )
}

/// The file name of generation `generation`.
pub fn file_name(generation: u64) -> String {
    format!("chunks-{generation:06}.log")
}

fn is_log_name(name: &str) -> bool {
    name.strip_prefix("chunks-")
        .and_then(|rest| rest.strip_suffix(".log"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Encodes one record: header, vector, stored record.
fn encode(vector: &[u8], record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER as usize + vector.len() + record.len());
    out.extend_from_slice(&crc32fast::hash(vector).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
    out.extend_from_slice(vector);
    out.extend_from_slice(record);
    out
}

impl Active {
    /// The end sled may name.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::SeqCst)
    }

    /// The generation of the file.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn check(&self, loc: Location, slot: Slot) -> Result<()> {
        if loc.vector_len > MAX_VECTOR_BYTES || loc.record_len > MAX_RECORD_BYTES {
            return Err(damaged(slot, "it names an oversized record"));
        }
        if loc
            .offset
            .checked_add(loc.span())
            .is_none_or(|e| e > self.end())
        {
            return Err(damaged(slot, "it lies past the end of the log"));
        }
        Ok(())
    }

    fn read_at(&self, at: u64, len: usize, slot: Slot) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, at)
            .map_err(|e| damaged(slot, e))?;
        Ok(buf)
    }

    /// Asks the kernel to start reading the records at `locs` into its
    /// page cache, all at once, so that the reads that follow wait on the
    /// disk in parallel rather than one after another. Only advice: where
    /// it fails the reads are slower, not wrong (logged at debug).
    pub fn will_need(&self, locs: &[Location]) {
        for loc in locs {
            if let Err(e) = super::prewarm::will_need(&self.file, loc.offset, loc.span()) {
                tracing::debug!(offset = loc.offset, error = %e, "read-ahead advice failed");
                return;
            }
        }
    }

    /// The vector bytes of the record at `loc`, checked.
    pub fn vector(&self, loc: Location, slot: Slot) -> Result<Vec<u8>> {
        self.check(loc, slot)?;
        let mut bytes =
            self.read_at(loc.offset, (HEADER + loc.vector_len as u64) as usize, slot)?;
        let crc = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
        let vector = bytes.split_off(HEADER as usize);
        if crc32fast::hash(&vector) != crc {
            return Err(damaged(slot, "its vector fails its checksum"));
        }
        Ok(vector)
    }

    /// The stored-record bytes at `loc`, checked.
    pub fn record(&self, loc: Location, slot: Slot) -> Result<Vec<u8>> {
        self.check(loc, slot)?;
        let header = self.read_at(loc.offset, HEADER as usize, slot)?;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let at = loc.offset + HEADER + loc.vector_len as u64;
        let record = self.read_at(at, loc.record_len as usize, slot)?;
        if crc32fast::hash(&record) != crc {
            return Err(damaged(slot, "its record fails its checksum"));
        }
        Ok(record)
    }

    /// The whole record at `loc` (header included), checked: what a
    /// compaction copies.
    fn raw(&self, loc: Location, slot: Slot) -> Result<Vec<u8>> {
        let vector = self.vector(loc, slot)?;
        let record = self.record(loc, slot)?;
        Ok(encode(&vector, &record))
    }
}

impl ChunkLog {
    /// Opens generation `generation` in `dir`, of which sled has committed
    /// `end` bytes: a longer file is cut back to `end` (a write killed half
    /// way), a shorter one is refused (bytes sled names are gone). Log files
    /// of other generations (a compaction that did not finish, or one that
    /// did) are deleted.
    pub fn open(dir: &Path, generation: u64, end: u64) -> Result<Self> {
        let path = dir.join(file_name(generation));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(end == 0)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len < end {
            return Err(Error::store(
                "docs",
                format!(
                    "the chunk log {} holds {len} bytes but the store names {end}: it was cut short",
                    path.display()
                ),
            ));
        }
        if len > end {
            tracing::info!(path = %path.display(), dropped = len - end, "cutting an unfinished write off the chunk log");
            file.set_len(end).map_err(|e| Error::io(&path, e))?;
            file.sync_data().map_err(|e| Error::io(&path, e))?;
        }
        remove_other_generations(dir, generation)?;
        Ok(ChunkLog {
            dir: dir.to_path_buf(),
            active: RwLock::new(Active {
                file,
                generation,
                end: AtomicU64::new(end),
            }),
            writer: Mutex::new(()),
        })
    }

    /// The open file, for reads: held across reading a location from sled
    /// and reading the bytes, so a compaction cannot switch files between.
    pub fn reader(&self) -> RwLockReadGuard<'_, Active> {
        self.active.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `records` (vector bytes, stored-record bytes) and syncs them;
    /// then calls `commit` with their locations, the generation and the new
    /// end, and returns what it returned. `commit` (applying the sled
    /// batch that names them) runs before another append may start; when
    /// it fails the end goes back, so the bytes are garbage nobody names.
    pub fn append<T>(
        &self,
        records: &[(Vec<u8>, Vec<u8>)],
        commit: impl FnOnce(&[Location], u64, u64) -> Result<T>,
    ) -> Result<T> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let active = self.reader();
        let start = active.end();
        let mut bytes = Vec::new();
        let mut locations = Vec::with_capacity(records.len());
        for (vector, record) in records {
            let too_big = || Error::store("docs", "a chunk too large for the chunk log");
            let loc = Location {
                offset: start + bytes.len() as u64,
                vector_len: u32::try_from(vector.len()).map_err(|_| too_big())?,
                record_len: u32::try_from(record.len()).map_err(|_| too_big())?,
            };
            if loc.vector_len > MAX_VECTOR_BYTES || loc.record_len > MAX_RECORD_BYTES {
                return Err(too_big());
            }
            bytes.extend_from_slice(&encode(vector, record));
            locations.push(loc);
        }
        let path = self.dir.join(file_name(active.generation));
        if !bytes.is_empty() {
            active
                .file
                .write_all_at(&bytes, start)
                .and_then(|()| active.file.sync_data())
                .map_err(|e| Error::io(&path, e))?;
        }
        let end = start + bytes.len() as u64;
        active.end.store(end, Ordering::SeqCst);
        commit(&locations, active.generation, end)
            .inspect_err(|_| active.end.store(start, Ordering::SeqCst))
    }

    /// Copies the live records `live` (slot and location, as sled names
    /// them) into the next generation's file, then calls `switch` with the
    /// new locations, generation and end while no read is in flight; the
    /// old file is deleted once `switch` (which makes sled name the new
    /// file, durably) returned. Appends wait until it is done.
    pub fn compact(
        &self,
        live: impl Iterator<Item = Result<(Slot, Location)>>,
        switch: impl FnOnce(&[(Slot, Location)], u64, u64) -> Result<()>,
    ) -> Result<()> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (generation, old_path) = {
            let active = self.reader();
            (
                active.generation + 1,
                self.dir.join(file_name(active.generation)),
            )
        };
        let path = self.dir.join(file_name(generation));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut out = BufWriter::new(&file);
        let mut moved = Vec::new();
        let mut end = 0u64;
        {
            let active = self.reader();
            for item in live {
                let (slot, loc) = item?;
                let raw = active.raw(loc, slot)?;
                out.write_all(&raw).map_err(|e| Error::io(&path, e))?;
                moved.push((slot, Location { offset: end, ..loc }));
                end += raw.len() as u64;
            }
        }
        out.flush().map_err(|e| Error::io(&path, e))?;
        drop(out);
        file.sync_all().map_err(|e| Error::io(&path, e))?;
        sync_dir(&self.dir)?;
        let mut active = self.active.write().unwrap_or_else(|p| p.into_inner());
        switch(&moved, generation, end)?;
        *active = Active {
            file,
            generation,
            end: AtomicU64::new(end),
        };
        drop(active);
        std::fs::remove_file(&old_path).map_err(|e| Error::io(&old_path, e))
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Deletes the log files in `dir` other than generation `keep`'s.
fn remove_other_generations(dir: &Path, keep: u64) -> Result<()> {
    let keep = file_name(keep);
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_log_name(name) && name != keep {
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing a chunk log no longer named");
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| (vec![i as u8; 16], format!("record {i}").into_bytes()))
            .collect()
    }

    fn append(log: &ChunkLog, n: usize) -> (Vec<Location>, u64) {
        log.append(&records(n), |locs, _, end| Ok((locs.to_vec(), end)))
            .unwrap()
    }

    #[test]
    fn records_read_back_and_a_killed_write_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let log = ChunkLog::open(dir.path(), 0, 0).unwrap();
        let (locs, end) = append(&log, 3);
        assert_eq!(log.reader().record(locs[2], Slot(2)).unwrap(), b"record 2");
        assert_eq!(
            log.reader().vector(locs[1], Slot(1)).unwrap(),
            vec![1u8; 16]
        );
        // A write whose sled batch never landed: its bytes are past `end`.
        let failed: Result<()> = log.append(&records(2), |_, _, _| Err(Error::store("t", "no")));
        assert!(failed.is_err());
        assert_eq!(log.reader().end(), end);
        drop(log);
        let path = dir.path().join(file_name(0));
        assert!(std::fs::metadata(&path).unwrap().len() > end);
        let log = ChunkLog::open(dir.path(), 0, end).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end);
        assert_eq!(log.reader().record(locs[0], Slot(0)).unwrap(), b"record 0");
        // A file shorter than sled's end is refused, not read.
        drop(log);
        assert!(ChunkLog::open(dir.path(), 0, end + 1).is_err());
    }

    #[test]
    fn damaged_or_hostile_locations_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let log = ChunkLog::open(dir.path(), 0, 0).unwrap();
        let (locs, end) = append(&log, 2);
        let reader = log.reader();
        let past = Location {
            offset: end - 4,
            ..locs[1]
        };
        assert!(reader.record(past, Slot(1)).is_err());
        let huge = Location {
            record_len: u32::MAX,
            ..locs[1]
        };
        assert!(reader.record(huge, Slot(1)).is_err());
        let wrapping = Location {
            offset: u64::MAX - 2,
            ..locs[1]
        };
        assert!(reader.vector(wrapping, Slot(1)).is_err());
        assert!(Location::from_bytes(&[0u8; 15], Slot(1)).is_err());
        drop(reader);
        // A flipped byte in a record: that record fails its checksum.
        let path = dir.path().join(file_name(0));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = locs[1].offset as usize + HEADER as usize + 16 + 2;
        bytes[last] ^= 0x20;
        std::fs::write(&path, bytes).unwrap();
        let reader = log.reader();
        assert!(reader.record(locs[1], Slot(1)).is_err());
        assert!(reader.vector(locs[1], Slot(1)).is_ok());
        assert!(reader.record(locs[0], Slot(0)).is_ok());
    }

    #[test]
    fn compaction_keeps_the_live_records_and_drops_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = ChunkLog::open(dir.path(), 0, 0).unwrap();
        let (locs, _) = append(&log, 4);
        let live = [(Slot(1), locs[1]), (Slot(3), locs[3])];
        let mut named = Vec::new();
        log.compact(live.into_iter().map(Ok), |moved, generation, end| {
            named = moved.to_vec();
            assert_eq!(generation, 1);
            assert_eq!(end, locs[1].span() + locs[3].span());
            Ok(())
        })
        .unwrap();
        assert!(!dir.path().join(file_name(0)).exists());
        let reader = log.reader();
        assert_eq!(reader.generation(), 1);
        assert_eq!(reader.record(named[1].1, Slot(3)).unwrap(), b"record 3");
        drop(reader);
        // A compaction whose switch failed leaves the old file named; its
        // new file is deleted on the next open.
        let failed = log.compact(named.clone().into_iter().map(Ok), |_, _, _| {
            Err(Error::store("t", "no"))
        });
        assert!(failed.is_err());
        let end = log.reader().end();
        drop(log);
        assert!(dir.path().join(file_name(2)).exists());
        let log = ChunkLog::open(dir.path(), 1, end).unwrap();
        assert!(!dir.path().join(file_name(2)).exists());
        assert_eq!(
            log.reader().record(named[0].1, Slot(1)).unwrap(),
            b"record 1"
        );
    }
}
