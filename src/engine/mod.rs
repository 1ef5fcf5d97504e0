//! [`Engine`]: the one façade the CLI, the HTTP server and embedding
//! programs call — collections, `ingest`, `remove`, `search`, `ask`,
//! `status`. It owns the configuration, the collections of the index
//! directory and the (lazily loaded) models.

mod ask;
mod collection;
mod conversation;
mod document;
mod embed_rows;
mod import;
mod ingest;
mod lines;
mod referent;
mod request;
mod snapshot;
pub mod technique;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;

pub use crate::types::DEFAULT_COLLECTION;
pub use collection::Collection;
pub use conversation::{MAX_TURN_CHARS, REWRITE_TOKENS, Rewrite, Speaker, Turn};
pub use document::PROGRESS_TARGET;
pub use embed_rows::{EmbedReport, embed_documents};
pub use import::{ImportReport, ImportRow};
pub use ingest::{IngestReport, NoProgress, Progress, RemoveReport, WriteScope};
pub use request::{
    Abstention, AskRequest, AskResponse, AskTimings, ConstraintOptions, MAX_DOCUMENT_NAME, MAX_K,
    MAX_SAMPLES, PartAnswer, Reflection, Techniques, Unsourced, Verdict, Vote,
};
pub use snapshot::{CURRENT, SnapshotReport};
pub use technique::Technique;

use crate::config::Config;
use crate::embed::bert::{Backend, BertEmbedder, Int8};
use crate::embed::{Embedder, EmbedderInfo, Precision};
use crate::error::{Error, Result};
use crate::generate::Generator;
use crate::generate::gguf::GgufGenerator;
use crate::prompt::SourceKey;
use crate::search::{Readers, SearchRequest, SearchResponse};
use crate::store::manifest::Manifest;
use crate::types::{ChunkId, ChunkRecord, DocId, DocRecord};
use collection::{Collections, Model, Resolve};

/// An open index directory (its collections) plus the models that serve it.
pub struct Engine {
    config: Config,
    collections: Collections,
    resolve: Box<Resolve>,
    generator: OnceLock<Arc<dyn Generator>>,
    /// Held by every writer (ingest, remove, add, collection changes): one
    /// change set at a time.
    writes: Mutex<()>,
    /// The sources of the last answer's prompt, in its order
    /// (`generator.keep_source_order`).
    last_sources: Mutex<Vec<SourceKey>>,
}

/// A chunk with the text around it in its document: what a reader opens
/// to check a citation.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Passage {
    /// The collection it is in.
    pub collection: String,
    /// Chunk id.
    pub chunk_id: ChunkId,
    /// Document id.
    pub doc_id: DocId,
    /// Source path.
    pub path: String,
    /// Heading path.
    pub heading: Vec<String>,
    /// Byte range in the source.
    #[cfg_attr(feature = "server", schema(schema_with = crate::types::byte_range_schema))]
    pub byte_range: std::ops::Range<usize>,
    /// The chunk's text (the passage itself).
    pub text: String,
    /// The text just before it (the previous chunk, less any overlap).
    pub before: String,
    /// The text just after it (the next chunk, less any overlap).
    pub after: String,
}

/// What `lore status` reports.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Status {
    /// Index directory.
    #[cfg_attr(feature = "server", schema(value_type = String))]
    pub index: PathBuf,
    /// The collection counted.
    pub collection: String,
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
    /// The embedder the collection was built with.
    pub embedder: EmbedderStatus,
    /// Bytes on disk.
    pub index_bytes: u64,
    /// True when the stores agree.
    pub consistent: bool,
}

/// Embedder part of [`Status`].
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct EmbedderStatus {
    /// Embedder id.
    pub id: String,
    /// Vector dimension.
    pub dim: usize,
    /// How this collection's documents are embedded (fixed when it was
    /// created).
    pub documents: Precision,
    /// Model directory.
    #[cfg_attr(feature = "server", schema(value_type = String))]
    pub path: PathBuf,
}

/// One collection, as `lore collection list` and `GET /v1/collections`
/// show it (read without scanning any store).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct CollectionInfo {
    /// Its name.
    pub name: String,
    /// Chunks searchable (live vectors).
    pub chunks: u64,
    /// Embedder id.
    pub embedder: String,
    /// Vector dimension.
    pub dim: usize,
}

