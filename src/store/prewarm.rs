//! Reading an index's hot files into the kernel's page cache when it
//! opens, in the background: the files every search touches at random
//! (the vector segment, BM25's term dictionaries, postings and norms,
//! sled's records), so the first searches after an open do not each wait
//! on the disk. Opening stays a mapping; the reads are the kernel's
//! (`posix_fadvise(WILLNEED)`), not copies into this process, so resident
//! memory does not grow. They are bounded: never more than a quarter of
//! the memory the kernel reports available, the files taken in the order
//! a search needs them. The chunk log (texts and f32 vectors, most of an
//! index) is left out: a search reads a few dozen records of it.

use std::path::{Path, PathBuf};

/// BM25's per-segment files a query reads (positions and stored fields
/// are left out: phrase queries and stored documents are not searched).
const KEYWORD_FILES: [&str; 4] = ["term", "idx", "fieldnorm", "fast"];

/// The hot files of the index in `dir`, in the order a search needs
/// them, with their sizes.
pub fn hot_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    let mut add = |sub: &str, keep: &dyn Fn(&Path) -> bool| {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(meta) if meta.is_file() && keep(&path) => files.push((path, meta.len())),
                _ => {}
            }
        }
    };
    let ext = |path: &Path| path.extension().and_then(|e| e.to_str()).map(str::to_owned);
    add("vectors", &|p| ext(p).as_deref() == Some("seg"));
    add("keywords", &|p| {
        ext(p).is_some_and(|e| KEYWORD_FILES.contains(&e.as_str()))
    });
    add("docs", &|p| p.file_name().is_some_and(|n| n == "db"));
    files
}

/// The files to read ahead: `files` in order, as long as their total
/// stays within `budget` bytes.
pub fn within(files: Vec<(PathBuf, u64)>, budget: u64) -> Vec<PathBuf> {
    let mut left = budget;
    files
        .into_iter()
        .take_while(|(_, len)| {
            let fits = *len <= left;
            left = left.saturating_sub(*len);
            fits
        })
        .map(|(path, _)| path)
        .collect()
}

/// Starts reading the hot files of the index in `dir` ahead, on a thread
/// of its own; returns at once.
pub fn start(dir: &Path) {
    let Some(available) = available_memory() else {
        tracing::debug!("no MemAvailable in /proc/meminfo: nothing read ahead");
        return;
    };
    let files = within(hot_files(dir), available / 4);
    if files.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("lore-prewarm".into())
        .spawn(move || {
            for path in files {
                if let Err(e) = read_ahead(&path) {
                    tracing::debug!(path = %path.display(), error = %e, "read-ahead failed");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the read-ahead thread");
    }
}

/// Bytes of memory the kernel reports available (`MemAvailable`).
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Asks the kernel to read `path` into its page cache.
fn read_ahead(path: &Path) -> std::io::Result<()> {
    will_need(&std::fs::File::open(path)?, 0, 0)
}

/// `posix_fadvise(WILLNEED)`: asks the kernel to start reading `len`
/// bytes of `file` from `at` (0: to its end) into its page cache. It reads
/// nothing into this process and returns at once.
#[cfg(target_os = "linux")]
pub(super) fn will_need(file: &std::fs::File, at: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(at), Ok(len)) = (libc::off_t::try_from(at), libc::off_t::try_from(len)) else {
        return Ok(());
    };
    // SAFETY: a valid descriptor, owned by `file` for the call; the advice
    // reads nothing into this process.
    match unsafe { libc::posix_fadvise(file.as_raw_fd(), at, len, libc::POSIX_FADV_WILLNEED) } {
        0 => Ok(()),
        errno => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

/// Elsewhere reads wait on the disk when they come.
#[cfg(not(target_os = "linux"))]
pub(super) fn will_need(_file: &std::fs::File, _at: u64, _len: u64) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_files_come_in_search_order_and_leave_out_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        for (sub, name, len) in [
            ("vectors", "segment-1.seg", 10),
            ("vectors", "meta.json", 5),
            ("keywords", "a.term", 3),
            ("keywords", "a.pos", 7),
            ("keywords", "a.store", 7),
            ("docs", "db", 20),
            ("docs", "chunks-000000.log", 100),
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join(name), vec![0u8; len]).unwrap();
        }
        let hot = hot_files(dir.path());
        let names: Vec<String> = hot
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["segment-1.seg", "a.term", "db"]);
        assert_eq!(within(hot.clone(), 13).len(), 2);
        assert_eq!(within(hot.clone(), 12).len(), 1);
        assert!(within(hot, 9).is_empty());
        for path in within(hot_files(dir.path()), u64::MAX) {
            read_ahead(&path).unwrap();
        }
    }
}
