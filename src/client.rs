//! Talking to a running `lore serve` that holds an index, so the CLI works
//! while a server runs: the index directory is locked by the server's
//! process, and `lore ingest`, `remove`, `search`, `ask`, `status` and
//! `collection` go through its HTTP API.
//!
//! It finds the server through the [`Announcement`] in the index
//! directory.

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use ureq::http::Response as HttpResponse;

use crate::announce::{Announcement, LOCAL_TOKEN_HEADER};
use crate::engine::{
    AskRequest, AskResponse, CollectionInfo, ConstraintOptions, IngestReport, RemoveReport, Status,
};
use crate::error::{Error, Result};
use crate::search::{SearchRequest, SearchResponse};

type Response = HttpResponse<ureq::Body>;

/// A client of the server that holds an index.
pub struct Remote {
    base: String,
    token: String,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct Token {
    text: String,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
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

    /// `response` when it succeeded, else the server's error message.
    fn checked(&self, sent: Result<Response, ureq::Error>) -> Result<Response> {
        let mut response = sent.map_err(|e| self.failed(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let message = response
            .body_mut()
            .read_json::<ErrorBody>()
            .map_or_else(|_| response.status().to_string(), |b| b.error.message);
        Err(self.failed(message))
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

    /// `lore ingest` through the server, one path at a time.
    pub fn ingest(&self, collection: &str, path: &Path) -> Result<IngestReport> {
        let path = path.canonicalize().map_err(|e| Error::io(path, e))?;
        self.json(self.post(
            &in_collections("/v1/ingest", &[collection]),
            &serde_json::json!({ "path": path }),
        )?)
    }

    /// `lore remove` through the server.
    pub fn remove(&self, collection: &str, target: &str) -> Result<RemoveReport> {
        let target = Path::new(target)
            .canonicalize()
            .map_or_else(|_| target.to_string(), |p| p.display().to_string());
        self.json(self.post(
            &in_collections("/v1/remove", &[collection]),
            &serde_json::json!({ "target": target }),
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

    /// `lore status` through the server.
    pub fn status(&self, collection: &str) -> Result<Status> {
        self.json(self.get(&in_collections("/v1/status", &[collection]))?)
    }

    /// `lore collection list` through the server.
    pub fn collections(&self) -> Result<Vec<CollectionInfo>> {
        #[derive(Deserialize)]
        struct List {
            collections: Vec<CollectionInfo>,
        }
        Ok(self.json::<List>(self.get("/v1/collections")?)?.collections)
    }

    /// `lore collection create` through the server (the embedder must be a
    /// model directory of the server's models folder, named by its name).
    pub fn create_collection(&self, name: &str, embedder: Option<&Path>) -> Result<CollectionInfo> {
        let embedder = embedder
            .and_then(|dir| dir.file_name())
            .map(|n| n.to_string_lossy());
        self.json(self.post(
            "/v1/collections",
            &serde_json::json!({ "name": name, "embedder": embedder }),
        )?)
    }

    /// `lore collection drop` through the server; returns the chunks it held.
    pub fn drop_collection(&self, name: &str) -> Result<u64> {
        #[derive(Deserialize)]
        struct Dropped {
            chunks: u64,
        }
        let sent = self
            .agent
            .delete(format!("{}/v1/collections/{name}", self.base))
            .header(LOCAL_TOKEN_HEADER, &self.token)
            .call();
        Ok(self.json::<Dropped>(self.checked(sent)?)?.chunks)
    }

    /// `lore search` through the server.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse> {
        let names = request.collection_names();
        let body = SearchRequest {
            collections: Vec::new(),
            ..request.clone()
        };
        self.json(self.post(&in_collections("/v1/search", &names), &body)?)
    }

    /// `lore ask` through the server, streaming the answer's text to
    /// `on_text` (return `false` to stop: the connection is dropped and the
    /// server cancels the generation).
    pub fn ask(
        &self,
        request: &AskRequest,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<AskResponse> {
        let s = &request.sampling;
        let constraint = ConstraintOptions::of(request)?;
        let body = serde_json::json!({
            "question": request.question,
            "k": request.k,
            "filter": request.filter,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": s.seed,
            "stream": true,
            "schema": constraint.schema,
            "choices": constraint.choices,
            "regex": constraint.regex,
            "grammar": constraint.grammar,
            "techniques": request.techniques,
            "history": request.history,
        });
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
                    let token: Token = serde_json::from_str(data).map_err(|e| self.failed(e))?;
                    if !on_text(&token.text) {
                        return Err(self.failed("cancelled"));
                    }
                }
                "done" => return serde_json::from_str(data).map_err(|e| self.failed(e)),
                _ => {
                    let message = serde_json::from_str::<ErrorBody>(data)
                        .map_or_else(|_| data.to_string(), |b| b.error.message);
                    return Err(self.failed(message));
                }
            }
        }
        Err(self.failed("the answer stream ended early"))
    }
}

/// `path` with the `collection` query parameter naming `names` (which are
/// checked names: letters, digits, `-`, `_`, `.`, nothing to escape).
fn in_collections(path: &str, names: &[impl AsRef<str>]) -> String {
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    format!("{path}?collection={}", names.join(","))
}