impl CollectionInfo {
    fn of(collection: &Collection) -> Result<CollectionInfo> {
        Ok(CollectionInfo {
            name: collection.name().to_string(),
            chunks: collection.index().sizes()?.vectors,
            embedder: collection.embedder_info().id.clone(),
            dim: collection.embedder_info().dim,
        })
    }
}

impl Engine {
    /// Opens the configured index with the configured BERT embedder (and,
    /// for a collection that recorded another model directory, that one).
    /// Each model's identity is checked against its collection at once; its
    /// weights are loaded on first use, so `status` stays fast.
    pub fn open(config: Config) -> Result<Engine> {
        config.validate()?;
        let configured = config.embedder_dir();
        let (max_tokens, batch) = (config.embedder.max_tokens, config.embedder.batch_size);
        let queries = config.embedder.int8_queries;
        // New indexes embed their documents as configured.
        let configured_precision = Precision::int8_if(config.embedder.int8_documents);
        let cache: Mutex<HashMap<(PathBuf, Precision), Arc<Model>>> = Mutex::default();
        let resolve = move |spec: Option<&Path>, recorded: Option<Precision>| {
            let documents = recorded.unwrap_or(configured_precision);
            let dir = spec.map_or_else(|| configured.clone(), Path::to_path_buf);
            let mut cache = cache
                .lock()
                .map_err(|_| Error::store("models", "an earlier load panicked"))?;
            if let Some(model) = cache.get(&(dir.clone(), documents)) {
                return Ok(model.clone());
            }
            let info = EmbedderInfo {
                documents,
                ..BertEmbedder::identify(&dir)?
            };
            let path = dir.clone();
            let backend = Backend::Packed(Int8 {
                queries,
                documents: documents == Precision::Int8,
            });
            let model = Arc::new(Model::lazy(info, dir.clone(), move || {
                let embedder = BertEmbedder::load_with(&path, max_tokens, batch, backend)?;
                Ok(Arc::new(embedder) as Arc<dyn Embedder>)
            }));
            cache.insert((dir, documents), model.clone());
            Ok::<_, Error>(model)
        };
        Self::build(config, Box::new(resolve))
    }

    /// Like [`Engine::open`] for commands that only use an index: a missing
    /// index is reported instead of created.
    pub fn open_existing(config: Config) -> Result<Engine> {
        if !Manifest::exists(&config.index) {
            return Err(Error::NoIndex {
                index: config.index.clone(),
            });
        }
        Self::open(config)
    }

    /// Opens the configured index with an embedder the caller built (a fake
    /// in tests, a remote model in other programs), for every collection.
    pub fn with_embedder(config: Config, embedder: Arc<dyn Embedder>) -> Result<Engine> {
        Self::with_embedders(config, move |spec| match spec {
            None => Ok(embedder.clone()),
            Some(dir) => Err(Error::Config(format!(
                "this engine was built with one embedder; it cannot load {}",
                dir.display()
            ))),
        })
    }

    /// Opens the configured index with embedders the caller builds: `make`
    /// gets a collection's recorded model directory (`None`: the default
    /// embedder) and is asked once per directory. A new index records the
    /// precision the embedder reports ([`Embedder::documents`]); an
    /// existing one's record is taken as given (how the caller's embedder
    /// computes is the caller's).
    pub fn with_embedders(
        config: Config,
        make: impl Fn(Option<&Path>) -> Result<Arc<dyn Embedder>> + Send + Sync + 'static,
    ) -> Result<Engine> {
        config.validate()?;
        let cache: Mutex<HashMap<Option<PathBuf>, Arc<dyn Embedder>>> = Mutex::default();
        let resolve = move |spec: Option<&Path>, recorded: Option<Precision>| {
            let key = spec.map(Path::to_path_buf);
            let mut cache = cache
                .lock()
                .map_err(|_| Error::store("models", "an earlier load panicked"))?;
            let embedder = match cache.get(&key) {
                Some(embedder) => embedder.clone(),
                None => {
                    let embedder = make(spec)?;
                    cache.insert(key, embedder.clone());
                    embedder
                }
            };
            let documents = recorded.unwrap_or_else(|| embedder.documents());
            Ok::<_, Error>(Arc::new(Model::ready(embedder, documents)))
        };
        Self::build(config, Box::new(resolve))
    }

