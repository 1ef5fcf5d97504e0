//! How a running `lore serve` tells other processes on the machine where it
//! is: `<index>/server.json` holds its address and a random local token,
//! readable by the owner only. A request carrying the token acts with write
//! scope and may ingest any path: whoever can read the index directory can
//! change the index anyway. The server writes it; the CLI's client reads it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// File name of the announcement inside the index directory.
pub const ANNOUNCEMENT: &str = "server.json";
/// Header carrying the local token.
pub const LOCAL_TOKEN_HEADER: &str = "x-lore-local-token";

/// What a running server writes into its index directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Announcement {
    /// Address the server listens on.
    pub addr: String,
    /// Token that lets local processes act on the index.
    pub token: String,
}

impl Announcement {
    /// Where it lives in `index`.
    pub fn path(index: &Path) -> PathBuf {
        index.join(ANNOUNCEMENT)
    }

    /// Writes it into `index`, readable by the owner only: a new file made
    /// 0600 and renamed over whatever was there, so neither the mode nor
    /// the inode of an existing file (or a symlink planted there) is used.
    pub fn write(&self, index: &Path) -> Result<()> {
        let path = Self::path(index);
        let tmp = index.join(format!("{ANNOUNCEMENT}.{}.tmp", std::process::id()));
        let json = serde_json::to_vec(self).map_err(|e| Error::io(&path, e.into()))?;
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(|e| Error::io(&tmp, e))?;
        std::io::Write::write_all(&mut file, &json).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    /// Removes it from `index` (the server is stopping).
    pub fn remove(index: &Path) {
        let _ = std::fs::remove_file(Self::path(index));
    }
}
