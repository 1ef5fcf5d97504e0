//! Talking to a running `lore serve` that holds an index, so the CLI works
//! while a server runs: the index directory is locked by the server's
//! process, and `lore ingest`, `remove`, `search`, `ask`, `status` and
//! `collection` go through its HTTP API.
//!
//! It finds the server through the [`Announcement`] in the index
//! directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use ureq::http::Response as HttpResponse;

use crate::announce::{Announcement, LOCAL_TOKEN_HEADER};
use crate::api::Lore;
use crate::engine::{
    AskRequest, AskResponse, CollectionInfo, IngestReport, Progress, RemoveReport, Status,
};
use crate::error::{Error, Result};
use crate::search::{SearchRequest, SearchResponse};
use crate::wire::{
    AskBody, CollectionList, Dropped, ErrorBody, ErrorDetail, IngestBody, NewCollection,
    RemoveBody, SearchBody, TokenEvent,
};

type Response = HttpResponse<ureq::Body>;

/// A client of the server that holds an index.
pub struct Remote {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Remote {
    /// The server announced in `index`, if one is there and answers.
    pub fn discover(index: &Path) -> Option<Remote> {
        let text = std::fs::read_to_string(Announcement::path(index)).ok()?;
        let announcement: Announcement = serde_json::from_str(&text).ok()?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(3600)))
            .build()
            .into();
        let base = format!("http://{}", announcement.addr);
        agent.get(format!("{base}/healthz")).call().ok()?;
        Some(Remote {
            base,
            token: announcement.token,
            agent,
        })
    }

    fn failed(&self, message: impl std::fmt::Display) -> Error {
        Error::Remote {
            addr: self.base.clone(),
            message: message.to_string(),
        }
    }

    /// `response` when it succeeded, else the server's error, of the
    /// kind its code names.
    fn checked(&self, sent: Result<Response, ureq::Error>) -> Result<Response> {
        let mut response = sent.map_err(|e| self.failed(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        match response.body_mut().read_json::<ErrorBody>() {
            Ok(body) => Err(self.refused(body.error)),
            Err(_) => Err(self.failed(response.status())),
        }
    }

    /// The error a server's error body names: the kind the engine raised
    /// on the server's side when its code says which, else
    /// [`Error::Remote`].
    fn refused(&self, detail: ErrorDetail) -> Error {
        Error::from_code(&detail.code, detail.message)
            .unwrap_or_else(|message| self.failed(message))
    }

    fn post(&self, path: &str, body: &impl Serialize) -> Result<Response> {
        self.checked(
            self.agent
                .post(format!("{}{path}", self.base))
                .header(LOCAL_TOKEN_HEADER, &self.token)
                .send_json(body),
        )
    }

    fn json<T: DeserializeOwned>(&self, mut response: Response) -> Result<T> {
        response.body_mut().read_json().map_err(|e| self.failed(e))
    }

    /// Ingests one path through the server.
    fn ingest_one(&self, collection: &str, path: &Path) -> Result<IngestReport> {
        let path = path.canonicalize().map_err(|e| Error::io(path, e))?;
        self.json(self.post(
            &in_collections("/v1/ingest", &[collection]),
            &IngestBody { path },
        )?)
    }

    fn get(&self, path: &str) -> Result<Response> {
        self.checked(
            self.agent
                .get(format!("{}{path}", self.base))
                .header(LOCAL_TOKEN_HEADER, &self.token)
                .call(),
        )
    }
}

impl Lore for Remote {
    fn ingest(
        &self,
        collection: &str,
        paths: &[PathBuf],
        progress: &dyn Progress,
    ) -> Result<IngestReport> {
        let mut total = IngestReport::default();
        for path in paths {
            total.absorb(self.ingest_one(collection, path)?);
        }
        // The server reports once it is done: the same events, at the end.
        progress.started(total.files_seen);
        progress.planned(total.chunks_embedded);
        for skipped in &total.skipped {
            progress.skipped(skipped);
        }
        for _ in 0..total.files_seen {
            progress.file_done("");
        }
        progress.embedded(total.chunks_embedded);
        Ok(total)
    }

    /// `lore remove` through the server.
    fn remove(&self, collection: &str, target: &str) -> Result<RemoveReport> {
        let target = Path::new(target)
            .canonicalize()
            .map_or_else(|_| target.to_string(), |p| p.display().to_string());
        self.json(self.post(
            &in_collections("/v1/remove", &[collection]),
            &RemoveBody { target },
        )?)
    }

    /// `lore status` through the server.
    fn status(&self, collection: &str) -> Result<Status> {
        self.json(self.get(&in_collections("/v1/status", &[collection]))?)
    }

    /// `lore collection list` through the server.
    fn collections(&self) -> Result<Vec<CollectionInfo>> {
        Ok(self
            .json::<CollectionList>(self.get("/v1/collections")?)?
            .collections)
    }

    /// `lore collection create` through the server (the embedder must be a
    /// model directory of the server's models folder, named by its name).
    fn create_collection(&self, name: &str, embedder: Option<&Path>) -> Result<CollectionInfo> {
        let embedder = embedder
            .and_then(|dir| dir.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        let body = NewCollection {
            name: name.to_string(),
            embedder,
        };
        self.json(self.post("/v1/collections", &body)?)
    }

    /// `lore collection drop` through the server; returns the chunks it held.
    fn drop_collection(&self, name: &str) -> Result<u64> {
        let sent = self
            .agent
            .delete(format!("{}/v1/collections/{name}", self.base))
            .header(LOCAL_TOKEN_HEADER, &self.token)
            .call();
        Ok(self.json::<Dropped>(self.checked(sent)?)?.chunks)
    }

    /// `lore search` through the server.
    fn search(&self, request: &SearchRequest) -> Result<SearchResponse> {
        let names = request.collection_names();
        self.json(self.post(
            &in_collections("/v1/search", &names),
            &SearchBody::of(request),
        )?)
    }

    /// `lore ask` through the server, streaming the answer's text to
    /// `on_text` (return `false` to stop: the connection is dropped and the
    /// server cancels the generation).
    fn ask(
        &self,
        request: &AskRequest,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<AskResponse> {
        let body = AskBody::of(request, true)?;
        let names = if request.collections.is_empty() {
            vec![crate::types::DEFAULT_COLLECTION.to_string()]
        } else {
            request.collections.clone()
        };
        let mut response = self.post(&in_collections("/v1/ask", &names), &body)?;
        let reader = std::io::BufReader::new(response.body_mut().as_reader());
        let mut event = String::new();
        for line in std::io::BufRead::lines(reader) {
            let line = line.map_err(|e| self.failed(e))?;
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_string();
                continue;
            }
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            match event.as_str() {
                "token" => {
                    let token: TokenEvent =
                        serde_json::from_str(data).map_err(|e| self.failed(e))?;
                    if !on_text(&token.text) {
                        return Err(self.failed("cancelled"));
                    }
                }
                "done" => return serde_json::from_str(data).map_err(|e| self.failed(e)),
                _ => {
                    return Err(match serde_json::from_str::<ErrorBody>(data) {
                        Ok(body) => self.refused(body.error),
                        Err(_) => self.failed(data),
                    });
                }
            }
        }
        Err(self.failed("the answer stream ended early"))
    }

    fn checkpoint(&self) -> Result<()> {
        Ok(())
    }
}

/// `path` with the `collection` query parameter naming `names` (which are
/// checked names: letters, digits, `-`, `_`, `.`, nothing to escape).
fn in_collections(path: &str, names: &[impl AsRef<str>]) -> String {
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    format!("{path}?collection={}", names.join(","))
}
