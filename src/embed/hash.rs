//! A deterministic fake embedder: hashed bag of words. It has no semantics
//! beyond word overlap, which is exactly what plumbing tests need: fast,
//! stable, and model-free.

use super::{Embedder, normalize};
use crate::chunk::Sizer;
use crate::error::Result;

/// Hashes lower-cased words into `dim` buckets.
pub struct HashEmbedder {
    dim: usize,
    id: String,
}

impl HashEmbedder {
    /// A fake embedder producing `dim`-dimensional vectors.
    pub fn new(dim: usize) -> Self {
        HashEmbedder {
            dim,
            id: format!("hash-{dim}"),
        }
    }
}

impl Embedder for HashEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|text| {
                let mut v = vec![0.0f32; self.dim];
                for word in text
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    let h = blake3::hash(word.to_lowercase().as_bytes());
                    let bytes = h.as_bytes();
                    let bucket = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default())
                        as usize
                        % self.dim;
                    v[bucket] += 1.0;
                }
                if v.iter().all(|x| *x == 0.0) {
                    v[0] = 1.0;
                }
                normalize(&mut v);
                v
            })
            .collect())
    }

    fn sizer(&self) -> Result<Sizer> {
        Ok(Sizer::Chars)
    }
}
