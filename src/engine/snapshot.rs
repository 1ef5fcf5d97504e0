//! [`Engine::snapshot`]: a consistent, self-contained copy of the index
//! directory (every collection, the key store), made while the engine
//! keeps serving reads. Writes wait: the writer lock is held while every
//! open collection checkpoints and the files are copied (sled flushed and
//! idle, tantivy committed, the graph's newest dump complete), so the copy
//! is what a clean shutdown would have left. The copy is written under a
//! dot-named temporary directory beside the target and renamed into place,
//! so a snapshot directory either is complete or does not exist.
//!
//! [`Engine::publish_snapshot`] keeps the newest few in one folder with a
//! `current` link to the newest, for read replicas (`lore serve
//! --read-only`) to copy from.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Engine;
use crate::error::{Error, Result};

/// Files of the index directory a snapshot leaves out: the running
/// server's address and token, and spooled standard input.
fn left_out(name: &str) -> bool {
    name == crate::announce::ANNOUNCEMENT || name.starts_with("import-stdin-")
}

/// Snapshots [`Engine::publish_snapshot`] keeps.
const KEEP: usize = 3;
/// The link to the newest published snapshot.
pub const CURRENT: &str = "current";

/// What a snapshot wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotReport {
    /// Where.
    pub path: PathBuf,
    /// Files copied.
    pub files: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Wall time (writes waited this long).
    pub seconds: f64,
}

impl Engine {
    /// Writes a snapshot of the whole index directory to `target`, which
    /// must not exist.
    pub fn snapshot(&self, target: &Path) -> Result<SnapshotReport> {
        let start = Instant::now();
        if target.exists() {
            return Err(Error::Conflict(format!(
                "{} already exists; a snapshot needs a new directory",
                target.display()
            )));
        }
        let name = target
            .file_name()
            .ok_or_else(|| {
                Error::InvalidRequest(format!("{} names no directory", target.display()))
            })?
            .to_string_lossy()
            .into_owned();
        let parent = target.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let inside = |dir: &Path| {
            let index = self
                .dir()
                .canonicalize()
                .map_err(|e| Error::io(self.dir(), e))?;
            let dir = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
            Ok::<_, Error>(dir.starts_with(index))
        };
        if inside(parent)? {
            return Err(Error::InvalidRequest(format!(
                "{} is inside the index directory; a snapshot goes elsewhere",
                target.display()
            )));
        }
        remove_abandoned_temporaries(self.dir());
        remove_abandoned_temporaries(parent);
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        let copied = self.copy_into(&tmp);
        let (files, bytes) = match copied {
            Ok(counts) => counts,
            Err(e) => {
                // A full disk or a failed read leaves nothing behind.
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        std::fs::rename(&tmp, target).map_err(|e| Error::io(target, e))?;
        sync_dir(parent)?;
        Ok(SnapshotReport {
            path: target.to_path_buf(),
            files,
            bytes,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Checkpoints every collection and copies the index directory to
    /// `tmp`, under the writer lock; returns files and bytes.
    fn copy_into(&self, tmp: &Path) -> Result<(u64, u64)> {
        let counts = {
            let _writer = self.writer()?;
            for name in self.collection_names()? {
                self.collection(&name)?.index().checkpoint()?;
            }
            copy_tree(self.dir(), tmp, true)?
        };
        sync_dir(tmp)?;
        Ok(counts)
    }

    /// Writes a snapshot into `dir` as `snap-<unix ms>`, points
    /// `dir/current` at it (an atomic rename of a new link) and deletes
    /// all but the newest few.
    pub fn publish_snapshot(&self, dir: &Path) -> Result<SnapshotReport> {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let name = format!("snap-{millis:015}");
        let report = self.snapshot(&dir.join(&name))?;
        let link = dir.join(format!(".{CURRENT}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&name, &link).map_err(|e| Error::io(&link, e))?;
        std::fs::rename(&link, dir.join(CURRENT)).map_err(|e| Error::io(dir, e))?;
        sync_dir(dir)?;
        remove_old_snapshots(dir);
        Ok(report)
    }
}

/// Copies the tree at `from` to `to` (created), leaving out the index
/// directory's own run-time files at the `top`; returns files and bytes.
fn copy_tree(from: &Path, to: &Path, top: bool) -> Result<(u64, u64)> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    let (mut files, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let name = entry.file_name();
        if top && left_out(&name.to_string_lossy()) {
            continue;
        }
        let (source, target) = (entry.path(), to.join(&name));
        let kind = entry.file_type().map_err(|e| Error::io(&source, e))?;
        if kind.is_dir() {
            let (f, b) = copy_tree(&source, &target, false)?;
            files += f;
            bytes += b;
        } else if kind.is_file() {
            bytes += std::fs::copy(&source, &target).map_err(|e| Error::io(&source, e))?;
            std::fs::File::open(&target)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&target, e))?;
            files += 1;
        }
    }
    sync_dir(to)?;
    Ok((files, bytes))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Deletes the temporaries (`.NAME.tmp-PID`) of snapshots and links
/// whose process is gone (killed mid-copy); failures only cost disk
/// space, so they are logged.
fn remove_abandoned_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        let Some(pid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.starts_with('.'))
            .and_then(|n| n.rsplit_once(".tmp-"))
            .and_then(|(_, pid)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if pid <= 0 || process_alive(pid) {
            continue;
        }
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed an abandoned snapshot temporary")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an abandoned snapshot temporary")
            }
        }
    }
}

/// True when process `pid` exists (ours or another user's).
fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let sent = unsafe { libc::kill(pid, 0) };
    sent == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Deletes published snapshots but the newest [`KEEP`]; failures only cost
/// disk space, so they are logged.
fn remove_old_snapshots(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut snapshots: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("snap-"))
        })
        .collect();
    snapshots.sort();
    let old = snapshots.len().saturating_sub(KEEP);
    for path in &snapshots[..old] {
        if let Err(e) = std::fs::remove_dir_all(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an old snapshot");
        }
    }
}
