//! From paths on disk to [`Document`](crate::types::Document)s: [`walk`] finds
//! the files (ignore rules, globs, size limit), [`load`] turns one file into
//! documents by format. Neither touches the index; per-file problems come
//! back as [`Skipped`] entries, never as errors that stop the run.

pub mod load;
pub mod sandbox;
pub mod walk;

use serde::{Deserialize, Serialize};

/// A file left out of an ingest run: what kind of problem, and the reason
/// in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Skipped {
    /// The file (or directory) that was skipped.
    pub path: String,
    /// What kind of problem it was, for programs to branch on.
    pub kind: SkipKind,
    /// Why, in words.
    pub reason: String,
}

impl Skipped {
    /// `path` skipped for `reason`.
    pub fn new(path: String, reason: Reason) -> Skipped {
        Skipped {
            path,
            kind: reason.kind,
            reason: reason.message,
        }
    }
}

/// The kinds of problem that leave a file out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SkipKind {
    /// It could not be read: permissions, I/O, gone, a symlink loop.
    Unreadable,
    /// Over `ingest.max_file_bytes` (or its text would be).
    TooLarge,
    /// No text in it: blank, an HTML page with nothing visible, a PDF with
    /// no text layer, a corpus with no documents.
    Empty,
    /// Binary, or text in no encoding that decodes it.
    Binary,
    /// Its format is broken: front matter, an access list, a JSON line, a
    /// PDF the parser refuses.
    Malformed,
    /// A symlink to a path outside the ingested folder.
    Outside,
    /// The sandboxed extractor did not finish within its limits.
    ExtractorFailed,
}

/// Why one file produced no documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The kind of problem.
    pub kind: SkipKind,
    /// What went wrong, in words.
    pub message: String,
}

impl Reason {
    /// A reason of `kind`.
    pub fn new(kind: SkipKind, message: impl Into<String>) -> Reason {
        Reason {
            kind,
            message: message.into(),
        }
    }

    /// The same kind, with `prefix: ` before the words.
    pub fn within(self, prefix: &str) -> Reason {
        Reason::new(self.kind, format!("{prefix}: {}", self.message))
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
