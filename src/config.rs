//! Configuration: built-in defaults < config file (`lore.toml`) < environment
//! (`LORE_*`) < command-line flags. This module owns the first three layers and
//! validation; the CLI applies its flags on top and calls [`Config::validate`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// File name looked up in the working directory when no `--config` is given.
pub const CONFIG_FILE: &str = "lore.toml";

/// All settings of lore.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Index directory (`--index`, `LORE_INDEX`).
    pub index: PathBuf,
    /// The collection commands use (`--collection`, `LORE_COLLECTION`);
    /// search and ask take several, comma-separated.
    pub collection: String,
    /// Directory of installed models (`LORE_MODELS`).
    pub models: PathBuf,
    /// Worker threads for embedding and parsing; `None` = all cores (`LORE_THREADS`).
    pub threads: Option<usize>,
    /// Embedder settings.
    pub embedder: EmbedderConfig,
    /// Chunking settings.
    pub chunk: ChunkConfig,
    /// Ingest settings.
    pub ingest: IngestConfig,
    /// Vector index settings.
    pub hnsw: HnswConfig,
    /// Retrieval settings.
    pub search: SearchConfig,
    /// Generator settings.
    pub generator: GeneratorConfig,
    /// HTTP server settings (`lore serve`).
    pub server: ServerConfig,
    /// `--watch` timing (`lore ingest --watch`, `lore serve --watch`).
    pub watch: WatchConfig,
    /// Settings of one collection, by name (`[collections.NAME]`).
    pub collections: BTreeMap<String, CollectionConfig>,
    /// The Milvus server of collections whose vectors live there.
    pub milvus: MilvusConfig,
}

/// Where a collection's vectors are indexed.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VectorsBackend {
    /// The embedded graph (hnsw_rs and the compact segment) in the index
    /// directory.
    #[default]
    Hnsw,
    /// A Milvus server (`[milvus]`); needs a lore built with the `milvus`
    /// feature.
    Milvus,
}

/// `[collections.NAME]`: settings of one collection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CollectionConfig {
    /// Where its vectors are indexed.
    pub vectors: VectorsBackend,
}

/// `[milvus]`: the server, and how lore uses it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MilvusConfig {
    /// Address (`http://host:19530`, `https://…` for TLS); env `LORE_MILVUS_URI`.
    pub uri: String,
    /// Database the collections are made in.
    pub database: String,
    /// File holding the token (`user:password` or an API key) where the
    /// server needs one; env `LORE_MILVUS_TOKEN` gives the token itself. A
    /// named file that cannot be read, or is empty, is an error.
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the server's TLS certificate, for a
    /// private CA (`https://` URIs; the system's roots otherwise). A named
    /// file that does not exist is an error.
    pub ca_file: Option<PathBuf>,
    /// Prefix of the Milvus collection names lore makes.
    pub prefix: String,
    /// Milvus index type of the vector field (`HNSW`, `FLAT`, `AUTOINDEX`…).
    pub index: String,
    /// Seconds one request, retries included, may take before it fails.
    pub timeout_s: u64,
}

impl Default for MilvusConfig {
    fn default() -> Self {
        MilvusConfig {
            uri: "http://127.0.0.1:19530".into(),
            database: "default".into(),
            token_file: None,
            ca_file: None,
            prefix: "lore".into(),
            index: "HNSW".into(),
            timeout_s: 30,
        }
    }
}

