//! Recursive discovery of the files to ingest, honouring `.gitignore`,
//! `.ignore` and hidden-file rules (the `ignore` crate, as in ripgrep), the
//! include/exclude globs and the size limit. Symlinks are followed; loops and
//! unreadable directories become [`Skipped`] entries.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ignore::{WalkBuilder, WalkState};

use super::Skipped;
use crate::config::IngestConfig;
use crate::error::{Error, Result};

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
    let skip_dir = skip_dir.map(Path::to_path_buf);
    let base = root.to_path_buf();
    let mut builder = WalkBuilder::new(root);
    builder
        .follow_links(true)
        .require_git(false)
        .filter_entry(move |entry| {
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            let wanted = |set: &Option<GlobSet>, default: bool| {
                set.as_ref()
                    .map_or(default, |set| matches(set, &base, entry.path()))
            };
            skip_dir.as_deref() != Some(entry.path())
                && !(entry.depth() > 0 && wanted(&exclude, false))
                && (is_dir || wanted(&include, true))
        });
    let (tx, rx) = std::sync::mpsc::channel();
    let max_bytes = config.max_file_bytes;
    builder.build_parallel().run(|| {
        let tx = tx.clone();
        Box::new(move |entry| {
            let _ = tx.send(classify(entry, max_bytes));
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

/// Turns one walk entry into a file to ingest, a skip, or nothing (directories).
fn classify(
    entry: std::result::Result<ignore::DirEntry, ignore::Error>,
    max_bytes: u64,
) -> Option<std::result::Result<FoundFile, Skipped>> {
    let entry = match entry {
        Ok(entry) => entry,
        Err(err) => return Some(Err(walk_error(&err))),
    };
    if !entry.file_type().is_some_and(|t| t.is_file()) {
        return None;
    }
    let path = entry.path();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => return Some(Err(skip(path, format!("cannot read metadata: {e}")))),
    };
    if meta.len() > max_bytes {
        return Some(Err(skip(
            path,
            format!(
                "file is {} bytes, over the limit of {max_bytes} (ingest.max_file_bytes)",
                meta.len()
            ),
        )));
    }
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
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

fn skip(path: &Path, reason: String) -> Skipped {
    Skipped {
        path: path.display().to_string(),
        reason,
    }
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
    Skipped {
        path: path_of(err).map_or_else(|| "<unknown>".to_string(), |p| p.display().to_string()),
        reason,
    }
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
    fn oversized_files_and_symlink_loops_are_skipped_with_reasons() {
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
        assert!(
            reasons.iter().any(|r| r.contains("over the limit")),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| r.contains("symlink loop")),
            "{reasons:?}"
        );
    }

    #[test]
    fn missing_root_is_an_error() {
        let config = IngestConfig::default();
        assert!(walk(&[PathBuf::from("/no/such/dir")], &config, None).is_err());
    }
}
