//! A GGUF model's int8 weights kept on disk between runs, so a process
//! that loads the model (a one-shot `lore ask`) reads them back instead of
//! requantizing the whole model again. One file per model under
//! `$XDG_CACHE_HOME/lore/int8` (else `~/.cache/lore/int8`), named after the
//! model and keyed by its path, size and modification time and by this
//! format's version: a changed model file is another key, and its old
//! file is deleted when the new one is written. The file ends in a CRC-32
//! of everything before it; a file that is missing, short, damaged or of
//! another version is ignored (and written again), never trusted. It is
//! a cache: every failure falls back to requantizing, and is logged; it is
//! not written where it would leave less than a gigabyte free beyond
//! twice its size, so it never fills the disk an index is on.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::kernels::Int8Weights;

/// The file's first bytes: the format and its version.
const MAGIC: &[u8; 8] = b"LOREI8\x00\x01";
/// Longest weight name stored.
const MAX_NAME: usize = 256;

/// Where one model's int8 weights are kept.
pub struct WeightCache {
    path: PathBuf,
    /// What every version of this model's cache is named from.
    stem: String,
}

impl WeightCache {
    /// The cache of the model at `gguf` in the user's cache directory;
    /// `None` without one (no `$XDG_CACHE_HOME` or `$HOME`) or when the
    /// model's file cannot be read.
    pub fn for_model(gguf: &Path) -> Option<WeightCache> {
        WeightCache::in_dir(&cache_home()?.join("int8"), gguf)
    }

    /// The cache of the model at `gguf` in `dir`.
    pub fn in_dir(dir: &Path, gguf: &Path) -> Option<WeightCache> {
        let (stem, mut key) = identity(gguf)?;
        key.update(MAGIC);
        let hex = key.finalize().to_hex();
        Some(WeightCache {
            path: dir.join(format!("{stem}-{}.int8", &hex[..16])),
            stem,
        })
    }

    /// The weights it holds, by name; `None` (logged when the file exists)
    /// when it is missing, short, damaged or of another version.
    pub fn load(&self) -> Option<HashMap<String, Int8Weights>> {
        let file = File::open(&self.path).ok()?;
        match read(file) {
            Ok(weights) => Some(weights),
            Err(error) => {
                tracing::warn!(
                    path = %self.path.display(),
                    %error,
                    "ignoring the int8 weight cache; the model is requantized"
                );
                None
            }
        }
    }

    /// Writes `weights` to a temporary file and renames it in place, then
    /// deletes this model's caches for other keys. A failure is logged:
    /// the next load requantizes again.
    pub fn save(&self, weights: &[(String, &Int8Weights)]) {
        if let Err(error) = self.write(weights) {
            tracing::warn!(
                path = %self.path.display(),
                %error,
                "cannot keep the int8 weights; each load requantizes the model"
            );
        }
    }

