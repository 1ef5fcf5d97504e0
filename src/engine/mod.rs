//! [`Engine`]: the one façade the CLI, the HTTP server and embedding
//! programs call — `ingest`, `remove`, `search`, `ask`, `status`. It owns
//! the configuration, the index and the (lazily loaded) models.

mod ask;
mod ingest;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;

pub use ask::{
    AskRequest, AskResponse, AskTimings, ConstraintOptions, MAX_SAMPLES, Reflection, Techniques,
    Verdict, Vote,
};
pub use ingest::{IngestReport, NoProgress, Progress, RemoveReport};

use crate::chunk::Chunker;
use crate::config::Config;
use crate::embed::bert::BertEmbedder;
use crate::embed::{Embedder, EmbedderInfo};
use crate::error::{Error, Result};
use crate::generate::Generator;
use crate::generate::gguf::GgufGenerator;
use crate::search::{Readers, SearchRequest, SearchResponse};
use crate::store::Index;
use crate::store::manifest::Manifest;
use crate::types::{ChunkId, ChunkRecord, DocId, DocRecord};

type Loader = Box<dyn Fn() -> Result<Arc<dyn Embedder>> + Send + Sync>;

/// An open index plus the models that serve it.
pub struct Engine {
    config: Config,
    index: Index,
    embedder_info: EmbedderInfo,
    embedder: OnceLock<Arc<dyn Embedder>>,
    loader: Loader,
    chunker: OnceLock<Chunker>,
    generator: OnceLock<Arc<dyn Generator>>,
    /// Held by every writer (ingest, remove, add): one change set at a time.
    writes: Mutex<()>,
}

/// A chunk with the text around it in its document: what a reader opens
/// to check a citation.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Passage {
    /// Chunk id.
    pub chunk_id: ChunkId,
    /// Document id.
    pub doc_id: DocId,
    /// Source path.
    pub path: String,
    /// Heading path.
    pub heading: Vec<String>,
    /// Byte range in the source.
    #[schema(schema_with = crate::types::byte_range_schema)]
    pub byte_range: std::ops::Range<usize>,
    /// The chunk's text (the passage itself).
    pub text: String,
    /// The text just before it (the previous chunk, less any overlap).
    pub before: String,
    /// The text just after it (the next chunk, less any overlap).
    pub after: String,
}

/// What `lore status` reports.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Status {
    /// Index directory.
    #[schema(value_type = String)]
    pub index: PathBuf,
    /// Documents.
    pub documents: u64,
    /// Chunks.
    pub chunks: u64,
    /// Live vectors.
    pub vectors: u64,
    /// Keyword entries.
    pub keyword_docs: u64,
    /// Removed vectors still in the graph.
    pub tombstones: u64,
    /// The embedder the index was built with.
    pub embedder: EmbedderStatus,
    /// Bytes on disk.
    pub index_bytes: u64,
    /// True when the stores agree.
    pub consistent: bool,
}

/// Embedder part of [`Status`].
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct EmbedderStatus {
    /// Embedder id.
    pub id: String,
    /// Vector dimension.
    pub dim: usize,
    /// Model directory configured.
    #[schema(value_type = String)]
    pub path: PathBuf,
}

impl Engine {
    /// Opens the configured index with the configured BERT embedder. The
    /// model's identity is checked against the index at once; its weights are
    /// loaded on first use, so `status` stays fast.
    pub fn open(config: Config) -> Result<Engine> {
        config.validate()?;
        let dir = config.embedder_dir();
        let info = BertEmbedder::identify(&dir)?;
        let (max_tokens, batch) = (config.embedder.max_tokens, config.embedder.batch_size);
        let loader: Loader = Box::new(move || {
            Ok(Arc::new(BertEmbedder::load(&dir, max_tokens, batch)?) as Arc<dyn Embedder>)
        });
        Self::build(config, info, loader)
    }