/// `lore serve`: address, keys, limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind (`--addr`).
    pub addr: String,
    /// API keys as `role:key` (`read`, `write` or `admin`); env
    /// `LORE_API_KEYS` (comma-separated). Keys made with `lore key create`
    /// are accepted too. No keys at all: allowed on loopback only.
    pub api_keys: Vec<String>,
    /// Generations running at once (each holds the model).
    pub generations: usize,
    /// Generations that may wait for a turn; beyond that, 429.
    pub queue: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Seconds before a request that has not produced a response fails.
    pub request_timeout_s: u64,
    /// Folders `POST /v1/ingest` may read (nothing when empty).
    pub ingest_roots: Vec<PathBuf>,
    /// Seconds a client has to send a request body (slow senders get 408).
    pub body_timeout_s: u64,
    /// Host names the server answers to (the `Host` header, port ignored).
    /// Empty: `localhost` and the loopback addresses when bound to a
    /// loopback address (against DNS rebinding), anything otherwise.
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://tool.example.com`) whose pages may send writes
    /// (POST, DELETE). A browser request from any other origin is refused.
    pub allowed_origins: Vec<String>,
    /// Origins (`https://tool.example.com`) whose pages may call the API
    /// across sites (CORS), writes included. Empty: no CORS headers, so
    /// only the server's own page can read its responses.
    pub cors_origins: Vec<String>,
    /// Serve reads only (a replica of a snapshot): every write is a 403
    /// `read_only`, and nothing is written to the index on shutdown.
    pub read_only: bool,
    /// Publish a snapshot of the index into this folder (`current` links
    /// the newest; three are kept) at start and every `snapshot_every_s`.
    pub snapshot_dir: Option<PathBuf>,
    /// Seconds between published snapshots.
    pub snapshot_every_s: u64,
    /// Folders (inside `ingest_roots`) whose changes are ingested as they
    /// happen (`--watch`).
    pub watch: Vec<PathBuf>,
    /// Scheduling priority (Unix nice, 0–19) of the threads that run
    /// searches, ingestion and other non-generation work: a generation
    /// runs at the process's own priority, so a search load slows
    /// decoding little. 0: everything shares the cores equally.
    pub work_nice: i32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: "127.0.0.1:8080".into(),
            api_keys: Vec::new(),
            generations: 1,
            queue: 8,
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout_s: 300,
            ingest_roots: Vec::new(),
            body_timeout_s: 60,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            cors_origins: Vec::new(),
            read_only: false,
            snapshot_dir: None,
            snapshot_every_s: 300,
            watch: Vec::new(),
            work_nice: 19,
        }
    }
}

/// When `--watch` applies what it saw (`[watch]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    /// Quiet time after the last event before a batch is applied.
    pub debounce_ms: u64,
    /// Longest a batch waits after its first event while events keep
    /// coming (a long copy): bounds the lag.
    pub max_delay_ms: u64,
    /// Seconds between full rescans (0: never), for events the OS dropped.
    pub rescan_s: u64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            debounce_ms: 300,
            max_delay_ms: 2_000,
            rescan_s: 60,
        }
    }
}

