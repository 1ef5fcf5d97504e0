//! Recursive discovery of the files to ingest, honouring `.gitignore`,
//! `.ignore` and hidden-file rules (the `ignore` crate, as in ripgrep), the
//! include/exclude globs and the size limit. Unreadable entries become
//! [`Skipped`] entries.
//!
//! One rule for symlinks: the walk never leaves its root. Every file is
//! taken by its canonical path, and one whose canonical path is not under
//! the root (a symlink out of the folder) is skipped and says so. Symlinked
//! folders are not descended into (what they point to inside the root is
//! walked anyway, and loops cannot happen). Nothing inside the index
//! directory is ever taken.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ignore::{WalkBuilder, WalkState};

use super::SkipKind::{Outside, TooLarge, Unreadable};
use super::{Reason, Skipped};
use crate::config::IngestConfig;
use crate::error::{Error, Result};
use crate::types::path_key;

/// A file found by the walk, with what change detection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    /// Canonical path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch (0 when unknown).
    pub mtime_ns: u128,
}

/// Everything one walk found.
#[derive(Debug, Default)]
pub struct Found {
    /// Files to consider, sorted by path.
    pub files: Vec<FoundFile>,
    /// Entries that could not be walked or are over the size limit.
    pub skipped: Vec<Skipped>,
    /// The canonical roots that were walked.
    pub roots: Vec<PathBuf>,
}

/// Walks `roots`, leaving out anything under `skip_dir` (the index itself).
pub fn walk(roots: &[PathBuf], config: &IngestConfig, skip_dir: Option<&Path>) -> Result<Found> {
    let mut found = Found::default();
    for root in roots {
        let root = root.canonicalize().map_err(|e| Error::io(root, e))?;
        if skip_dir.is_some_and(|index| root.starts_with(index)) {
            return Err(Error::InvalidRequest(format!(
                "{} is inside the index directory; lore does not index its own files",
                root.display()
            )));
        }
        walk_root(&root, config, skip_dir, &mut found)?;
        found.roots.push(root);
    }
    found.files.sort_by(|a, b| a.path.cmp(&b.path));
    found.files.dedup_by(|a, b| a.path == b.path);
    found.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

fn walk_root(
    root: &Path,
    config: &IngestConfig,
    skip_dir: Option<&Path>,
    found: &mut Found,
) -> Result<()> {
    let include = glob_set(&config.include)?;
    let exclude = glob_set(&config.exclude)?;
    let index_dir = skip_dir.map(Path::to_path_buf);
    let base = root.to_path_buf();
    let mut builder = WalkBuilder::new(root);
    builder
        .follow_links(false)
        .require_git(false)
        .filter_entry(move |entry| {
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            let wanted = |set: &Option<GlobSet>, default: bool| {
                set.as_ref()
                    .map_or(default, |set| matches(set, &base, entry.path()))
            };
            index_dir.as_deref() != Some(entry.path())
                && !(entry.depth() > 0 && wanted(&exclude, false))
                && (is_dir || wanted(&include, true))
        });
    let (tx, rx) = std::sync::mpsc::channel();
    let limits = Limits {
        root,
        index: skip_dir,
        max_bytes: config.max_file_bytes,
    };
    builder.build_parallel().run(|| {
        let tx = tx.clone();
        Box::new(move |entry| {
            let _ = tx.send(limits.classify(entry));
            WalkState::Continue
        })
    });
    drop(tx);
    for outcome in rx {
        match outcome {
            Some(Ok(file)) => found.files.push(file),
            Some(Err(skipped)) => found.skipped.push(skipped),
            None => {}
        }
    }
    Ok(())
}

/// Where a walk may take files from, and how large.
#[derive(Clone, Copy)]
struct Limits<'a> {
    root: &'a Path,
    index: Option<&'a Path>,
    max_bytes: u64,
}

impl Limits<'_> {
    /// Turns one walk entry into a file to ingest, a skip, or nothing
    /// (directories, symlinked folders, the index's own files).
    fn classify(
        &self,
        entry: std::result::Result<ignore::DirEntry, ignore::Error>,
    ) -> Option<std::result::Result<FoundFile, Skipped>> {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => return Some(Err(walk_error(&err))),
        };
        let file_type = entry.file_type()?;
        if !file_type.is_file() && !file_type.is_symlink() {
            return None;
        }
        let path = entry.path();
        let canonical = match path.canonicalize() {
            Ok(canonical) => canonical,
            Err(e) => {
                return Some(Err(skip(
                    path,
                    Reason::new(Unreadable, format!("cannot resolve: {e}")),
                )));
            }
        };
        if self.index.is_some_and(|index| canonical.starts_with(index)) {
            return None;
        }
        if !canonical.starts_with(self.root) {
            return Some(Err(skip(
                path,
                Reason::new(
                    Outside,
                    "symlink to a path outside the ingested folder (not followed)",
                ),
            )));
        }
        let meta = match std::fs::metadata(&canonical) {
            Ok(meta) if meta.is_file() => meta,
            // A symlink to a folder inside the root: walked there.
            Ok(_) => return None,
            Err(e) => {
                let reason = Reason::new(Unreadable, format!("cannot read metadata: {e}"));
                return Some(Err(skip(path, reason)));
            }
        };
        if meta.len() > self.max_bytes {
            return Some(Err(skip(path, over_limit(meta.len(), self.max_bytes))));
        }
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Some(Ok(FoundFile {
            path: canonical,
            size: meta.len(),
            mtime_ns,
        }))
    }
}

