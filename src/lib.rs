//! lore: a self-hosted retrieval-augmented generation engine.
//!
//! Data flows through the modules in this order (each uses only those above
//! it): [`error`], [`types`], [`config`] → [`ingest`] (walk, load formats) →
//! [`chunk`] → [`embed`] → [`store`] (docs, vectors, keywords, manifest) →
//! [`search`] → [`prompt`] → [`generate`] → [`answer`] → [`engine`], the
//! façade that embedding programs call → [`eval`] and [`bench`], which
//! measure it → [`keys`] (the API key store) and [`audit`] (the trail of
//! writes) → [`client`] (how a process reaches a server that holds the
//! index) → [`server`], the HTTP front end; the CLI sits on top. See ARCHITECTURE.md for the invariants.

pub mod answer;
pub mod audit;
pub mod bench;
pub mod chunk;
pub mod client;
pub mod config;
pub mod embed;
pub mod engine;
pub mod error;
pub mod eval;
pub mod generate;
pub mod ingest;
pub mod keys;
pub mod prompt;
pub mod search;
pub mod server;
pub mod store;
pub mod types;

pub use config::Config;
pub use engine::{
    AskRequest, AskResponse, ConstraintOptions, Engine, IngestReport, MAX_SAMPLES, NoProgress,
    Progress, RemoveReport, Status, Techniques,
};
pub use error::{Error, Result};