/// Which GGUF model generates answers, and how much it is given.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorConfig {
    /// `default` (Qwen2.5-Coder-0.5B), `light` (SmolLM2-135M), `large`
    /// (Qwen2.5-Coder-1.5B: better answers, about 2.4× slower; installed
    /// by `scripts/install-models.sh --large`), `gemma` (Gemma 3 270M), or
    /// a path to any GGUF file of a supported architecture: qwen2, qwen3,
    /// llama, gemma3 (`LORE_GENERATOR`).
    pub model: Option<String>,
    /// Prompt plus answer, in tokens (capped by the model's own window):
    /// bounds prompt-processing time on a CPU.
    pub context_tokens: usize,
    /// Below this best dense cosine, lore abstains without asking the model.
    /// Calibrated on corpora/handbook with all-MiniLM-L6-v2: answerable
    /// questions scored 0.35–0.78, out-of-corpus ones 0.07–0.32.
    pub min_score: f32,
    /// Below this support (the share of the question's terms, weighted by
    /// rarity, that the best source holds), lore abstains without asking
    /// the model: the documents are on the subject but do not cover what
    /// is asked. Calibrated with `lore eval --qa` on three corpora (see
    /// BENCHMARKS.md); 0 turns the check off.
    pub min_support: f64,
    /// Most tokens one `ask` may generate in all: `max_tokens` × samples,
    /// twice with chain of thought, plus one answer for reflection. Bounds
    /// the time one request can hold the model.
    pub max_request_tokens: usize,
    /// Worked examples shown before the sources with `--technique few-shot`
    /// (`[[generator.examples]]` with `source`, `question`, `answer`).
    pub examples: Vec<Example>,
    /// Most tokens of earlier conversation turns shown to the pass that
    /// rewrites a follow-up into a standalone question; older turns are
    /// dropped first. Bounds that pass's prompt time.
    pub history_tokens: usize,
    /// The model's matrix products in int8, prompts and decoding (its
    /// weights requantized per output row at load, in place of the GGUF's
    /// own; inputs per row; VNNI where the CPU has it); false: the GGUF's
    /// own quantized kernels for decoding and f32 on weights dequantized
    /// per call for prompts.
    pub int8_weights: bool,
    /// With `int8_weights`: keep the requantized weights on disk
    /// (`~/.cache/lore/int8`, one file per model, checksummed) so the next
    /// process that loads the model reads them instead of requantizing.
    pub int8_cache: bool,
    /// Megabytes of keys and values kept on disk (`~/.cache/lore/kv`) for
    /// the next process that loads the model: a prompt's instructions,
    /// and sources' bodies with `source_cache_mb`; least recently used
    /// dropped first. 0: none.
    pub kv_disk_mb: u64,
    /// Megabytes of sources' keys and values kept to reuse in later
    /// prompts at any position (a source then attends to the instructions
    /// before the sources and to itself, not to the sources before it);
    /// 0: every source is computed in place.
    pub source_cache_mb: usize,
    /// With `source_cache_mb`: the share (0–1) of each reused source's
    /// positions computed again through every layer where it lands, the
    /// ones its new place changes most, so the source attends to the
    /// sources before it (CacheBlend); 0: none.
    pub source_recompute: f32,
    /// Sources the previous prompt also gave come first, in its order, so
    /// the keys and values computed for them are reused as they stand (a
    /// new question over the same sources starts in a fraction of the
    /// time); false: always in rank order.
    pub keep_source_order: bool,
    /// Withdraw a text answer that names commands, options, settings or
    /// files (code spans, `--flags`, `snake_case`, `dotted.names`), or
    /// figures of two digits or more, that none of its sources holds (a
    /// figure may also come from the question): it was not read from them.
    pub check_names: bool,
}

/// A worked example for few-shot prompting: one source, a question, and
/// the answer lore should give (citing the source as `[1]`, or abstaining).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// The example's one source text.
    pub source: String,
    /// The question.
    pub question: String,
    /// The answer to imitate.
    pub answer: String,
}

/// Two generic examples (written for lore, about no shipped corpus): one
/// answer that cites, one abstention.
fn default_examples() -> Vec<Example> {
    vec![
        Example {
            source: "Backups run every night at 02:00 and are kept for 30 days.".into(),
            question: "How long are backups kept?".into(),
            answer: "According to [1], backups are kept for 30 days.".into(),
        },
        Example {
            source: "The build needs Rust 1.90 or newer and runs with cargo.".into(),
            question: "Who maintains the build server?".into(),
            answer: "I don't know based on the documents.".into(),
        },
    ]
}

/// Tokens of the context window kept for instructions, sources and the
/// question: an answer may take the rest.
pub const PROMPT_ROOM: usize = 256;

impl GeneratorConfig {
    /// The longest answer the context window leaves room for.
    pub fn max_answer_tokens(&self) -> usize {
        self.context_tokens.saturating_sub(PROMPT_ROOM).max(1)
    }
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            model: None,
            context_tokens: 2048,
            min_score: 0.30,
            min_support: MIN_SUPPORT,
            max_request_tokens: 4096,
            examples: default_examples(),
            history_tokens: 384,
            int8_weights: true,
            int8_cache: true,
            kv_disk_mb: 64,
            source_cache_mb: 0,
            source_recompute: 0.5,
            keep_source_order: true,
            check_names: true,
        }
    }
}

/// The default `generator.min_support`, calibrated on the dev halves of
/// three corpora's questions (BENCHMARKS.md, "A support check").
pub const MIN_SUPPORT: f64 = 0.5;

/// File names of the installed generators.
const DEFAULT_GENERATOR: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
const LIGHT_GENERATOR: &str = "smollm2-135m-instruct-q4_1.gguf";
const GEMMA_GENERATOR: &str = "gemma-3-270m-q4_k_m.gguf";
const LARGE_GENERATOR: &str = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf";