    fn write(&self, weights: &[(String, &Int8Weights)]) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let size: u64 = weights.iter().map(|(_, w)| w.stored_bytes()).sum();
        check_room(dir, size)?;
        replace_file(&self.path, |file| {
            let mut out = Hashing::new(file);
            out.write_all(MAGIC)?;
            out.write_all(&(weights.len() as u32).to_le_bytes())?;
            for (name, w) in weights {
                out.write_all(&(name.len() as u32).to_le_bytes())?;
                out.write_all(name.as_bytes())?;
                w.write_to(&mut out)?;
            }
            let crc = out.crc.clone().finalize();
            out.inner.write_all(&crc.to_le_bytes())
        })?;
        self.remove_others(dir);
        Ok(())
    }

    /// Deletes this model's caches under other keys (an older file).
    fn remove_others(&self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let prefix = format!("{}-", self.stem);
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let other_key = name
                .strip_prefix(&prefix)
                .is_some_and(|rest| rest.len() == 16 + ".int8".len() && rest.ends_with(".int8"));
            if other_key && path != self.path {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// What names a model file on disk: its name and a hash of its path (so
/// two models of one name stay apart), and a hasher already fed its
/// path, size, modification time and this machine's architecture, to
/// which a cache adds what else its contents depend on. `None` when the
/// file cannot be read.
pub fn identity(gguf: &Path) -> Option<(String, blake3::Hasher)> {
    let canonical = gguf.canonicalize().ok()?;
    let meta = std::fs::metadata(&canonical).ok()?;
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let path = canonical.as_os_str().as_encoded_bytes();
    let mut key = blake3::Hasher::new();
    key.update(path);
    key.update(&meta.len().to_le_bytes());
    key.update(&modified.as_nanos().to_le_bytes());
    key.update(std::env::consts::ARCH.as_bytes());
    let place = blake3::hash(path).to_hex();
    let name = canonical.file_stem()?.to_string_lossy();
    Some((format!("{name}-{}", &place[..8]), key))
}

/// The user's cache directory for lore: `$XDG_CACHE_HOME/lore`, else
/// `~/.cache/lore`.
pub fn cache_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|base| base.join("lore"))
}

/// Free bytes a cache write leaves on its disk beyond twice its size.
const HEADROOM: u64 = 1 << 30;

/// Writes `path` through `write` into a temporary file of its own beside
/// it (other threads and processes may write the same file at once),
/// syncs it and renames it into place; on a failure the temporary file
/// is removed and `path` is as it was.
pub fn replace_file(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let temporary = path.with_extension(format!("tmp-{}", crate::types::random_id()));
    let written = (|| {
        let mut out = BufWriter::new(File::create(&temporary)?);
        write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    if let Err(e) = written.and_then(|()| std::fs::rename(&temporary, path)) {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    Ok(())
}

/// An error when writing `size` bytes in `dir` would leave the disk less
/// than its headroom: the disk is the index's first.
pub fn check_room(dir: &Path, size: u64) -> std::io::Result<()> {
    match free_bytes(dir) {
        Some(free) if !room_for(size, free) => Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!("{size} bytes to write and {free} free: the disk is left to the index"),
        )),
        _ => Ok(()),
    }
}

/// Whether writing `size` bytes where `free` are free leaves the disk
/// its headroom.
fn room_for(size: u64, free: u64) -> bool {
    free >= size.saturating_mul(2).saturating_add(HEADROOM)
}

/// Bytes free to an unprivileged writer on the file system of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: `path` is a valid C string and `stats` a zeroed struct
        // statvfs fills.
        let stats = unsafe {
            let mut stats: libc::statvfs = std::mem::zeroed();
            (libc::statvfs(path.as_ptr(), &mut stats) == 0).then_some(stats)
        }?;
        // Both are narrower than u64 on some targets.
        #[allow(clippy::useless_conversion)]
        Some(u64::from(stats.f_bavail).saturating_mul(u64::from(stats.f_frsize)))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Reads a whole cache file, checking its sizes against the file's length
/// and its CRC-32 at the end.
fn read(file: File) -> std::io::Result<HashMap<String, Int8Weights>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let length = file.metadata()?.len();
    let body = length.checked_sub(4).ok_or_else(|| bad("too short"))?;
    let mut input = Hashing::new(BufReader::with_capacity(1 << 20, file).take(body));
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(bad("another format or version"));
    }
    let mut four = [0u8; 4];
    input.read_exact(&mut four)?;
    let count = u32::from_le_bytes(four);
    let mut weights = HashMap::new();
    for _ in 0..count {
        input.read_exact(&mut four)?;
        let len = u32::from_le_bytes(four) as usize;
        if len > MAX_NAME {
            return Err(bad("a name too long"));
        }
        let mut name = vec![0u8; len];
        input.read_exact(&mut name)?;
        let name = String::from_utf8(name).map_err(|_| bad("a name not in UTF-8"))?;
        let left = body.saturating_sub(input.read);
        weights.insert(name, Int8Weights::read_from(&mut input, left)?);
    }
    if input.read != body {
        return Err(bad("bytes after the last weight"));
    }
    let crc = input.crc.clone().finalize();
    let mut inner = input.inner.into_inner();
    inner.read_exact(&mut four)?;
    if u32::from_le_bytes(four) != crc {
        return Err(bad("its checksum does not match"));
    }
    Ok(weights)
}

