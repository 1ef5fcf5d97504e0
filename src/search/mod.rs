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
use crate::error::{Error, Result, check_range};
use crate::store::{Index, SlotSet};
use crate::types::{ChunkId, DEFAULT_COLLECTION, DocId, Slot};

/// A filter letting at most one chunk in this many through is searched
/// exactly rather than through the graph...
pub const EXACT_SHARE: u64 = 5;
/// ...unless it lets more than this many through: scoring them all costs
/// more than a filtered graph search (at a million chunks, a 10 % filter
/// is 100k dot products).
pub const EXACT_MAX: usize = 50_000;
/// Most collections one search may span.
pub const MAX_COLLECTIONS: usize = 16;

/// A candidate: which of the searched collections (by position) and which
/// slot in it.
type Key = (usize, Slot);

/// One collection to search: its name, its stores, and its embedder
/// (needed unless the mode is BM25 alone).
pub struct Target<'a> {
    /// The collection's name (reported on its hits).
    pub name: &'a str,
    /// Its stores.
    pub index: &'a Index,
    /// Its embedder: the query is embedded once per embedder id.
    pub embedder: Option<&'a dyn Embedder>,
}

/// Longest query (or question) accepted, in bytes: checked before any
/// tokenizing, so a huge query costs nothing.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;
/// Most hits one search may ask for.
pub const MAX_K: usize = 1000;

/// Which retriever(s) to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
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
    /// Collections to search, results fused across them (none: `default`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<String>,
    /// Who reads: documents they may not read are never searched. Set by
    /// the front end from the caller's key, never from a request body.
    #[serde(skip)]
    pub readers: Readers,
    /// Also measure how much of the query the best hit covers
    /// ([`SearchResponse::coverage`]; `ask` sets it).
    #[serde(skip)]
    pub coverage: bool,
    /// The words coverage is measured on, when not the whole query (a
    /// follow-up's rewrite less the words the conversation never used).
    #[serde(skip)]
    pub coverage_of: Option<String>,
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
            collections: Vec::new(),
            readers: Readers::Everyone,
            coverage: false,
            coverage_of: None,
        }
    }

    /// Refuses a request that cannot be answered, before any work: the
    /// one place a search's bounds are checked, for every caller.
    pub fn validate(&self) -> Result<()> {
        if self.query.trim().is_empty() {
            return Err(Error::InvalidRequest("empty query".into()));
        }
        if self.query.len() > MAX_QUERY_BYTES {
            return Err(Error::InvalidRequest(format!(
                "the query is {} bytes; at most {MAX_QUERY_BYTES} are accepted",
                self.query.len()
            )));
        }
        check_range("k", self.k, 1, MAX_K)?;
        let collections = self.collection_names().len();
        if collections > MAX_COLLECTIONS {
            return Err(Error::InvalidRequest(format!(
                "search 1 to {MAX_COLLECTIONS} collections at once"
            )));
        }
        Ok(())
    }

    /// The collections it names, `default` when none.
    pub fn collection_names(&self) -> Vec<String> {
        if self.collections.is_empty() {
            vec![DEFAULT_COLLECTION.to_string()]
        } else {
            self.collections.clone()
        }
    }
}

/// A retriever that found a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Retriever {
    /// Vector search.
    Dense,
    /// BM25.
    Bm25,
}

