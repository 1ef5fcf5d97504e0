//! lore: a self-hosted retrieval-augmented generation engine.
//!
//! lore ingests a folder of documents (chunks them, embeds them with a
//! local BERT-family encoder, indexes them in an HNSW graph, a BM25 index
//! and a document store), searches them (dense, BM25 or both fused) and
//! answers questions from the best chunks with a local GGUF model, with
//! numbered citations checked against the sources. The `lore` binary and
//! its HTTP server are thin layers over the [`Engine`] this crate exports;
//! a program can link the crate and do everything they do.
//!
//! # Open an index, ingest, search
//!
//! [`Config::default`] points at `./index` and the models installed by
//! `scripts/install-models.sh` (`~/.cache/lore/models`, or `$LORE_MODELS`).
//!
//! ```no_run
//! use lore::search::{Mode, SearchRequest};
//! use lore::{Config, Engine, NoProgress, WriteScope, DEFAULT_COLLECTION};
//!
//! # fn main() -> lore::Result<()> {
//! let config = Config { index: "my-index".into(), ..Config::default() };
//! let engine = Engine::open(config)?;
//! // Who writes: named in the audit trail.
//! let me = WriteScope::owner("my-tool");
//! let report = engine.ingest(DEFAULT_COLLECTION, &["docs".into()], &me, &NoProgress)?;
//! println!("{} added, {} chunks", report.added, report.chunks_embedded);
//!
//! let found = engine.search(&SearchRequest::new("how are pages escalated?", 5, Mode::Hybrid))?;
//! for hit in &found.hits {
//!     println!("{:.3} {} {}", hit.score, hit.path, hit.text);
//! }
//! # Ok(()) }
//! ```
//!
//! # Ask, streaming the answer
//!
//! [`Engine::ask`] hands the answer's text to a callback as it is
//! generated (return `false` to stop) and returns the whole
//! [`AskResponse`]: the answer, its resolved [`answer::Citation`]s, the
//! retrieved chunks and timings. [`AskRequest::history`] carries earlier
//! turns of a conversation: the question is then rewritten into a
//! standalone one before retrieval ([`AskResponse::standalone_question`]).
//!
//! ```no_run
//! # fn main() -> lore::Result<()> {
//! # let engine = lore::Engine::open(lore::Config::default())?;
//! use std::io::Write;
//! let request = lore::AskRequest::new("How quickly must a SEV1 page be acknowledged?");
//! let response = engine.ask(&request, &mut |text| {
//!     print!("{text}");
//!     std::io::stdout().flush().is_ok()
//! })?;
//! for c in &response.citations {
//!     println!("\n[{}] {}", c.n, c.path);
//! }
//! # Ok(()) }
//! ```
//!
//! # Your own embedder or generator
//!
//! The model seams are traits: [`embed::Embedder`] (text → unit vectors)
//! and [`generate::Generator`] (a chat model that continues a prompt under
//! an optional constraint). [`Engine::with_embedder`] opens an index with
//! an embedder you built (a remote embedding service, another encoder);
//! [`Engine::with_generator`] answers with a generator you built.
//! `examples/remote_embedder.rs` puts an embedding service behind the
//! trait; `examples/shared_engine.rs` shares one engine across the threads
//! of a web service; `examples/ask.rs` is the smallest ingest + ask.
//!
//! # Keeping an index fresh
//!
//! [`watch::Watcher::for_engine`] follows folders' file-system events and,
//! once they quiet down, ingests each folder that changed into a
//! collection: only new and changed files are embedded, vanished ones
//! removed. Drop the watcher to stop it.
//!
//! # Cargo features
//!
//! - `server` — the HTTP front end (`server`; actix-web, utoipa).
//! - `cli` (default; takes `server`) — the `lore` binary and `client`.
//!
//! `default-features = false` builds the engine alone.
//!
//! # API stability
//!
//! Covered by semver from 1.0 (until then, breaking changes bump the minor
//! version and are listed in the changelog of the release): the items
//! re-exported here at the crate root (the [`Lore`] trait included), the
//! [`embed::Embedder`] and [`generate::Generator`] traits, the request and
//! response types of [`engine`] and [`search`] (with the techniques of
//! [`engine::technique`] by name and by their unit types), [`wire`]'s
//! bodies, the skip kinds of [`ingest::SkipKind`],
//! [`access::Readers`], [`Config`] and its file format, the on-disk
//! index format (a newer lore opens an older index) and the HTTP API of
//! `api/openapi.json`. Not covered: the other public modules' internals
//! ([`store`], [`chunk`], [`ingest`], [`prompt`], [`bench`](mod@bench), `server`'s
//! Rust items), which are public so that lore's own binary, tests and
//! benchmarks can reach them; prompts and default tuning values, which
//! change when measurements say so.
//!
//! # Local or through a server
//!
//! [`Lore`] is what a caller can do with an index (ingest, remove, search,
//! ask with streaming, status, collections), implemented by [`Local`] (an
//! [`Engine`] in this process, writing on behalf of a [`WriteScope`]) and
//! by `client::Remote` (feature `cli`: a running `lore serve` that holds
//! the index). Code written against `&dyn Lore` works either way, and an
//! error keeps its kind through a server ([`Error::code`]). The HTTP
//! bodies are [`wire`]'s types.
//!
//! # Layout
//!
//! Modules sit on floors and use only those below (`tests/layers.rs`
//! checks it): [`error`] · [`types`] · `kernels`, [`access`], [`config`],
//! [`announce`], [`audit`] · [`ingest`] (walk, load formats), [`chunk`] ·
//! [`embed`] · [`store`] (docs, vectors, keywords, manifest) · [`search`] ·
//! [`generate`] · [`prompt`] · [`answer`] · [`engine`], the façade that
//! embedding programs call · [`api`] (the [`Lore`] trait), [`wire`] (the
//! HTTP bodies), [`keys`] (the API key store) · [`watch`], which keeps an
//! index fresh, and [`eval`], which measures answers · [`bench`](mod@bench)
//! · `client` (how a process reaches a server that holds the index) ·
//! `server`, the HTTP front end; the CLI sits on top. See ARCHITECTURE.md
//! for the invariants.

#![warn(missing_docs)]

pub mod access;
pub mod announce;
pub mod answer;
pub mod api;
pub mod audit;
pub mod bench;
pub mod chunk;
#[cfg(feature = "cli")]
pub mod client;
pub mod config;
pub mod doctor;
pub mod embed;
pub mod engine;
pub mod error;
pub mod eval;
pub mod generate;
pub mod ingest;
pub(crate) mod kernels;
pub mod keys;
#[cfg(feature = "server")]
pub mod mcp;
pub mod prompt;
pub mod sched;
pub mod search;
#[cfg(feature = "server")]
pub mod server;
pub mod store;
pub mod types;
pub mod watch;
pub mod wire;

pub use api::{Local, Lore};
pub use config::Config;
pub use engine::{
    AskRequest, AskResponse, ConstraintOptions, DEFAULT_COLLECTION, Engine, IngestReport,
    MAX_SAMPLES, NoProgress, Progress, RemoveReport, Status, Techniques, Turn, WriteScope,
};
pub use error::{Error, Result};
