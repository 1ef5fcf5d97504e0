//! Query → ranked chunks: dense search over the vector graph, BM25 over the
//! keyword index, and their fusion. Filters become a set of allowed slots
//! that both retrievers search inside. Results are resolved to live chunks,
//! so a slot removed since it was indexed never reaches the caller.

pub mod filter;
pub mod fusion;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use filter::{Filter, Readers};

use crate::config::{FusionMethod, SearchConfig};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::store::Index;
use crate::types::{ChunkId, DocId, Slot};

/// Longest query (or question) accepted, in bytes: checked before any
/// tokenizing, so a huge query costs nothing.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Which retriever(s) to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
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
    #[serde(default)]
    pub mode: Mode,
    /// Only chunks of documents matching this.
    #[serde(default)]
    pub filter: Filter,
    /// At most one hit per document (its best chunk).
    #[serde(default)]
    pub collapse: bool,
    /// Who reads: documents they may not read are never searched. Set by
    /// the front end from the caller's key, never from a request body.
    #[serde(skip)]
    pub readers: Readers,
}

impl SearchRequest {
    /// A request with no filter and no collapsing.
    pub fn new(query: impl Into<String>, k: usize, mode: Mode) -> Self {
        SearchRequest {
            query: query.into(),
            k,
            mode,
            filter: Filter::default(),
            collapse: false,
            readers: Readers::Everyone,
        }
    }
}

/// A retriever that found a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Retriever {
    /// Vector search.
    Dense,
    /// BM25.
    Bm25,
}

/// One ranked chunk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
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
    #[schema(schema_with = crate::types::byte_range_schema)]
    pub byte_range: Range<usize>,
    /// Heading path.
    pub heading: Vec<String>,
    /// Chunk text.
    pub text: String,
    /// The retrievers whose candidates held this chunk.
    #[serde(default)]
    pub found_by: Vec<Retriever>,
}

/// Time spent per stage, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SearchResponse {
    /// Best first.
    pub hits: Vec<Hit>,
    /// Where the time went.
    pub timings: Timings,
    /// Cosine of the best chunk the dense retriever found (not in the JSON:
    /// `ask` uses it to decide whether the documents can answer at all).
    #[serde(skip)]
    pub best_dense: Option<f32>,
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// Runs `request` against `index`.
pub fn search(
    index: &Index,
    embedder: &dyn Embedder,
    config: &SearchConfig,
    request: &SearchRequest,
) -> Result<SearchResponse> {
    let start = Instant::now();
    if request.query.trim().is_empty() {
        return Err(Error::InvalidRequest("empty query".into()));
    }
    if request.query.len() > MAX_QUERY_BYTES {
        return Err(Error::InvalidRequest(format!(
            "the query is {} bytes; at most {MAX_QUERY_BYTES} are accepted",
            request.query.len()
        )));
    }
    if request.k == 0 {
        return Err(Error::InvalidRequest("k must be at least 1".into()));
    }
    let allowed = if request.filter.is_empty() && !request.readers.restricted() {
        None
    } else {
        Some(filter::allowed_slots(
            index.docs(),
            &request.filter,
            &request.readers,
        )?)
    };
    let mut timings = Timings::default();
    // Look deeper than k so fusion and collapsing have candidates to work on.
    let depth = (request.k * config.depth_factor).max(50);
    let dense = if request.mode == Mode::Bm25 {
        Vec::new()
    } else {
        let t = Instant::now();
        let query = embedder.embed(&[request.query.as_str()])?.remove(0);
        timings.embed_ms = ms_since(t);
        let t = Instant::now();
        let hits = dense_search(index, &query, depth, allowed.as_ref())?;
        timings.dense_ms = ms_since(t);
        hits
    };
    let keyword = if request.mode == Mode::Dense {
        Vec::new()
    } else {
        let t = Instant::now();
        let hits = index
            .keywords()
            .search(&request.query, depth, allowed.as_ref())?;
        timings.bm25_ms = ms_since(t);
        hits
    };
    let best_dense = dense.first().map(|(_, score)| *score);
    let dense_slots: HashSet<Slot> = dense.iter().map(|(slot, _)| *slot).collect();
    let keyword_slots: HashSet<Slot> = keyword.iter().map(|(slot, _)| *slot).collect();
    let ranked = match (request.mode, config.fusion) {
        (Mode::Dense, _) => dense,
        (Mode::Bm25, _) => keyword,
        (Mode::Hybrid, FusionMethod::Rrf) => fusion::reciprocal_rank(&[&dense, &keyword]),
        (Mode::Hybrid, FusionMethod::Linear) => {
            fusion::linear(&dense, &keyword, config.dense_weight)
        }
    };
    let found = Found {
        dense: dense_slots,
        bm25: keyword_slots,
    };
    let hits = resolve(index, &ranked, &found, request.k, request.collapse)?;
    timings.total_ms = ms_since(start);
    Ok(SearchResponse {
        hits,
        timings,
        best_dense,
    })
}

/// Vector search, inside `allowed` when given. The graph search may come
/// back short when the filter is very selective; then the allowed vectors
/// are scored exactly, so `k` hits come back whenever `k` exist.
fn dense_search(
    index: &Index,
    query: &[f32],
    k: usize,
    allowed: Option<&HashSet<Slot>>,
) -> Result<Vec<(Slot, f32)>> {
    let Some(allowed) = allowed else {
        return index.vectors().search(query, k, None);
    };
    let keep = |slot: Slot| allowed.contains(&slot);
    let hits = index.vectors().search(query, k, Some(&keep))?;
    if hits.len() >= k.min(allowed.len()) {
        return Ok(hits);
    }
    let mut exact = Vec::with_capacity(allowed.len());
    for &slot in allowed {
        if let Some(vector) = index.docs().vector(slot)? {
            exact.push((
                slot,
                vector.iter().zip(query).map(|(a, b)| a * b).sum::<f32>(),
            ));
        }
    }
    exact.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    exact.truncate(k);
    Ok(exact)
}

/// The candidates each retriever returned.
struct Found {
    dense: HashSet<Slot>,
    bm25: HashSet<Slot>,
}

impl Found {
    fn by(&self, slot: Slot) -> Vec<Retriever> {
        let mut by = Vec::with_capacity(2);
        if self.dense.contains(&slot) {
            by.push(Retriever::Dense);
        }
        if self.bm25.contains(&slot) {
            by.push(Retriever::Bm25);
        }
        by
    }
}

/// Turns ranked slots into hits, skipping slots whose chunk is gone and,
/// with `collapse`, chunks of documents already listed.
fn resolve(
    index: &Index,
    ranked: &[(Slot, f32)],
    found: &Found,
    k: usize,
    collapse: bool,
) -> Result<Vec<Hit>> {
    let mut paths: HashMap<DocId, String> = HashMap::new();
    let mut hits = Vec::with_capacity(k);
    for &(slot, score) in ranked {
        if hits.len() == k {
            break;
        }
        let Some(chunk) = index.chunk_at(slot)? else {
            continue;
        };
        if collapse && paths.contains_key(&chunk.doc_id) {
            continue;
        }
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
            found_by: found.by(slot),
        });
    }
    Ok(hits)
}