/// The skip reason of a file over the size limit.
fn over_limit(size: u64, max_bytes: u64) -> Reason {
    Reason::new(
        TooLarge,
        format!("file is {size} bytes, over the limit of {max_bytes} (ingest.max_file_bytes)"),
    )
}

fn skip(path: &Path, reason: Reason) -> Skipped {
    Skipped::new(path_key(path), reason)
}

/// Names the path a walk error is about, and says what went wrong.
fn walk_error(err: &ignore::Error) -> Skipped {
    fn path_of(err: &ignore::Error) -> Option<PathBuf> {
        match err {
            ignore::Error::WithPath { path, .. } => Some(path.clone()),
            ignore::Error::Loop { child, .. } => Some(child.clone()),
            ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
                path_of(err)
            }
            ignore::Error::Partial(errs) => errs.iter().find_map(path_of),
            _ => None,
        }
    }
    let reason = match err {
        ignore::Error::Loop { ancestor, .. } => {
            format!("symlink loop back to {}", ancestor.display())
        }
        ignore::Error::WithDepth { err, .. } if matches!(**err, ignore::Error::Loop { .. }) => {
            walk_error(err).reason
        }
        other => other.to_string(),
    };
    let path = path_of(err).map_or_else(|| "<unknown>".to_string(), |p| path_key(&p));
    Skipped::new(path, Reason::new(Unreadable, reason))
}

/// Globs as in `.gitignore`: one without `/` matches a file or folder name
/// at any depth, one with `/` matches the path below the walked folder.
fn glob_set(globs: &[String]) -> Result<Option<GlobSet>> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        let pattern = glob.trim_start_matches('/').trim_end_matches('/');
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::Config(format!("bad glob '{glob}': {e}")))?;
        builder.add(glob);
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| Error::Config(format!("bad glob: {e}")))
}

fn matches(set: &GlobSet, root: &Path, path: &Path) -> bool {
    let relative = path.strip_prefix(root).unwrap_or(path);
    set.is_match(relative) || path.file_name().is_some_and(|name| set.is_match(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(found: &Found) -> Vec<String> {
        found
            .files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn honours_gitignore_hidden_files_and_globs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join(".gitignore"), "ignored.md\n").unwrap();
        std::fs::write(root.join("ignored.md"), "x").unwrap();
        std::fs::write(root.join(".hidden.md"), "x").unwrap();
        std::fs::write(root.join("keep.md"), "x").unwrap();
        std::fs::write(root.join("keep.txt"), "x").unwrap();
        let config = IngestConfig::default();
        let found = walk(&[root.to_path_buf()], &config, None).unwrap();
        assert_eq!(names(&found), ["keep.md", "keep.txt"]);

        let config = IngestConfig {
            include: vec!["*.md".into()],
            ..IngestConfig::default()
        };
        let found = walk(&[root.to_path_buf()], &config, None).unwrap();
        assert_eq!(names(&found), ["keep.md"]);

        let config = IngestConfig {
            exclude: vec!["*.md".into()],
            ..IngestConfig::default()
        };
        let found = walk(&[root.to_path_buf()], &config, None).unwrap();
        assert_eq!(names(&found), ["keep.txt"]);

        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub").join("deep.md"), "x").unwrap();
        let config = IngestConfig {
            include: vec!["sub/*.md".into()],
            ..IngestConfig::default()
        };
        let found = walk(&[root.to_path_buf()], &config, None).unwrap();
        assert_eq!(names(&found), ["deep.md"]);
        let config = IngestConfig {
            exclude: vec!["sub".into()],
            ..IngestConfig::default()
        };
        let found = walk(&[root.to_path_buf()], &config, None).unwrap();
        assert_eq!(names(&found), ["keep.md", "keep.txt"]);
    }

    #[test]
    fn oversized_files_are_skipped_and_loops_are_not_walked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("big.txt"), vec![b'a'; 100]).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink(root, root.join("sub").join("loop")).unwrap();
        let config = IngestConfig {
            max_file_bytes: 10,
            ..IngestConfig::default()
        };
        let found = walk(&[root.to_path_buf()], &config, None).unwrap();
        assert!(found.files.is_empty());
        let reasons: Vec<_> = found.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains("over the limit"), "{reasons:?}");
        assert_eq!(found.skipped[0].kind, TooLarge);
    }

    #[test]
    fn symlinks_never_leave_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("inside.md"), "x").unwrap();
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, root.join(name)).unwrap();
        };
        link(&outside.path().join("secret.txt"), "file-link.txt");
        link(outside.path(), "dir-link");
        link(&root.join("inside.md"), "inside-link.md");
        let index = root.join("index");
        std::fs::create_dir(&index).unwrap();
        std::fs::write(index.join("server.json"), "{}").unwrap();
        link(&index, "index-link");
        let found = walk(
            std::slice::from_ref(&root),
            &IngestConfig::default(),
            Some(&index),
        )
        .unwrap();
        let paths: Vec<_> = found.files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(paths, [root.join("inside.md")]);
        let skipped: Vec<_> = found.skipped.iter().map(|s| s.path.as_str()).collect();
        let named = |n: &str| root.join(n).display().to_string();
        assert_eq!(skipped, [named("dir-link"), named("file-link.txt")]);
        for skipped in &found.skipped {
            assert_eq!(skipped.kind, Outside);
            assert!(skipped.reason.contains("outside the ingested folder"));
            assert!(
                !skipped
                    .reason
                    .contains(&outside.path().display().to_string())
            );
        }
    }

    #[test]
    fn missing_root_is_an_error() {
        let config = IngestConfig::default();
        assert!(walk(&[PathBuf::from("/no/such/dir")], &config, None).is_err());
    }
}