/// One ranked chunk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Hit {
    /// 1-based rank.
    pub rank: usize,
    /// The collection it came from.
    pub collection: String,
    /// Score of the mode used (fused, cosine or BM25).
    pub score: f32,
    /// Document id.
    pub doc_id: DocId,
    /// Source path.
    pub path: String,
    /// Chunk id.
    pub chunk_id: ChunkId,
    /// Byte range in the source.
    #[cfg_attr(feature = "server", schema(schema_with = crate::types::byte_range_schema))]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Timings {
    /// Resolving filters and access lists to the slots searched.
    #[serde(default)]
    pub filter_ms: f64,
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
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct SearchResponse {
    /// Best first.
    pub hits: Vec<Hit>,
    /// Where the time went.
    pub timings: Timings,
    /// Cosine of the best chunk the dense retriever found (not in the JSON:
    /// `ask` uses it to decide whether the documents can answer at all).
    #[serde(skip)]
    pub best_dense: Option<f32>,
    /// With [`SearchRequest::coverage`]: the share of the query's terms,
    /// weighted by rarity, that the best hit holds, or the best BM25 hit
    /// when it is among the hits and holds more
    /// ([`crate::store::KeywordIndex::coverage`]).
    #[serde(skip)]
    pub coverage: Option<f64>,
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// Runs `request` against `collections`; with several, their candidates
/// are pooled before fusion, so hits are ranked across collections exactly
/// as they would be within one.
pub fn search(
    collections: &[Target<'_>],
    config: &SearchConfig,
    request: &SearchRequest,
) -> Result<SearchResponse> {
    let start = Instant::now();
    request.validate()?;
    let mut timings = Timings::default();
    // Look deeper than k so fusion and collapsing have candidates to work on.
    let depth = (request.k * config.depth_factor).max(50);
    let t = Instant::now();
    let allowed = collections
        .iter()
        .map(|c| filter::allowed(c.index, &request.filter, &request.readers))
        .collect::<Result<Vec<_>>>()?;
    timings.filter_ms = ms_since(t);
    // The dense side (embed the query, search the graph) and BM25 need
    // nothing of each other: on two cores they run side by side.
    let (dense, keyword) = rayon::join(
        || match request.mode {
            Mode::Bm25 => Ok((Vec::new(), 0.0, 0.0)),
            _ => dense_all(collections, &allowed, &request.query, depth),
        },
        || match request.mode {
            Mode::Dense => Ok((Vec::new(), 0.0)),
            _ => keyword_all(collections, &allowed, &request.query, depth),
        },
    );
    let (mut dense, embed_ms, dense_ms) = dense?;
    let (mut keyword, bm25_ms) = keyword?;
    (timings.embed_ms, timings.dense_ms, timings.bm25_ms) = (embed_ms, dense_ms, bm25_ms);
    let by_score = |a: &(Key, f32), b: &(Key, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    dense.sort_by(by_score);
    keyword.sort_by(by_score);
    let best_dense = dense.first().map(|(_, score)| *score);
    let best_keyword = keyword.first().map(|(key, _)| *key);
    let found = Found {
        dense: dense.iter().map(|(key, _)| *key).collect(),
        bm25: keyword.iter().map(|(key, _)| *key).collect(),
    };
    let ranked = match (request.mode, config.fusion) {
        (Mode::Dense, _) => dense,
        (Mode::Bm25, _) => keyword,
        (Mode::Hybrid, FusionMethod::Rrf) => fusion::reciprocal_rank(&[&dense, &keyword]),
        (Mode::Hybrid, FusionMethod::Linear) => {
            fusion::linear(&dense, &keyword, config.dense_weight)
        }
    };
    let (hits, keys) = resolve(collections, &ranked, &found, request.k, request.collapse)?;
    let coverage = match hits.first().filter(|_| request.coverage) {
        Some(best) => {
            let asked = request.coverage_of.as_deref().unwrap_or(&request.query);
            let mut covered = coverage(collections, &allowed, asked, best)?;
            // BM25's first, when it was given and is not the best hit.
            let lexical = keys
                .iter()
                .skip(1)
                .position(|key| Some(*key) == best_keyword);
            if let Some(at) = lexical {
                covered = covered.max(coverage(collections, &allowed, asked, &hits[at + 1])?);
            }
            Some(covered)
        }
        None => None,
    };
    timings.total_ms = ms_since(start);
    Ok(SearchResponse {
        hits,
        timings,
        best_dense,
        coverage,
    })
}

/// [`SearchResponse::coverage`] of `best`, weighed in its own collection
/// among the chunks the request may see.
fn coverage(
    collections: &[Target<'_>],
    allowed: &[Option<std::sync::Arc<SlotSet>>],
    query: &str,
    best: &Hit,
) -> Result<f64> {
    let at = collections
        .iter()
        .position(|c| c.name == best.collection)
        .ok_or_else(|| Error::Store {
            store: "keywords",
            message: format!(
                "a hit from collection {} that was not searched",
                best.collection
            ),
        })?;
    let text = format!("{}\n{}", best.heading.join("\n"), best.text);
    collections[at]
        .index
        .keywords()
        .coverage(query, &text, allowed[at].as_ref())
}

/// One retriever's scored candidates.
type Candidates = Vec<(Key, f32)>;

/// Dense candidates from every collection (the query embedded once per
/// embedder), with the time spent embedding and searching.
fn dense_all(
    collections: &[Target<'_>],
    allowed: &[Option<std::sync::Arc<SlotSet>>],
    query: &str,
    depth: usize,
) -> Result<(Candidates, f64, f64)> {
    let (mut found, mut embed_ms, mut dense_ms) = (Vec::new(), 0.0, 0.0);
    let mut queries: HashMap<String, Vec<f32>> = HashMap::new();
    for (at, (collection, allowed)) in collections.iter().zip(allowed).enumerate() {
        let Some(embedder) = collection.embedder else {
            continue;
        };
        let id = embedder.id().to_string();
        if !queries.contains_key(&id) {
            let t = Instant::now();
            let vector = embedder.embed_query(query)?;
            embed_ms += ms_since(t);
            queries.insert(id.clone(), vector);
        }
        let t = Instant::now();
        let hits = dense_search(collection.index, &queries[&id], depth, allowed.as_ref())?;
        dense_ms += ms_since(t);
        found.extend(hits.into_iter().map(|(slot, s)| ((at, slot), s)));
    }
    Ok((found, embed_ms, dense_ms))
}

/// BM25 candidates from every collection, with the time spent.
fn keyword_all(
    collections: &[Target<'_>],
    allowed: &[Option<std::sync::Arc<SlotSet>>],
    query: &str,
    depth: usize,
) -> Result<(Candidates, f64)> {
    let t = Instant::now();
    let mut found = Vec::new();
    for (at, (collection, allowed)) in collections.iter().zip(allowed).enumerate() {
        let hits = collection
            .index
            .keywords()
            .search(query, depth, allowed.as_ref())?;
        found.extend(hits.into_iter().map(|(slot, s)| ((at, slot), s)));
    }
    Ok((found, ms_since(t)))
}

/// Vector search, inside `allowed` when given. A filter that leaves at
/// most one chunk in [`EXACT_SHARE`], and at most [`EXACT_MAX`] chunks, is
/// searched exactly (a graph search
/// would have to explore most of the graph to find its few candidates);
/// a wider one goes through the graph, and falls back to exact scoring
/// should the graph search come back short. So `k` hits come back whenever
/// `k` exist.
fn dense_search(
    index: &Index,
    query: &[f32],
    k: usize,
    allowed: Option<&std::sync::Arc<SlotSet>>,
) -> Result<Vec<(Slot, f32)>> {
    let Some(allowed) = allowed else {
        return index.vectors().search(query, k, None);
    };
    let keep = |slot: Slot| allowed.contains(slot);
    let vectors = index.vectors();
    if allowed.len() as u64 * EXACT_SHARE > vectors.len() || allowed.len() > EXACT_MAX {
        let hits = vectors.search(query, k, Some(&keep))?;
        if hits.len() >= k.min(allowed.len()) {
            return Ok(hits);
        }
    }
    vectors.search_among(query, k, allowed)
}

/// The candidates each retriever returned.
struct Found {
    dense: HashSet<Key>,
    bm25: HashSet<Key>,
}

impl Found {
    fn by(&self, key: Key) -> Vec<Retriever> {
        let mut by = Vec::with_capacity(2);
        if self.dense.contains(&key) {
            by.push(Retriever::Dense);
        }
        if self.bm25.contains(&key) {
            by.push(Retriever::Bm25);
        }
        by
    }
}

/// Turns ranked candidates into hits, skipping slots whose chunk is gone
/// and, with `collapse`, chunks of documents already listed.
fn resolve(
    collections: &[Target<'_>],
    ranked: &[(Key, f32)],
    found: &Found,
    k: usize,
    collapse: bool,
) -> Result<(Vec<Hit>, Vec<Key>)> {
    for (at, target) in collections.iter().enumerate() {
        let first: Vec<Slot> = ranked
            .iter()
            .take(k)
            .filter(|((c, _), _)| *c == at)
            .map(|((_, slot), _)| *slot)
            .collect();
        target.index.read_ahead(&first)?;
    }
    let mut paths: HashMap<(usize, DocId), String> = HashMap::new();
    let mut hits = Vec::with_capacity(k);
    let mut keys = Vec::with_capacity(k);
    for &((at, slot), score) in ranked {
        if hits.len() == k {
            break;
        }
        let index = collections[at].index;
        let Some(chunk) = index.chunk_at(slot)? else {
            continue;
        };
        let doc = (at, chunk.doc_id.clone());
        if collapse && paths.contains_key(&doc) {
            continue;
        }
        let path = match paths.get(&doc) {
            Some(path) => path.clone(),
            None => {
                let path = index
                    .docs()
                    .doc(&chunk.doc_id)?
                    .map(|d| d.path)
                    .unwrap_or_default();
                paths.insert(doc, path.clone());
                path
            }
        };
        hits.push(Hit {
            rank: hits.len() + 1,
            collection: collections[at].name.to_string(),
            score,
            doc_id: chunk.doc_id,
            path,
            chunk_id: chunk.id,
            byte_range: chunk.byte_range,
            heading: chunk.heading,
            text: chunk.text,
            found_by: found.by((at, slot)),
        });
        keys.push((at, slot));
    }
    Ok((hits, keys))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::embed::hash::HashEmbedder;
    use crate::engine::{DEFAULT_COLLECTION, Engine, NoProgress, WriteScope};

    #[test]
    fn support_is_read_off_the_best_keyword_hit_too_when_it_is_given() {
        let tmp = tempfile::tempdir().unwrap();
        let docs = tmp.path().join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        // The bag-of-words embedder ranks the page that repeats the
        // question's common words first; only BM25 finds the rare word.
        let pages = [
            ("bait.md", "What is an Rc T for? What is an Rc T for?"),
            (
                "answer.md",
                "The Rc T type is an abbreviation for reference counting: it counts \
                 the owners of one value so that the value lives while any owner does.",
            ),
            (
                "a.md",
                "What is an Rc T for? It shares a value between owners in one thread.",
            ),
            (
                "b.md",
                "What is an Rc T for? It keeps a count of owners of a value.",
            ),
            (
                "c.md",
                "What is a Box T for? It puts a value on the heap with one owner.",
            ),
        ];
        for (name, text) in pages {
            std::fs::write(docs.join(name), text).unwrap();
        }
        let config = Config {
            index: tmp.path().join("index"),
            ..Config::default()
        };
        let engine = Engine::with_embedder(config, Arc::new(HashEmbedder::new(64))).unwrap();
        let owner = WriteScope::owner("test");
        engine
            .ingest(DEFAULT_COLLECTION, &[docs], &owner, &NoProgress)
            .unwrap();
        let mut request = SearchRequest::new("What is Rc<T> an abbreviation for?", 3, Mode::Hybrid);
        request.coverage = true;
        let found = engine.search(&request).unwrap();
        assert!(found.hits[0].path.ends_with("bait.md"), "{:?}", found.hits);
        assert!(found.hits.iter().any(|h| h.path.ends_with("answer.md")));
        assert!(found.coverage.unwrap() > 0.9, "{:?}", found.coverage);
    }
}