/// How hybrid search combines its two ranked lists.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FusionMethod {
    /// Reciprocal rank fusion.
    Rrf,
    /// Min-max normalised scores, weighted sum.
    Linear,
}

/// Retrieval settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Fusion method of hybrid search.
    pub fusion: FusionMethod,
    /// Weight of the dense list in linear fusion (BM25 gets the rest).
    pub dense_weight: f32,
    /// Candidates taken from each retriever per requested hit.
    pub depth_factor: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            // Measured on SciFact dev (nDCG@10): linear 0.730, RRF 0.713.
            fusion: FusionMethod::Linear,
            dense_weight: 0.5,
            depth_factor: 4,
        }
    }
}

/// Which embedding model to use and how to batch it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderConfig {
    /// Model directory holding `config.json`, `tokenizer.json` and
    /// `model.safetensors`; default `<models>/all-minilm-l6-v2` (`LORE_EMBEDDER`).
    pub path: Option<PathBuf>,
    /// Chunks per forward pass.
    pub batch_size: usize,
    /// Longest input in tokens, special tokens included.
    pub max_tokens: usize,
    /// Short inputs (a search query, up to 64 tokens) through int8 dense
    /// layers where the CPU has AVX-512 VNNI: about twice as fast, and the
    /// same integers on every CPU.
    pub int8_queries: bool,
    /// Documents of a new index through int8 dense layers (about 1.7×
    /// the f32 throughput with VNNI; retrieval quality within 0.002
    /// nDCG@10 on SciFact). An existing index keeps the precision it was
    /// created with, so its vectors are all computed the same way.
    pub int8_documents: bool,
}

/// How documents are cut into chunks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkConfig {
    /// Largest chunk, in embedder tokens (without `[CLS]`/`[SEP]`).
    pub max_tokens: usize,
    /// Tokens shared by neighbouring chunks.
    pub overlap_tokens: usize,
}

/// Which files ingest reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Files larger than this are skipped with a message.
    pub max_file_bytes: u64,
    /// Only files matching one of these globs (all when empty).
    pub include: Vec<String>,
    /// Files matching any of these globs are left out.
    pub exclude: Vec<String>,
    /// Chunks embedded between two durable checkpoints of the keyword and
    /// vector indexes; bounds the work redone after a crash.
    pub checkpoint_chunks: usize,
}

/// HNSW graph parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HnswConfig {
    /// Neighbours per node (hnsw_rs accepts at most 256).
    pub max_connections: usize,
    /// Candidate list size while building (128: at a million chunks the
    /// build takes 12 minutes against 39 with 200, and the graph, searched
    /// with `ef_search` 256, finds 0.99 of the exact top 10; BENCHMARKS.md).
    pub ef_construction: usize,
    /// Candidate list size while searching (the compact segment walks a
    /// beam twice as wide and rescores this many).
    pub ef_search: usize,
    /// Rebuild the graph when tombstones exceed this fraction of its points.
    pub rebuild_ratio: f64,
    /// Merge the vectors written since the last merge (held in a mutable
    /// graph) into the compact segment once there are at least this many…
    pub merge_min: usize,
    /// …and they are at least this fraction of the segment's points.
    pub merge_ratio: f64,
    /// Build merged segments on a thread of their own while searches and
    /// writes go on (`lore serve` turns it on); off, a checkpoint waits for
    /// its merge, as a one-shot command must.
    pub background_merge: bool,
    /// Map a loaded graph's vectors from its dump file instead of reading
    /// them into memory: the kernel pages them in as searches touch them
    /// and may drop them again (vectors inserted since stay in memory).
    pub mmap_vectors: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            index: PathBuf::from("index"),
            collection: crate::types::DEFAULT_COLLECTION.into(),
            models: default_models_dir(),
            threads: None,
            embedder: EmbedderConfig::default(),
            chunk: ChunkConfig::default(),
            ingest: IngestConfig::default(),
            hnsw: HnswConfig::default(),
            search: SearchConfig::default(),
            generator: GeneratorConfig::default(),
            server: ServerConfig::default(),
            watch: WatchConfig::default(),
            collections: BTreeMap::new(),
            milvus: MilvusConfig::default(),
        }
    }
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        EmbedderConfig {
            path: None,
            batch_size: 16,
            max_tokens: 256,
            int8_queries: true,
            int8_documents: true,
        }
    }
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig {
            max_tokens: 254,
            overlap_tokens: 32,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_file_bytes: 50 * 1024 * 1024,
            include: Vec::new(),
            exclude: Vec::new(),
            checkpoint_chunks: 2048,
        }
    }
}

