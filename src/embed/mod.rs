//! Text → unit vectors. [`Embedder`] is the seam; [`bert::BertEmbedder`] runs
//! a BERT-family sentence encoder with candle, [`hash::HashEmbedder`] is a
//! deterministic fake for fast plumbing tests.

pub mod bert;
pub mod hash;

use serde::{Deserialize, Serialize};

use crate::chunk::Sizer;
use crate::error::Result;

/// Turns texts into L2-normalised vectors of a fixed dimension.
///
/// Contract: `embed` returns one vector per input, in input order, each of
/// length [`Embedder::dim`] and unit norm (an empty text may give any unit
/// vector). It is deterministic for a given model and safe to call from
/// several threads; implementations parallelise internally.
pub trait Embedder: Send + Sync {
    /// Identity recorded in the index manifest; a different model must have
    /// a different id.
    fn id(&self) -> &str;
    /// Vector dimension.
    fn dim(&self) -> usize;
    /// Embeds a batch of texts.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// Embeds one search query: [`Embedder::embed`] unless the embedder
    /// has a faster path for queries (documents always take `embed`).
    fn embed_query(&self, query: &str) -> Result<Vec<f32>> {
        self.embed(&[query])?
            .pop()
            .ok_or_else(|| crate::error::Error::Inference("the embedder returned no vector".into()))
    }
    /// The sizer chunks must be measured with so they fit the model.
    fn sizer(&self) -> Result<Sizer>;
    /// How [`Embedder::embed`] computes (recorded in a new index).
    fn documents(&self) -> Precision {
        Precision::F32
    }
}

/// Identity of an embedder, as recorded in an index manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedderInfo {
    /// Embedder id.
    pub id: String,
    /// Vector dimension.
    pub dim: usize,
    /// How the index's documents are embedded: every vector of an index
    /// is computed the same way, so an index keeps the precision it was
    /// created with (one written before this was recorded: f32).
    #[serde(default)]
    pub documents: Precision,
}

/// The arithmetic of an encoder's dense layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats throughout.
    #[default]
    F32,
    /// Dense layers in 8-bit integers (inputs per row, weights per output),
    /// the rest in f32.
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        })
    }
}

impl Precision {
    /// `Int8` when `int8` holds.
    pub fn int8_if(int8: bool) -> Precision {
        if int8 {
            Precision::Int8
        } else {
            Precision::F32
        }
    }
}

/// Scales `v` to unit length (leaves a zero vector alone).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}
