//! The on-disk tier of the keys and values a loaded model keeps between
//! prompts: the first piece of a prompt (its instructions) and, with reuse
//! at any position on, sources' bodies. A later process with the same
//! model reads them back instead of computing them again (a one-shot
//! `lore ask` otherwise computes its instructions every time). One
//! directory per model and setting under `~/.cache/lore/kv` (keyed by the
//! model file's path, size and time, the int8 switch and the thread count,
//! which the sums' order depends on), one file per entry named by a hash
//! of its key, which the file repeats, with a CRC-32 at the end. The
//! directory is held to a size: the least recently used files go first
//! (a read touches a file). A changed source or model has another key
//! or directory; a damaged, short or foreign file is ignored and
//! replaced. It is a cache: a failure is logged, never an error.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::decoder::{Decoder, Kept};
use super::weights::{cache_home, check_room, identity, replace_file};

/// The files' first bytes: the format and its version.
const MAGIC: &[u8; 8] = b"LOREKV\x00\x01";

/// A model's keys and values on disk, at most `capacity` bytes of them.
pub struct KvDisk {
    dir: PathBuf,
    capacity: u64,
}

impl KvDisk {
    /// The tier of the model at `gguf` run as `setting` describes (what
    /// else its keys and values depend on), in the user's cache directory.
    pub fn for_model(gguf: &Path, setting: &str, capacity: u64) -> Option<KvDisk> {
        KvDisk::in_dir(&cache_home()?.join("kv"), gguf, setting, capacity)
    }

    /// The same in `dir`.
    pub fn in_dir(dir: &Path, gguf: &Path, setting: &str, capacity: u64) -> Option<KvDisk> {
        let (stem, mut key) = identity(gguf)?;
        key.update(MAGIC);
        key.update(setting.as_bytes());
        let hex = key.finalize().to_hex();
        Some(KvDisk {
            dir: dir.join(format!("{stem}-{}", &hex[..16])),
            capacity,
        })
    }

    /// Whether an entry is kept under `key` (not whether it is whole).
    pub fn has(&self, key: &[u8]) -> bool {
        self.file(key).exists()
    }

    fn file(&self, key: &[u8]) -> PathBuf {
        self.dir.join(format!("{}.kv", blake3::hash(key).to_hex()))
    }

    /// The keys and values kept under `key` for `decoder`'s model, if a
    /// whole file holds them.
    pub fn get(&self, decoder: &Decoder, key: &[u8]) -> Option<Kept> {
        let path = self.file(key);
        let file = File::open(&path).ok()?;
        match read(file, decoder, key) {
            Ok(kept) => {
                // Recently used: evicted last.
                let _ = File::options()
                    .append(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Some(kept)
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "ignoring kept keys and values");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Keeps `kept` under `key`, then drops the least recently used files
    /// past the capacity. Failures are logged.
    pub fn put(&self, key: &[u8], kept: &Kept) {
        let size = kept.bytes() as u64;
        if size > self.capacity {
            return;
        }
        if let Err(error) = self.write(key, kept, size) {
            tracing::warn!(dir = %self.dir.display(), %error, "cannot keep keys and values on disk");
        }
        self.evict();
    }

    fn write(&self, key: &[u8], kept: &Kept, size: u64) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        check_room(&self.dir, size)?;
        let mut body = Vec::with_capacity(size as usize + 64);
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&(key.len() as u64).to_le_bytes());
        body.extend_from_slice(key);
        kept.write_to(&mut body)?;
        replace_file(&self.file(key), |out| {
            out.write_all(&body)?;
            out.write_all(&crc32fast::hash(&body).to_le_bytes())
        })
    }

    /// Deletes the least recently used entries until the rest fit, and
    /// what a writer that died left behind an hour ago or more.
    fn evict(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let entries: Vec<_> = entries.flatten().collect();
        let hour = std::time::Duration::from_secs(3600);
        for entry in &entries {
            let stale = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok()?.elapsed().ok());
            let temporary = entry.file_name().to_string_lossy().contains(".tmp-");
            if temporary && stale.is_some_and(|age| age > hour) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .iter()
            .filter(|e| e.path().extension().is_some_and(|x| x == "kv"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.capacity {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

/// Reads one entry, checking its magic, its key, its sizes against the
/// model and the file, and its CRC-32.
fn read(file: File, decoder: &Decoder, key: &[u8]) -> std::io::Result<Kept> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let length = file.metadata()?.len();
    let mut bytes = Vec::with_capacity(length as usize);
    BufReader::new(file).take(length).read_to_end(&mut bytes)?;
    let (body, crc) = bytes
        .split_last_chunk::<4>()
        .ok_or_else(|| bad("too short"))?;
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return Err(bad("its checksum does not match"));
    }
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("another format or version"))?;
    let (len, rest) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| bad("too short"))?;
    let stored = rest
        .get(..u64::from_le_bytes(*len).try_into().unwrap_or(usize::MAX))
        .ok_or_else(|| bad("a key past the end"))?;
    if stored != key {
        return Err(bad("another entry's key"));
    }
    let mut rest = &rest[key.len()..];
    let limit = rest.len() as u64;
    let kept = decoder.read_kept(&mut rest, limit)?;
    if !rest.is_empty() {
        return Err(bad("bytes after the keys and values"));
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entries_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.gguf");
        std::fs::write(&model, b"a model").unwrap();
        let disk = KvDisk::in_dir(&dir.path().join("kv"), &model, "test", 250).unwrap();
        std::fs::create_dir_all(&disk.dir).unwrap();
        let now = std::time::SystemTime::now();
        for (i, key) in [b"old", b"mid", b"new"].iter().enumerate() {
            let path = disk.file(&key[..]);
            std::fs::write(&path, [0u8; 100]).unwrap();
            let age = std::time::Duration::from_secs(100 - 10 * i as u64);
            File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(now - age)
                .unwrap();
        }
        // A temporary file of a writer in progress is not an entry; one
        // left by a writer that died long ago is deleted.
        std::fs::write(disk.dir.join("x.tmp-1"), [0u8; 500]).unwrap();
        let dead = disk.dir.join("y.tmp-2");
        std::fs::write(&dead, [0u8; 5]).unwrap();
        File::options()
            .append(true)
            .open(&dead)
            .unwrap()
            .set_modified(now - std::time::Duration::from_secs(7200))
            .unwrap();
        disk.evict();
        assert!(!disk.has(b"old"), "the oldest is dropped");
        assert!(disk.has(b"mid") && disk.has(b"new"));
        assert!(disk.dir.join("x.tmp-1").exists());
        assert!(!dead.exists());
    }

    #[test]
    fn another_model_or_setting_is_another_directory() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.gguf");
        std::fs::write(&model, b"a model").unwrap();
        let at = |setting: &str| KvDisk::in_dir(dir.path(), &model, setting, 1).unwrap().dir;
        assert_eq!(at("int8 true threads 2"), at("int8 true threads 2"));
        assert_ne!(at("int8 true threads 2"), at("int8 true threads 1"));
        let before = at("x");
        std::fs::write(&model, b"another model").unwrap();
        assert_ne!(at("x"), before, "a changed model file");
    }
}