/// A reader or writer that keeps a CRC-32 of the bytes through it.
struct Hashing<T> {
    inner: T,
    crc: crc32fast::Hasher,
    read: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Hashing {
            inner,
            crc: crc32fast::Hasher::new(),
            read: 0,
        }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(seed: usize) -> Int8Weights {
        let (n, k) = (48, 40);
        let w: Vec<f32> = (0..n * k)
            .map(|i| (((i + seed) * 7 % 19) as f32 - 9.0) / 4.0)
            .collect();
        Int8Weights::new(&w, k)
    }

    fn cache(dir: &Path) -> WeightCache {
        let model = dir.join("model.gguf");
        if !model.exists() {
            std::fs::write(&model, b"not really a model").unwrap();
        }
        WeightCache::in_dir(&dir.join("int8"), &model).unwrap()
    }

    #[test]
    fn weights_come_back_as_they_were_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        assert!(cache.load().is_none(), "nothing kept yet");
        let (a, b) = (weights(1), weights(2));
        cache.save(&[("blk.0.attn_q".into(), &a), ("output".into(), &b)]);
        let back = cache.load().unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back["blk.0.attn_q"], a);
        assert_eq!(back["output"], b);
    }

    #[test]
    fn writers_at_the_same_time_leave_one_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let (w, cache) = (weights(6), cache(dir.path()));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| cache.save(&[("output".into(), &w)]));
            }
        });
        assert_eq!(cache.load().unwrap()["output"], w);
        let files = std::fs::read_dir(dir.path().join("int8")).unwrap().count();
        assert_eq!(files, 1, "no temporary file left behind");
    }

    #[test]
    fn a_damaged_or_short_cache_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let w = weights(3);
        cache.save(&[("output".into(), &w)]);
        let good = std::fs::read(&cache.path).unwrap();
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x10;
        let mut bad_magic = good.clone();
        bad_magic[7] = 9;
        let mut huge_name = good.clone();
        huge_name[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        for damaged in [
            flipped,
            bad_magic,
            huge_name,
            good[..good.len() - 1].to_vec(),
            good[..20].to_vec(),
            Vec::new(),
        ] {
            std::fs::write(&cache.path, &damaged).unwrap();
            assert!(cache.load().is_none(), "{} bytes trusted", damaged.len());
        }
    }

    #[test]
    fn a_nearly_full_disk_is_left_to_the_index() {
        let gb = 1u64 << 30;
        assert!(room_for(gb / 2, 3 * gb));
        assert!(
            !room_for(gb / 2, 2 * gb - 1),
            "a gigabyte beyond twice the file"
        );
        assert!(!room_for(u64::MAX, u64::MAX - 1));
        let free = free_bytes(&std::env::temp_dir()).expect("statvfs answers");
        assert!(free > 0);
    }

    #[test]
    fn a_changed_model_is_another_key_and_replaces_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let old = cache(dir.path());
        old.save(&[("output".into(), &weights(4))]);
        // The model file changes: its size (and time) differ.
        std::fs::write(dir.path().join("model.gguf"), b"another model, longer").unwrap();
        let new = cache(dir.path());
        assert_ne!(new.path, old.path);
        assert!(
            new.load().is_none(),
            "the old model's weights are not the new one's"
        );
        new.save(&[("output".into(), &weights(5))]);
        assert!(!old.path.exists(), "the old file is deleted");
        assert!(new.load().is_some());
    }
}
