//! `manifest.json`: the index's format version and the embedder it was built
//! with. Written once, atomically, when the index is created; checked on every
//! open so an index is never searched with vectors from another model.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::embed::EmbedderInfo;
use crate::error::{Error, Result};

/// Version of the on-disk layout this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
const FILE: &str = "manifest.json";

/// Contents of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version.
    pub format_version: u32,
    /// The embedder.
    pub embedder: EmbedderInfo,
}

impl Manifest {
    /// True when `dir` holds an index.
    pub fn exists(dir: &Path) -> bool {
        dir.join(FILE).is_file()
    }

    /// Reads the manifest of the index in `dir`, if there is one.
    pub fn read(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::store("manifest", format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Writes the manifest atomically (temp file, fsync, rename).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE);
        let tmp = dir.join(format!("{FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::store("manifest", e))?;
        std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    /// Opens the manifest of `dir` for `embedder`: creates it for a new
    /// index, or checks that an existing index matches.
    pub fn open_or_create(dir: &Path, embedder: &EmbedderInfo) -> Result<Manifest> {
        match Self::read(dir)? {
            Some(manifest) => {
                if manifest.format_version != FORMAT_VERSION {
                    return Err(Error::IndexFormat {
                        index: dir.to_path_buf(),
                        found: manifest.format_version,
                        supported: FORMAT_VERSION,
                    });
                }
                if &manifest.embedder != embedder {
                    return Err(Error::EmbedderMismatch {
                        index: dir.to_path_buf(),
                        index_embedder: manifest.embedder.id,
                        index_dim: manifest.embedder.dim,
                        configured: embedder.id.clone(),
                        configured_dim: embedder.dim,
                    });
                }
                Ok(manifest)
            }
            None => {
                let manifest = Manifest {
                    format_version: FORMAT_VERSION,
                    embedder: embedder.clone(),
                };
                manifest.write(dir)?;
                Ok(manifest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_written_before_precision_was_recorded_reads_as_f32() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{"format_version": 1, "embedder": {"id": "m-1234", "dim": 384}}"#;
        std::fs::write(dir.path().join(FILE), old).unwrap();
        let manifest = Manifest::read(dir.path()).unwrap().unwrap();
        assert_eq!(manifest.embedder.documents, crate::embed::Precision::F32);
        // And a new one records what it was created with.
        let int8 = EmbedderInfo {
            id: "m-1234".into(),
            dim: 384,
            documents: crate::embed::Precision::Int8,
        };
        let other = tempfile::tempdir().unwrap();
        Manifest::open_or_create(other.path(), &int8).unwrap();
        let text = std::fs::read_to_string(other.path().join(FILE)).unwrap();
        assert!(text.contains(r#""documents": "int8""#), "{text}");
    }

    #[test]
    fn a_precision_lore_does_not_know_is_refused_not_read_as_f32() {
        let dir = tempfile::tempdir().unwrap();
        let odd =
            r#"{"format_version": 1, "embedder": {"id": "m", "dim": 384, "documents": "int4"}}"#;
        std::fs::write(dir.path().join(FILE), odd).unwrap();
        assert!(matches!(
            Manifest::read(dir.path()),
            Err(Error::Store { .. })
        ));
    }

    #[test]
    fn opening_with_another_embedder_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = EmbedderInfo {
            id: "a".into(),
            dim: 4,
            documents: Default::default(),
        };
        let b = EmbedderInfo {
            id: "b".into(),
            dim: 8,
            documents: Default::default(),
        };
        Manifest::open_or_create(dir.path(), &a).unwrap();
        Manifest::open_or_create(dir.path(), &a).unwrap();
        let err = Manifest::open_or_create(dir.path(), &b).unwrap_err();
        assert!(matches!(
            err,
            Error::EmbedderMismatch {
                index_dim: 4,
                configured_dim: 8,
                ..
            }
        ));
    }
}