    /// Like [`Engine::open`] for commands that only use an index: a missing
    /// index is reported instead of created.
    pub fn open_existing(config: Config) -> Result<Engine> {
        if !Manifest::exists(&config.index) {
            return Err(Error::NotFound(format!(
                "no index at {} (create one with `lore ingest <PATH>`)",
                config.index.display()
            )));
        }
        Self::open(config)
    }

    /// Opens the configured index with an embedder the caller built (a fake
    /// in tests, a remote model in other programs).
    pub fn with_embedder(config: Config, embedder: Arc<dyn Embedder>) -> Result<Engine> {
        config.validate()?;
        let info = EmbedderInfo {
            id: embedder.id().to_string(),
            dim: embedder.dim(),
        };
        let shared = embedder.clone();
        Self::build(config, info, Box::new(move || Ok(shared.clone())))
    }

    fn build(config: Config, info: EmbedderInfo, loader: Loader) -> Result<Engine> {
        let index = Index::open(&config.index, &info, &config.hnsw)?;
        Ok(Engine {
            config,
            index,
            embedder_info: info,
            embedder: OnceLock::new(),
            loader,
            chunker: OnceLock::new(),
            generator: OnceLock::new(),
            writes: Mutex::new(()),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The index (for benchmarks, tools, and the server's probes and
    /// shutdown; front ends go through the methods above).
    pub fn index(&self) -> &Index {
        &self.index
    }

    fn writer(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.writes
            .lock()
            .map_err(|_| Error::store("docs", "an earlier write panicked"))
    }

    /// Documents in id order that `readers` may read and whose path
    /// contains `path_contains` (any case; all when empty): `limit` of them
    /// after the first `offset`, and how many match in all.
    pub fn documents(
        &self,
        readers: &Readers,
        path_contains: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<DocRecord>, usize)> {
        let needle = path_contains.to_lowercase();
        let matching: Vec<DocRecord> = self
            .index
            .docs()
            .all_docs()?
            .into_iter()
            .filter(|d| readers.may_read(d) && d.path.to_lowercase().contains(&needle))
            .collect();
        let total = matching.len();
        Ok((
            matching.into_iter().skip(offset).take(limit).collect(),
            total,
        ))
    }

    /// One document by id, if `readers` may read it (else not found, the
    /// same as a document that does not exist).
    pub fn document(&self, readers: &Readers, id: &str) -> Result<DocRecord> {
        self.index
            .docs()
            .doc(&DocId(id.to_string()))?
            .filter(|d| readers.may_read(d))
            .ok_or_else(|| Error::NotFound(format!("document {id}")))
    }

    /// A chunk and the chunks either side of it in its document, if
    /// `readers` may read the document (else not found).
    pub fn passage(&self, readers: &Readers, id: &str) -> Result<Passage> {
        let docs = self.index.docs();
        let missing = || Error::NotFound(format!("chunk {id}"));
        let chunk = docs.chunk(&ChunkId(id.to_string()))?.ok_or_else(missing)?;
        let doc = docs
            .doc(&chunk.doc_id)?
            .filter(|d| readers.may_read(d))
            .ok_or_else(missing)?;
        let at = doc.chunks.iter().position(|c| *c == chunk.id);
        let neighbour = |offset: isize| -> Result<Option<ChunkRecord>> {
            let Some(i) = at.and_then(|i| i.checked_add_signed(offset)) else {
                return Ok(None);
            };
            match doc.chunks.get(i) {
                Some(id) => docs.chunk(id),
                None => Ok(None),
            }
        };
        let before = neighbour(-1)?.map_or_else(String::new, |c| text_before(&c, &chunk));
        let after = neighbour(1)?.map_or_else(String::new, |c| text_after(&chunk, &c));
        Ok(Passage {
            chunk_id: chunk.id,
            doc_id: chunk.doc_id,
            path: doc.path,
            heading: chunk.heading,
            byte_range: chunk.byte_range,
            text: chunk.text,
            before,
            after,
        })
    }

    /// The embedder, loading it on first use.
    pub fn embedder(&self) -> Result<&Arc<dyn Embedder>> {
        if let Some(embedder) = self.embedder.get() {
            return Ok(embedder);
        }
        let loaded = (self.loader)()?;
        Ok(self.embedder.get_or_init(|| loaded))
    }

    /// The generator, loading it on first use.
    pub fn generator(&self) -> Result<&Arc<dyn Generator>> {
        if let Some(generator) = self.generator.get() {
            return Ok(generator);
        }
        let loaded: Arc<dyn Generator> =
            Arc::new(GgufGenerator::load(&self.config.generator_path())?);
        Ok(self.generator.get_or_init(|| loaded))
    }

    fn chunker(&self) -> Result<&Chunker> {
        if let Some(chunker) = self.chunker.get() {
            return Ok(chunker);
        }
        let sizer = self.embedder()?.sizer()?;
        let chunker = Chunker::new(
            sizer,
            self.config.chunk.max_tokens,
            self.config.chunk.overlap_tokens,
        )?;
        Ok(self.chunker.get_or_init(|| chunker))
    }

    /// Searches the index.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse> {
        crate::search::search(
            &self.index,
            self.embedder()?.as_ref(),
            &self.config.search,
            request,
        )
    }

    /// Counts and consistency of the index.
    pub fn status(&self) -> Result<Status> {
        let s = self.index.status()?;
        Ok(Status {
            index: self.config.index.clone(),
            documents: s.documents,
            chunks: s.chunks,
            vectors: s.vectors,
            keyword_docs: s.keyword_docs,
            tombstones: s.tombstones,
            embedder: EmbedderStatus {
                id: self.embedder_info.id.clone(),
                dim: self.embedder_info.dim,
                path: self.config.embedder_dir(),
            },
            index_bytes: s.index_bytes,
            consistent: s.consistent,
        })
    }
}

/// `previous`'s text up to where `chunk` starts, when its text is exactly
/// its byte range of the source (else all of it).
fn text_before(previous: &ChunkRecord, chunk: &ChunkRecord) -> String {
    let keep = chunk
        .byte_range
        .start
        .saturating_sub(previous.byte_range.start);
    let exact = previous.text.len() == previous.byte_range.len();
    match previous.text.get(..keep) {
        Some(text) if exact => text.to_string(),
        _ => previous.text.clone(),
    }
}

/// `next`'s text from where `chunk` ends, when its text is exactly its byte
/// range of the source (else all of it).
fn text_after(chunk: &ChunkRecord, next: &ChunkRecord) -> String {
    let skip = chunk.byte_range.end.saturating_sub(next.byte_range.start);
    let exact = next.text.len() == next.byte_range.len();
    match next.text.get(skip..) {
        Some(text) if exact => text.to_string(),
        _ => next.text.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Slot;

    fn chunk(range: std::ops::Range<usize>, text: &str) -> ChunkRecord {
        ChunkRecord {
            id: ChunkId(format!("c{}", range.start)),
            doc_id: DocId("d".into()),
            slot: Slot(0),
            byte_range: range,
            heading: Vec::new(),
            text: text.into(),
        }
    }

    #[test]
    fn neighbours_lose_their_overlap_with_the_passage() {
        let source = "alpha beta gamma delta";
        let previous = chunk(0..10, &source[0..10]);
        let cited = chunk(6..16, &source[6..16]);
        let next = chunk(11..22, &source[11..22]);
        assert_eq!(text_before(&previous, &cited), "alpha ");
        assert_eq!(text_after(&cited, &next), " delta");
    }

    #[test]
    fn neighbours_whose_text_is_not_the_source_are_kept_whole() {
        let previous = chunk(0..40, "converted text");
        let cited = chunk(20..60, "more");
        assert_eq!(text_before(&previous, &cited), "converted text");
    }
}
