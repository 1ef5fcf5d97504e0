//! Query → ranked chunks: dense search over the vector graph, BM25 over the
//! keyword index, and their fusion. Results are resolved to live chunks, so a
//! slot removed since it was indexed never reaches the caller.

pub mod fusion;

use std::collections::HashMap;
use std::ops::Range;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::store::Index;
use crate::types::{ChunkId, DocId, Slot};

/// Which retriever(s) to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Dense and BM25, fused.
    #[default]
    Hybrid,
    /// Vector search only.
    Dense,
    /// BM25 only.
    Bm25,
}

/// A search request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchRequest {
    /// The query text.
    pub query: String,
    /// Hits wanted.
    pub k: usize,
    /// Retriever.
    pub mode: Mode,
}

/// One ranked chunk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hit {
    /// 1-based rank.
    pub rank: usize,
    /// Score of the mode used (fused, cosine or BM25).
    pub score: f32,
    /// Document id.
    pub doc_id: DocId,
    /// Source path.
    pub path: String,
    /// Chunk id.
    pub chunk_id: ChunkId,
    /// Byte range in the source.
    pub byte_range: Range<usize>,
    /// Heading path.
    pub heading: Vec<String>,
    /// Chunk text.
    pub text: String,
}

/// Time spent per stage, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Timings {
    /// Query embedding.
    pub embed_ms: f64,
    /// Vector search.
    pub dense_ms: f64,
    /// BM25 search.
    pub bm25_ms: f64,
    /// Everything, chunk fetching included.
    pub total_ms: f64,
}

/// Ranked hits and timings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchResponse {
    /// Best first.
    pub hits: Vec<Hit>,
    /// Where the time went.
    pub timings: Timings,
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// Runs `request` against `index`.
pub fn search(
    index: &Index,
    embedder: &dyn Embedder,
    request: &SearchRequest,
) -> Result<SearchResponse> {
    let start = Instant::now();
    if request.query.trim().is_empty() {
        return Err(Error::InvalidRequest("empty query".into()));
    }
    if request.k == 0 {
        return Err(Error::InvalidRequest("k must be at least 1".into()));
    }
    let mut timings = Timings::default();
    // Fusion looks deeper than k in each list so agreement lower down counts.
    let depth = (request.k * 4).max(50);
    let dense = if request.mode == Mode::Bm25 {
        Vec::new()
    } else {
        let t = Instant::now();
        let query = embedder.embed(&[request.query.as_str()])?.remove(0);
        timings.embed_ms = ms_since(t);
        let t = Instant::now();
        let hits = index.vectors().search(&query, depth, None)?;
        timings.dense_ms = ms_since(t);
        hits
    };
    let keyword = if request.mode == Mode::Dense {
        Vec::new()
    } else {
        let t = Instant::now();
        let hits = index.keywords().search(&request.query, depth)?;
        timings.bm25_ms = ms_since(t);
        hits
    };
    let ranked = match request.mode {
        Mode::Dense => dense,
        Mode::Bm25 => keyword,
        Mode::Hybrid => fusion::reciprocal_rank(&[&dense, &keyword]),
    };
    let hits = resolve(index, &ranked, request.k)?;
    timings.total_ms = ms_since(start);
    Ok(SearchResponse { hits, timings })
}

/// Turns ranked slots into hits, skipping slots whose chunk is gone.
fn resolve(index: &Index, ranked: &[(Slot, f32)], k: usize) -> Result<Vec<Hit>> {
    let mut paths: HashMap<DocId, String> = HashMap::new();
    let mut hits = Vec::with_capacity(k);
    for &(slot, score) in ranked {
        if hits.len() == k {
            break;
        }
        let Some(chunk) = index.chunk_at(slot)? else {
            continue;
        };
        let path = match paths.get(&chunk.doc_id) {
            Some(path) => path.clone(),
            None => {
                let path = index
                    .docs()
                    .doc(&chunk.doc_id)?
                    .map(|d| d.path)
                    .unwrap_or_default();
                paths.insert(chunk.doc_id.clone(), path.clone());
                path
            }
        };
        hits.push(Hit {
            rank: hits.len() + 1,
            score,
            doc_id: chunk.doc_id,
            path,
            chunk_id: chunk.id,
            byte_range: chunk.byte_range,
            heading: chunk.heading,
            text: chunk.text,
        });
    }
    Ok(hits)
}
