//! From paths on disk to [`Document`](crate::types::Document)s: [`walk`] finds
//! the files (ignore rules, globs, size limit), [`load`] turns one file into
//! documents by format. Neither touches the index; per-file problems come
//! back as [`Skipped`] entries, never as errors that stop the run.

pub mod load;
pub mod sandbox;
pub mod walk;

use serde::Serialize;

/// A file left out of an ingest run, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Skipped {
    /// The file (or directory) that was skipped.
    pub path: String,
    /// Why.
    pub reason: String,
}