    /// Answers with `generator` instead of loading the configured GGUF file
    /// (another model file, a remote model, a fake in tests).
    pub fn with_generator(self, generator: Arc<dyn Generator>) -> Engine {
        let cell = OnceLock::new();
        let _ = cell.set(generator);
        Engine {
            generator: cell,
            ..self
        }
    }

    fn build(config: Config, resolve: Box<Resolve>) -> Result<Engine> {
        let collections = Collections::open(&config.index, &config, resolve.as_ref())?;
        Ok(Engine {
            config,
            collections,
            resolve,
            generator: OnceLock::new(),
            writes: Mutex::new(()),
            last_sources: Mutex::default(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The index directory (which holds every collection).
    pub fn dir(&self) -> &Path {
        &self.config.index
    }

    /// The collection `name` (not found: [`Error::NotFound`]).
    pub fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        self.collections
            .get(name, &self.config, self.resolve.as_ref())
    }

    /// True when the collection `name` exists.
    pub fn has_collection(&self, name: &str) -> bool {
        self.collections.exists(name)
    }

    /// The names of every collection, `default` first (nothing is opened).
    pub fn collection_names(&self) -> Result<Vec<String>> {
        self.collections.names()
    }

    /// Every collection, `default` first.
    pub fn collections(&self) -> Result<Vec<CollectionInfo>> {
        self.collections
            .names()?
            .iter()
            .map(|name| self.collection(name).and_then(|c| CollectionInfo::of(&c)))
            .collect()
    }

    /// Creates the collection `name`, embedded with the model in
    /// `embedder` (a model directory; none: the configured embedder), on
    /// behalf of `scope` (for the audit trail).
    pub fn create_collection(
        &self,
        name: &str,
        embedder: Option<&Path>,
        scope: &WriteScope,
    ) -> Result<CollectionInfo> {
        let _writer = self.writer()?;
        let created =
            self.collections
                .create(name, embedder, &self.config, self.resolve.as_ref())?;
        crate::audit::Event::new(&scope.actor, name, crate::audit::Action::CollectionCreate)
            .record(self.dir());
        CollectionInfo::of(&created)
    }

    /// Drops the collection `name` with all its documents, on behalf of
    /// `scope`; returns how many chunks it held.
    pub fn drop_collection(&self, name: &str, scope: &WriteScope) -> Result<u64> {
        let _writer = self.writer()?;
        let chunks = self.collection(name)?.index().sizes()?.vectors;
        self.collections.drop_collection(name)?;
        crate::audit::Event::new(&scope.actor, name, crate::audit::Action::CollectionDrop)
            .chunks(chunks as usize)
            .record(self.dir());
        Ok(chunks)
    }

    /// Refills collection `name`'s vector and keyword indexes from its doc
    /// store (`lore index rebuild`); returns its status after.
    pub fn rebuild(&self, name: &str) -> Result<Status> {
        let _writer = self.writer()?;
        self.collection(name)?.index().rebuild()?;
        self.status(name)
    }

    /// The collections opened so far (each is opened on first use).
    pub fn open_collections(&self) -> Result<Vec<Arc<Collection>>> {
        self.collections.opened()
    }

    /// Makes every change durable in every open collection.
    pub fn checkpoint(&self) -> Result<()> {
        for collection in self.collections.opened()? {
            collection.index().checkpoint()?;
        }
        Ok(())
    }

    /// Checkpoints every open collection whose vector merge finished in
    /// the background, so that its new segment is the one on disk (`lore
    /// serve` calls it every few seconds).
    pub fn settle_merges(&self) -> Result<()> {
        for collection in self.collections.opened()? {
            if collection.index().vectors().merge_finished() {
                let _writer = self.writer()?;
                collection
                    .index()
                    .checkpoint_with(crate::store::Checkpoint::Settle)?;
            }
        }
        Ok(())
    }

    fn writer(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.writes
            .lock()
            .map_err(|_| Error::store("docs", "an earlier write panicked"))
    }

    /// Documents of `collection` in id order that `readers` may read and
    /// whose path contains `path_contains` (any case; all when empty):
    /// `limit` of them after the first `offset`, and how many match in all.
    pub fn documents(
        &self,
        collection: &str,
        readers: &Readers,
        path_contains: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<DocRecord>, usize)> {
        let needle = path_contains.to_lowercase();
        let matching: Vec<DocRecord> = self
            .collection(collection)?
            .index()
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

    /// One document of `collection` by id, if `readers` may read it (else
    /// not found, the same as a document that does not exist).
    pub fn document(&self, collection: &str, readers: &Readers, id: &str) -> Result<DocRecord> {
        self.collection(collection)?
            .index()
            .docs()
            .doc(&DocId(id.to_string()))?
            .filter(|d| readers.may_read(d))
            .ok_or_else(|| Error::NotFound(format!("document {id}")))
    }

    /// One document of `collection` by id with its whole text, put back
    /// together from its chunks in order (overlaps taken once), if
    /// `readers` may read it (else not found).
    pub fn document_text(
        &self,
        collection: &str,
        readers: &Readers,
        id: &str,
    ) -> Result<(DocRecord, String)> {
        let doc = self.document(collection, readers, id)?;
        let collection = self.collection(collection)?;
        let docs = collection.index().docs();
        let mut text = String::new();
        let mut previous: Option<ChunkRecord> = None;
        for chunk_id in &doc.chunks {
            let Some(chunk) = docs.chunk(chunk_id)? else {
                return Err(Error::store(
                    "docs",
                    format!("document {id} names a missing chunk {}", chunk_id.0),
                ));
            };
            match &previous {
                None => text.push_str(&chunk.text),
                Some(before) if chunk.byte_range.start > before.byte_range.end => {
                    text.push_str("\n\n");
                    text.push_str(&chunk.text);
                }
                Some(before) => text.push_str(&text_after(before, &chunk)),
            }
            previous = Some(chunk);
        }
        Ok((doc, text))
    }

    /// A chunk of `collection` and the chunks either side of it in its
    /// document, if `readers` may read the document (else not found).
    pub fn passage(&self, collection: &str, readers: &Readers, id: &str) -> Result<Passage> {
        let collection = self.collection(collection)?;
        let docs = collection.index().docs();
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
            collection: collection.name().to_string(),
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

    /// Bytes of keys and values the loaded generator holds between
    /// prompts (0 before it is loaded).
    pub fn generator_cache_bytes(&self) -> usize {
        self.generator.get().map_or(0, |g| g.cache_bytes())
    }

    /// The generator, loading it on first use.
    pub fn generator(&self) -> Result<&Arc<dyn Generator>> {
        if let Some(generator) = self.generator.get() {
            return Ok(generator);
        }
        let start = std::time::Instant::now();
        let path = self.config.generator_path();
        let loaded: Arc<dyn Generator> = Arc::new(GgufGenerator::load_with(
            &path,
            crate::generate::gguf::Options::of(&self.config.generator),
        )?);
        tracing::info!(
            model = %path.display(),
            ms = start.elapsed().as_millis() as u64,
            "generator loaded"
        );
        Ok(self.generator.get_or_init(|| loaded))
    }

    /// The context window prompts are built for: the configured
    /// `generator.context_tokens`, capped by the model's own.
    fn context_tokens(&self, generator: &dyn Generator) -> usize {
        self.config
            .generator
            .context_tokens
            .min(generator.context_length())
    }

    /// Searches the request's collections (results fused across them).
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse> {
        let collections = request
            .collection_names()
            .iter()
            .map(|name| self.collection(name))
            .collect::<Result<Vec<_>>>()?;
        let embedders = collections
            .iter()
            .map(|c| match request.mode {
                crate::search::Mode::Bm25 => Ok(None),
                _ => c.embedder().map(|e| Some(e.as_ref())),
            })
            .collect::<Result<Vec<_>>>()?;
        let targets: Vec<crate::search::Target<'_>> = collections
            .iter()
            .zip(embedders)
            .map(|(c, embedder)| crate::search::Target {
                name: c.name(),
                index: c.index(),
                embedder,
            })
            .collect();
        crate::search::search(&targets, &self.config.search, request)
    }

    /// Counts and consistency of `collection`.
    pub fn status(&self, collection: &str) -> Result<Status> {
        let collection = self.collection(collection)?;
        let s = collection.index().status()?;
        Ok(Status {
            index: self.config.index.clone(),
            collection: collection.name().to_string(),
            documents: s.documents,
            chunks: s.chunks,
            vectors: s.vectors,
            keyword_docs: s.keyword_docs,
            tombstones: s.tombstones,
            embedder: EmbedderStatus {
                id: collection.embedder_info().id.clone(),
                dim: collection.embedder_info().dim,
                documents: collection.embedder_info().documents,
                path: collection.embedder_path().to_path_buf(),
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
