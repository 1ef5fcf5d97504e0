//! What a caller can do with lore, wherever the index lives: [`Lore`] is
//! implemented by [`Local`] (an [`Engine`] opened in this process, writing
//! on behalf of one [`WriteScope`]) and by `client::Remote` (a running
//! `lore serve` that holds the index). The CLI picks one when it starts and
//! never asks again which it has; chat, watch and every command go through
//! the same calls.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::{
    AskRequest, AskResponse, CollectionInfo, Engine, IngestReport, Progress, RemoveReport, Status,
    WriteScope,
};
use crate::error::Result;
use crate::search::{SearchRequest, SearchResponse};

/// The operations lore offers a caller, local or remote. Errors keep their
/// kind either way (a server's `invalid_request` is
/// [`crate::Error::InvalidRequest`] here too).
pub trait Lore: Send + Sync {
    /// Ingests `paths` (files or folders) into `collection`.
    fn ingest(
        &self,
        collection: &str,
        paths: &[PathBuf],
        progress: &dyn Progress,
    ) -> Result<IngestReport>;

    /// Removes a file, a folder's files or a document id from `collection`.
    fn remove(&self, collection: &str, target: &str) -> Result<RemoveReport>;

    /// Searches (see [`Engine::search`]).
    fn search(&self, request: &SearchRequest) -> Result<SearchResponse>;

    /// Answers, streaming the text to `on_text` (return `false` to stop);
    /// see [`Engine::ask`].
    fn ask(
        &self,
        request: &AskRequest,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<AskResponse>;

    /// The state of `collection`.
    fn status(&self, collection: &str) -> Result<Status>;

    /// Every collection, `default` first.
    fn collections(&self) -> Result<Vec<CollectionInfo>>;

    /// Creates the collection `name`, embedded with the model directory
    /// `embedder` (none: the configured embedder).
    fn create_collection(&self, name: &str, embedder: Option<&Path>) -> Result<CollectionInfo>;

    /// Drops the collection `name`; returns the chunks it held.
    fn drop_collection(&self, name: &str) -> Result<u64>;

    /// Makes every write so far durable (a server does so itself).
    fn checkpoint(&self) -> Result<()>;
}

/// An engine opened in this process, writing on behalf of `scope`.
#[derive(Clone)]
pub struct Local {
    engine: Arc<Engine>,
    scope: WriteScope,
}

impl Local {
    /// `engine`, its writes audited and bounded by `scope`.
    pub fn new(engine: Arc<Engine>, scope: WriteScope) -> Local {
        Local { engine, scope }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

impl Lore for Local {
    fn ingest(
        &self,
        collection: &str,
        paths: &[PathBuf],
        progress: &dyn Progress,
    ) -> Result<IngestReport> {
        self.engine.ingest(collection, paths, &self.scope, progress)
    }

    fn remove(&self, collection: &str, target: &str) -> Result<RemoveReport> {
        self.engine.remove(collection, target, &self.scope)
    }

    fn search(&self, request: &SearchRequest) -> Result<SearchResponse> {
        self.engine.search(request)
    }

    fn ask(
        &self,
        request: &AskRequest,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<AskResponse> {
        self.engine.ask(request, on_text)
    }

    fn status(&self, collection: &str) -> Result<Status> {
        self.engine.status(collection)
    }

    fn collections(&self) -> Result<Vec<CollectionInfo>> {
        self.engine.collections()
    }

    fn create_collection(&self, name: &str, embedder: Option<&Path>) -> Result<CollectionInfo> {
        self.engine.create_collection(name, embedder, &self.scope)
    }

    fn drop_collection(&self, name: &str) -> Result<u64> {
        self.engine.drop_collection(name, &self.scope)
    }

    fn checkpoint(&self) -> Result<()> {
        self.engine.checkpoint()
    }
}