impl Default for HnswConfig {
    fn default() -> Self {
        HnswConfig {
            max_connections: 24,
            ef_construction: 128,
            ef_search: 256,
            rebuild_ratio: 0.25,
            merge_min: 1000,
            merge_ratio: 0.5,
            background_merge: false,
            mmap_vectors: false,
        }
    }
}

impl ServerConfig {
    /// True when `addr` resolves only to loopback addresses (then the
    /// server may run without keys).
    pub fn is_loopback(&self) -> Result<bool> {
        let parsed: Vec<std::net::SocketAddr> =
            std::net::ToSocketAddrs::to_socket_addrs(self.addr.as_str())
                .map_err(|e| Error::Config(format!("cannot resolve address {}: {e}", self.addr)))?
                .collect();
        Ok(!parsed.is_empty() && parsed.iter().all(|a| a.ip().is_loopback()))
    }
}

/// `$LORE_MODELS`, else `~/.cache/lore/models`.
fn default_models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LORE_MODELS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("lore").join("models")
}

impl Config {
    /// Defaults, then `file` (or `./lore.toml` when present), then `LORE_*`
    /// environment variables. Does not validate: flags may still change it.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None if Path::new(CONFIG_FILE).is_file() => Self::from_file(Path::new(CONFIG_FILE))?,
            None => Config::default(),
        };
        config.apply_env(|key| std::env::var(key).ok())?;
        Ok(config)
    }

    /// Parses a TOML config file; unknown keys are an error.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Applies `LORE_INDEX`, `LORE_COLLECTION`, `LORE_MODELS`, `LORE_EMBEDDER`, `LORE_THREADS`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(dir) = var("LORE_INDEX") {
            self.index = PathBuf::from(dir);
        }
        if let Some(collection) = var("LORE_COLLECTION") {
            self.collection = collection;
        }
        if let Some(dir) = var("LORE_MODELS") {
            self.models = PathBuf::from(dir);
        }
        if let Some(dir) = var("LORE_EMBEDDER") {
            self.embedder.path = Some(PathBuf::from(dir));
        }
        if let Some(model) = var("LORE_GENERATOR") {
            self.generator.model = Some(model);
        }
        if let Some(keys) = var("LORE_API_KEYS") {
            self.server.api_keys = keys
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect();
        }
        if let Some(uri) = var("LORE_MILVUS_URI") {
            self.milvus.uri = uri;
        }
        if let Some(threads) = var("LORE_THREADS") {
            let n = threads
                .parse()
                .map_err(|_| Error::Config(format!("LORE_THREADS={threads} is not a number")))?;
            self.threads = Some(n);
        }
        Ok(())
    }

    /// The collections named by `collection`, in order, without repeats.
    pub fn collections(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for name in self.collection.split(',').map(str::trim) {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        names
    }

    /// The embedder's model directory.
    pub fn embedder_dir(&self) -> PathBuf {
        self.embedder
            .path
            .clone()
            .unwrap_or_else(|| self.models.join("all-minilm-l6-v2"))
    }

    /// The generator's GGUF file.
    pub fn generator_path(&self) -> PathBuf {
        match self.generator.model.as_deref() {
            None | Some("default") => self.models.join(DEFAULT_GENERATOR),
            Some("light") => self.models.join(LIGHT_GENERATOR),
            Some("gemma") => self.models.join(GEMMA_GENERATOR),
            Some("large") => self.models.join(LARGE_GENERATOR),
            Some(path) => PathBuf::from(path),
        }
    }

    /// Checks every setting once, before anything is built from it.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.threads == Some(0) {
            return bad("threads must be at least 1".into());
        }
        for name in self.collections() {
            crate::types::check_collection_name(&name).or_else(|e| bad(e.to_string()))?;
        }
        if self.server.read_only && !self.server.watch.is_empty() {
            return bad("a read-only server cannot watch folders (server.watch)".into());
        }
        if self.server.generations == 0 {
            return bad("server.generations must be at least 1".into());
        }
        let share = self.generator.source_recompute;
        if !(0.0..=1.0).contains(&share) {
            return bad(format!(
                "generator.source_recompute = {share} must be between 0 and 1"
            ));
        }
        if !(0..=19).contains(&self.server.work_nice) {
            return bad(format!(
                "server.work_nice = {} must be between 0 and 19",
                self.server.work_nice
            ));
        }
        for key in &self.server.api_keys {
            match key.split_once(':') {
                Some(("read" | "write" | "admin", secret)) if !secret.is_empty() => {}
                _ => {
                    // The key itself is a secret: never echo any of it.
                    return bad(
                        "every API key must be 'read:KEY', 'write:KEY' or 'admin:KEY' \
                         (server.api_keys, LORE_API_KEYS)"
                            .into(),
                    );
                }
            }
        }
        for origin in &self.server.cors_origins {
            if !is_origin(origin) {
                return bad(format!(
                    "server.cors_origins: '{origin}' is not an origin like https://host[:port] \
                     (no path, no wildcard)"
                ));
            }
        }
        if self.embedder.batch_size == 0 {
            return bad("embedder.batch_size must be at least 1".into());
        }
        if self.chunk.max_tokens < 8 {
            return bad(format!(
                "chunk.max_tokens = {} is too small (min 8)",
                self.chunk.max_tokens
            ));
        }
        if self.chunk.max_tokens + 2 > self.embedder.max_tokens {
            return bad(format!(
                "chunk.max_tokens = {} plus [CLS]/[SEP] exceeds embedder.max_tokens = {}",
                self.chunk.max_tokens, self.embedder.max_tokens
            ));
        }
        if self.chunk.overlap_tokens >= self.chunk.max_tokens {
            return bad(format!(
                "chunk.overlap_tokens = {} must be below chunk.max_tokens = {}",
                self.chunk.overlap_tokens, self.chunk.max_tokens
            ));
        }
        if !(2..=256).contains(&self.hnsw.max_connections) {
            return bad(format!(
                "hnsw.max_connections = {} must be between 2 and 256",
                self.hnsw.max_connections
            ));
        }
        if self.hnsw.ef_construction == 0 || self.hnsw.ef_search == 0 {
            return bad("hnsw.ef_construction and hnsw.ef_search must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.hnsw.rebuild_ratio) {
            return bad("hnsw.rebuild_ratio must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.search.dense_weight) {
            return bad("search.dense_weight must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.generator.min_support) {
            return bad(format!(
                "generator.min_support = {} must be between 0 and 1",
                self.generator.min_support
            ));
        }
        if self.search.depth_factor == 0 {
            return bad("search.depth_factor must be at least 1".into());
        }
        if self.ingest.checkpoint_chunks == 0 {
            return bad("ingest.checkpoint_chunks must be at least 1".into());
        }
        for name in self.collections.keys() {
            crate::types::check_collection_name(name)
                .or_else(|e| bad(format!("[collections.{name}]: {e}")))?;
        }
        if self
            .collections
            .values()
            .any(|c| c.vectors == VectorsBackend::Milvus)
        {
            if !cfg!(feature = "milvus") {
                return bad(
                    "a collection keeps its vectors in Milvus ([collections.NAME] \
                     vectors = \"milvus\"), but this lore was built without the `milvus` \
                     feature (cargo build --release --features milvus)"
                        .into(),
                );
            }
            if !(self.milvus.uri.starts_with("http://") || self.milvus.uri.starts_with("https://"))
            {
                return bad(format!(
                    "milvus.uri = '{}' must start with http:// or https://",
                    self.milvus.uri
                ));
            }
            if self.milvus.timeout_s == 0 {
                return bad("milvus.timeout_s must be at least 1".into());
            }
            let name_ok = |s: &str| {
                s.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            if !name_ok(&self.milvus.prefix) || !name_ok(&self.milvus.database) {
                return bad("milvus.prefix and milvus.database must be a letter or '_' \
                     followed by letters, digits or '_'"
                    .into());
            }
        }
        Ok(())
    }

    /// Where the vectors of collection `name` are indexed.
    pub fn vectors_backend(&self, name: &str) -> VectorsBackend {
        self.collections
            .get(name)
            .map(|c| c.vectors)
            .unwrap_or_default()
    }
}

/// `scheme://host[:port]` with an http(s) scheme, nothing after.
fn is_origin(origin: &str) -> bool {
    let Some((scheme, host)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_values() {
        let mut config: Config = toml::from_str("index = \"from-file\"\nthreads = 1").unwrap();
        config
            .apply_env(|k| (k == "LORE_INDEX").then(|| "from-env".to_string()))
            .unwrap();
        assert_eq!(config.index, PathBuf::from("from-env"));
        assert_eq!(config.threads, Some(1));
    }

    #[test]
    fn every_generator_name_is_a_file_the_installer_writes() {
        let script = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-models.sh"),
        )
        .unwrap();
        let mut config = Config::default();
        for name in ["default", "light", "large", "gemma"] {
            config.generator.model = Some(name.into());
            let path = config.generator_path();
            assert_eq!(path.parent(), Some(config.models.as_path()), "{name}");
            let file = path.file_name().unwrap().to_str().unwrap();
            assert!(script.contains(&format!("/{file}\"")), "{name}: {file}");
        }
        config.generator.model = Some("/models/mine.gguf".into());
        assert_eq!(config.generator_path(), PathBuf::from("/models/mine.gguf"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Config>("indx = \"typo\"").is_err());
    }

    #[test]
    fn the_answer_checks_are_on_unless_a_valid_value_turns_them_off() {
        let config = toml::from_str::<Config>("").unwrap();
        assert!(config.generator.check_names && config.generator.keep_source_order);
        for bad in [
            "[generator]\ncheck_names = \"no\"",
            "[generator]\ncheck_names = 0",
            "[generator]\nkeep_source_order = \"off\"",
        ] {
            assert!(toml::from_str::<Config>(bad).is_err(), "{bad}");
        }
        let off = toml::from_str::<Config>("[generator]\ncheck_names = false").unwrap();
        assert!(!off.generator.check_names);
    }

    #[test]
    fn a_work_priority_outside_nice_values_is_rejected() {
        for bad in [-1, 20] {
            let mut config = Config::default();
            config.server.work_nice = bad;
            assert!(matches!(config.validate(), Err(Error::Config(_))), "{bad}");
        }
    }

    #[test]
    fn oversized_graph_degree_is_rejected_before_hnsw_sees_it() {
        let mut config = Config::default();
        config.hnsw.max_connections = 300;
        assert!(matches!(config.validate(), Err(Error::Config(_))));
    }

    #[test]
    fn cors_origins_must_be_origins() {
        for ok in [
            "https://tool.example.com",
            "http://localhost:3000",
            "http://[::1]:8080",
        ] {
            assert!(is_origin(ok), "{ok}");
        }
        for bad in [
            "*",
            "https://*.example.com",
            "tool.example.com",
            "https://a.com/path",
            "ftp://a.com",
        ] {
            let mut config = Config::default();
            config.server.cors_origins = vec![bad.into()];
            assert!(matches!(config.validate(), Err(Error::Config(_))), "{bad}");
        }
    }

    #[test]
    fn a_support_threshold_outside_zero_to_one_is_rejected() {
        for bad in [-0.1, 1.5, f64::NAN] {
            let mut config = Config::default();
            config.generator.min_support = bad;
            assert!(matches!(config.validate(), Err(Error::Config(_))), "{bad}");
        }
    }

    #[test]
    fn a_recompute_share_outside_zero_to_one_is_rejected() {
        for bad in [-0.1, 1.5, f32::NAN] {
            let mut config = Config::default();
            config.generator.source_recompute = bad;
            assert!(matches!(config.validate(), Err(Error::Config(_))), "{bad}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }
}
