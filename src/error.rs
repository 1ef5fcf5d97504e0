//! The library's one error type. Every variant carries the evidence a user
//! needs to act on it (a path, the values that disagreed); the CLI prints it
//! once, the server maps it to a status code.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong inside lore.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {cause}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error (in the message, and not repeated as the
        /// error's source, so a printed chain says it once).
        cause: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file could not be turned into text; ingest skips it and goes on.
    #[error("cannot read {path}: {reason}")]
    UnsupportedFile {
        /// The file that was skipped.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// A model file is missing or does not load.
    #[error("model at {path}: {reason}")]
    Model {
        /// The model file or directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The model failed while running.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The index was built with another embedder than the one configured.
    #[error(
        "index at {index} was built with embedder {index_embedder} (dim {index_dim}) \
         but the configured embedder is {configured} (dim {configured_dim}); \
         re-ingest into a new index or configure the original embedder"
    )]
    EmbedderMismatch {
        /// The index directory.
        index: PathBuf,
        /// Embedder id recorded in the manifest.
        index_embedder: String,
        /// Dimension recorded in the manifest.
        index_dim: usize,
        /// Embedder id configured now.
        configured: String,
        /// Dimension of the configured embedder.
        configured_dim: usize,
    },
    /// A vector has the wrong length for the index.
    #[error("vector dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch {
        /// Dimension of the index.
        expected: usize,
        /// Dimension supplied.
        got: usize,
    },
    /// The index was written by an incompatible version of lore.
    #[error("index at {index} has format version {found}, this lore reads version {supported}")]
    IndexFormat {
        /// The index directory.
        index: PathBuf,
        /// Version found on disk.
        found: u32,
        /// Version this build understands.
        supported: u32,
    },
    /// The index is held by another lore process.
    #[error("index at {index} is in use by another lore process")]
    IndexLocked {
        /// The index directory.
        index: PathBuf,
    },
    /// A store failed (sled, tantivy or the vector graph).
    #[error("{store} store: {message}")]
    Store {
        /// Which store: `docs`, `keywords` or `vectors`.
        store: &'static str,
        /// What failed.
        message: String,
    },
    /// A document or path named by the user is not in the index.
    #[error("not found in the index: {0}")]
    NotFound(String),

    /// A command that reads an index found none where it looked.
    #[error(
        "there is no index at {} yet: make one with `lore ingest DIR` (for example \
         `lore ingest ./docs`), or point --index or LORE_INDEX at an existing one",
        index.display()
    )]
    NoIndex {
        /// Where it looked.
        index: std::path::PathBuf,
    },
    /// A running lore server answered with an error.
    #[error("lore server at {addr}: {message}")]
    Remote {
        /// The server's base URL.
        addr: String,
        /// What it said.
        message: String,
    },
    /// A request is malformed (bad filter, empty query, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// What a request would create already exists (a collection).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller may not do this (a path outside the ingest roots, a
    /// document it may not read).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Something a decision depends on (the key store) cannot be read
    /// right now, so the request is refused rather than let in.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause,
        }
    }

    /// Builds an [`Error::Unavailable`].
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Error::Unavailable(reason.into())
    }

    /// The code a server answers this error with, for the kinds whose
    /// message crosses the wire whole, so a client raises the same kind
    /// (and the CLI exits the same way) through a server as locally.
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            Error::InvalidRequest(_) => "invalid_request",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Forbidden(_) => "forbidden",
            Error::Unavailable(_) => "unavailable",
            _ => return None,
        })
    }

    /// The error a server's `code` and `message` stand for (see
    /// [`Error::code`]); `Err(message)` for codes of no such kind.
    pub fn from_code(code: &str, message: String) -> std::result::Result<Error, String> {
        let kind: fn(String) -> Error = match code {
            "invalid_request" => Error::InvalidRequest,
            "not_found" => Error::NotFound,
            "conflict" => Error::Conflict,
            "forbidden" => Error::Forbidden,
            "unavailable" => Error::Unavailable,
            _ => return Err(message),
        };
        // The server may send the whole display ("conflict: ..."): keep
        // only what follows the kind's own words.
        let words = kind(String::new()).to_string();
        let reason = message.strip_prefix(&words).unwrap_or(&message);
        Ok(kind(reason.to_string()))
    }

    /// Builds an [`Error::Store`] from any displayable error.
    pub fn store(store: &'static str, err: impl std::fmt::Display) -> Self {
        Error::Store {
            store,
            message: err.to_string(),
        }
    }
}

/// [`Error::InvalidRequest`] unless `min <= value <= max`.
pub(crate) fn check_range<T: PartialOrd + std::fmt::Display>(
    name: &str,
    value: T,
    min: T,
    max: T,
) -> Result<()> {
    if value < min || value > max {
        return Err(Error::InvalidRequest(format!(
            "{name} = {value} is out of range ({min}..={max})"
        )));
    }
    Ok(())
}

impl From<candle_core::Error> for Error {
    fn from(err: candle_core::Error) -> Self {
        Error::Inference(err.to_string())
    }
}

impl From<sled::Error> for Error {
    fn from(err: sled::Error) -> Self {
        Error::store("docs", err)
    }
}

impl From<tantivy::TantivyError> for Error {
    fn from(err: tantivy::TantivyError) -> Self {
        Error::store("keywords", err)
    }
}
