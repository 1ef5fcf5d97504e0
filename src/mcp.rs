//! lore as a Model Context Protocol server (the official `rmcp` SDK): the
//! tools an assistant, an IDE or an agent calls (`search`, `ask`,
//! `get_passage`, `get_document`, `list_collections`) and the documents as
//! resources. The same [`Tools`] serve `lore mcp` over stdio (acting as
//! the local user, like the CLI) and `/mcp` on `lore serve` (acting as the
//! key the route's auth check let in: its collections and access-list
//! groups). A caller that cannot be named is refused, never served as
//! someone else. Engine work runs off the async runtime, in the turns the
//! host gives it ([`Turns`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData, Extensions,
    Implementation, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::engine::{AskRequest, DEFAULT_COLLECTION, Engine};
use crate::error::{Error, Result};
use crate::keys::Principal;
use crate::search::{Filter, Mode};
use crate::wire::{AskBody, SearchBody};

/// Most text one `get_document` call or resource read returns; a longer
/// document comes in pages (`offset`, `next_offset`).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Most documents one page of `resources/list` names.
const RESOURCES_PER_PAGE: usize = 500;
/// Passages `search` returns unless asked (at most `MAX_SEARCH_K`).
const DEFAULT_SEARCH_K: usize = 5;
/// Most passages one `search` returns: a tool result goes into a model's
/// context, so far fewer than the HTTP API's 1000.
const MAX_SEARCH_K: usize = 50;
/// The scheme of a document's resource URI: `lore://COLLECTION/DOC_ID`.
const SCHEME: &str = "lore://";

/// What the host runs engine work on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// A search or a lookup: short, one core.
    Read,
    /// An answer: a generation, seconds to minutes.
    Generate,
}

/// One piece of engine work, run on a blocking thread.
pub type Job = Box<dyn FnOnce() -> Result<Value> + Send>;

/// How the host lets engine work run: `lore serve` queues it with its other
/// requests (the same cores, generation queue and timeout), `lore mcp` runs
/// it on tokio's blocking pool.
pub trait Turns: Send + Sync + 'static {
    /// Runs `job` in its turn.
    fn run(&self, work: Work, job: Job) -> BoxFuture<'static, Result<Value>>;
}

/// Runs every job at once on tokio's blocking pool (one user, over stdio).
pub struct Blocking;

impl Turns for Blocking {
    fn run(&self, _work: Work, job: Job) -> BoxFuture<'static, Result<Value>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(job)
                .await
                .map_err(|e| Error::unavailable(format!("the work stopped: {e}")))?
        })
    }
}

/// lore's MCP tools and resources over one engine.
#[derive(Clone)]
pub struct Tools {
    engine: Arc<Engine>,
    turns: Arc<dyn Turns>,
    /// Who every call acts as (stdio); `None`: the principal the HTTP
    /// route's auth check put on the request.
    fixed: Option<Principal>,
    /// The longest an answer may take.
    deadline: Duration,
}

impl Tools {
    /// Tools that act as `principal` on every call (the stdio server).
    pub fn acting_as(engine: Arc<Engine>, principal: Principal) -> Tools {
        Tools {
            engine,
            turns: Arc::new(Blocking),
            fixed: Some(principal),
            deadline: Duration::from_secs(600),
        }
    }

    /// Tools that act as the principal on each HTTP request, running their
    /// work through `turns`, answers cut off after `deadline`.
    pub fn per_request(engine: Arc<Engine>, turns: Arc<dyn Turns>, deadline: Duration) -> Tools {
        Tools {
            engine,
            turns,
            fixed: None,
            deadline,
        }
    }

    /// The principal a call acts as. Over HTTP it is the one the auth
    /// check recorded on the request; a request without one is refused.
    fn caller(&self, extensions: &Extensions) -> std::result::Result<Principal, ErrorData> {
        caller(self.fixed.as_ref(), extensions)
    }

    /// `names` (default: `default`) when `principal` may use each and it
    /// exists; the same refusal for both otherwise, so the answer reveals
    /// nothing of collections the key may not use.
    fn collections(&self, principal: &Principal, names: Vec<String>) -> Result<Vec<String>> {
        let names = if names.is_empty() {
            vec![DEFAULT_COLLECTION.to_string()]
        } else {
            names
        };
        for name in &names {
            if !principal.may_use(name) || !self.engine.has_collection(name) {
                return Err(Error::NotFound(format!(
                    "no collection '{name}' that this caller may use (list_collections names them)"
                )));
            }
        }
        Ok(names)
    }

    async fn search(&self, principal: Principal, args: SearchArgs) -> Result<Value> {
        let collections = self.collections(&principal, args.collections)?;
        let mut request = SearchBody {
            query: args.query,
            k: args.k,
            mode: args.mode,
            filter: args.filter,
            collapse: false,
        }
        .into_request(collections);
        crate::error::check_range("k", request.k, 1, MAX_SEARCH_K)?;
        request.readers = principal.readers();
        request.validate()?;
        let engine = self.engine.clone();
        self.turns
            .run(
                Work::Read,
                Box::new(move || {
                    let found = engine.search(&request)?;
                    Ok(json!({ "hits": found.hits }))
                }),
            )
            .await
    }

    async fn ask(
        &self,
        principal: Principal,
        args: AskArgs,
        cancelled: impl Fn() -> bool + Send + 'static,
    ) -> Result<Value> {
        let collections = self.collections(&principal, args.collections)?;
        let mut request: AskRequest = AskBody {
            question: args.question,
            k: args.k,
            filter: args.filter,
            document: args.document,
            ..AskBody::default()
        }
        .into_request()?;
        request.collections = collections;
        request.readers = principal.readers();
        request.validate(&self.engine.config().generator)?;
        let engine = self.engine.clone();
        let until = Instant::now() + self.deadline;
        let job: Job = Box::new(move || {
            let mut go_on = |_: &str| !cancelled() && Instant::now() < until;
            let response = engine.ask(&request, &mut go_on)?;
            if cancelled() || Instant::now() >= until {
                return Err(Error::unavailable(
                    "the answer took longer than allowed and was stopped",
                ));
            }
            Ok(json!({
                "answer": response.answer,
                "abstained": response.abstained,
                "abstained_because": response.abstained_because,
                "support": response.support,
                "citations": response.citations,
                "quotes": response.quotes,
                "truncated": response.truncated,
                "parts": response.parts,
            }))
        });
        self.turns.run(Work::Generate, job).await
    }

    async fn get_passage(&self, principal: Principal, args: PassageArgs) -> Result<Value> {
        let collection = self.collections(&principal, args.collection.into_iter().collect())?;
        let (engine, readers) = (self.engine.clone(), principal.readers());
        self.turns
            .run(
                Work::Read,
                Box::new(move || {
                    let passage = engine.passage(&collection[0], &readers, &args.id)?;
                    to_value(passage)
                }),
            )
            .await
    }

    async fn get_document(&self, principal: Principal, args: DocumentArgs) -> Result<Value> {
        let collection = self.collections(&principal, args.collection.into_iter().collect())?;
        let (engine, readers) = (self.engine.clone(), principal.readers());
        self.turns
            .run(
                Work::Read,
                Box::new(move || {
                    let (doc, text) = engine.document_text(&collection[0], &readers, &args.id)?;
                    let (page, next) = page(&text, args.offset)?;
                    Ok(json!({
                        "collection": collection[0],
                        "document": doc,
                        "offset": args.offset,
                        "text": page,
                        "next_offset": next,
                        "total_bytes": text.len(),
                    }))
                }),
            )
            .await
    }

    async fn list_collections(&self, principal: Principal) -> Result<Value> {
        let engine = self.engine.clone();
        self.turns
            .run(
                Work::Read,
                Box::new(move || {
                    let visible: Vec<_> = engine
                        .collections()?
                        .into_iter()
                        .filter(|c| principal.may_use(&c.name))
                        .collect();
                    Ok(json!({ "collections": visible }))
                }),
            )
            .await
    }

    async fn call(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResult, ErrorData> {
        let principal = self.caller(&context.extensions)?;
        let args = Value::Object(request.arguments.unwrap_or_default());
        let result = match request.name.as_ref() {
            "search" => match parse(args) {
                Ok(args) => self.search(principal, args).await,
                Err(err) => Err(err),
            },
            "ask" => match parse(args) {
                Ok(args) => {
                    let ct = context.ct.clone();
                    self.ask(principal, args, move || ct.is_cancelled()).await
                }
                Err(err) => Err(err),
            },
            "get_passage" => match parse(args) {
                Ok(args) => self.get_passage(principal, args).await,
                Err(err) => Err(err),
            },
            "get_document" => match parse(args) {
                Ok(args) => self.get_document(principal, args).await,
                Err(err) => Err(err),
            },
            "list_collections" => match parse::<NoArgs>(args) {
                Ok(_) => self.list_collections(principal).await,
                Err(err) => Err(err),
            },
            other => {
                return Err(ErrorData::invalid_params(
                    format!("no tool '{other}'"),
                    None,
                ));
            }
        };
        Ok(match result {
            Ok(value) => CallToolResult::structured(value),
            Err(err) => CallToolResult::error(vec![ContentBlock::text(format!(
                "{}: {}",
                err.code().unwrap_or("error"),
                tool_message(&err)
            ))]),
        })
    }

    /// The documents `principal` may read, as resources, one page from
    /// `cursor` (a count of documents already listed).
    fn resources(&self, principal: &Principal, cursor: usize) -> Result<ListResourcesResult> {
        let readers = principal.readers();
        // One more than a page tells whether a next page exists.
        let mut wanted = RESOURCES_PER_PAGE + 1;
        let mut skip = cursor;
        let mut found = Vec::new();
        for name in self.engine.collection_names()? {
            if wanted == 0 {
                break;
            }
            if !principal.may_use(&name) {
                continue;
            }
            let (docs, total) = self.engine.documents(&name, &readers, "", skip, wanted)?;
            skip = skip.saturating_sub(total);
            wanted -= docs.len();
            found.extend(docs.into_iter().map(|doc| (name.clone(), doc)));
        }
        let more = found.len() > RESOURCES_PER_PAGE;
        found.truncate(RESOURCES_PER_PAGE);
        let resources = found
            .into_iter()
            .map(|(name, doc)| {
                let resource = Resource::new(format!("{SCHEME}{name}/{}", doc.id.0), &doc.path)
                    .with_description(format!("{} in the collection '{name}'", doc.path))
                    .with_mime_type("text/plain");
                match doc.title {
                    Some(title) => resource.with_title(title),
                    None => resource,
                }
            })
            .collect();
        let mut page = ListResourcesResult::with_all_items(resources);
        if more {
            page.next_cursor = Some((cursor + RESOURCES_PER_PAGE).to_string());
        }
        Ok(page)
    }

    /// The text of the resource `uri`, if `principal` may read it.
    fn read(&self, principal: &Principal, uri: &str) -> Result<ReadResourceResult> {
        let (collection, id) = uri
            .strip_prefix(SCHEME)
            .and_then(|rest| rest.split_once('/'))
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "'{uri}' is not a lore resource ({SCHEME}COLLECTION/DOCUMENT_ID)"
                ))
            })?;
        let collection = self.collections(principal, vec![collection.to_string()])?;
        let (_, text) = self
            .engine
            .document_text(&collection[0], &principal.readers(), id)?;
        let (page, next) = page(&text, 0)?;
        let page = match next {
            Some(_) => format!(
                "{page}\n\n[… {} more bytes: call get_document with offset]",
                text.len() - page.len()
            ),
            None => page.to_string(),
        };
        Ok(ReadResourceResult::new(vec![ResourceContents::text(
            page, uri,
        )]))
    }
}

/// `fixed`, else the principal the HTTP route's auth check put on the
/// request; a request without one is refused, never served as anyone.
fn caller(
    fixed: Option<&Principal>,
    extensions: &Extensions,
) -> std::result::Result<Principal, ErrorData> {
    if let Some(principal) = fixed {
        return Ok(principal.clone());
    }
    extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Principal>())
        .cloned()
        .ok_or_else(|| ErrorData::invalid_request("this request carries no caller", None))
}

/// At most [`MAX_TEXT_BYTES`] of `text` from `offset` (moved back to a
/// character boundary), and where the next page starts, if any.
fn page(text: &str, offset: usize) -> Result<(&str, Option<usize>)> {
    if offset > text.len() {
        return Err(Error::InvalidRequest(format!(
            "offset {offset} is past the document's end ({} bytes)",
            text.len()
        )));
    }
    let start = floor_boundary(text, offset);
    let end = floor_boundary(text, start.saturating_add(MAX_TEXT_BYTES).min(text.len()));
    let next = (end < text.len()).then_some(end);
    Ok((&text[start..end], next))
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// `value` as JSON (what a job hands back to the async side).
fn to_value(value: impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(value)
        .map_err(|e| Error::Inference(format!("cannot encode a result: {e}")))
}

/// A tool's arguments, or the tool error that names what is wrong.
fn parse<T: DeserializeOwned>(args: Value) -> Result<T> {
    serde_json::from_value(args).map_err(|e| Error::InvalidRequest(format!("bad arguments: {e}")))
}

/// What a tool error says: a request's own words, else the error.
fn tool_message(err: &Error) -> String {
    match err {
        Error::InvalidRequest(reason) => reason.clone(),
        other => other.to_string(),
    }
}

/// `search`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    /// What to look for: a question or keywords, in the documents' language.
    query: String,
    /// How many passages to return, best first (1 to 50; default 5).
    #[serde(default = "default_search_k")]
    #[schemars(range(min = 1, max = 50))]
    k: usize,
    /// `hybrid` (default: words and meaning together), `dense` (meaning
    /// only) or `bm25` (the words only).
    #[serde(default)]
    mode: Mode,
    /// Collections to search (default: `["default"]`); `list_collections`
    /// names them.
    #[serde(default)]
    collections: Vec<String>,
    /// Only passages of documents that match all of these.
    #[serde(default)]
    filter: Filter,
}

fn default_search_k() -> usize {
    DEFAULT_SEARCH_K
}

/// `ask`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AskArgs {
    /// The question, as a person would ask it.
    question: String,
    /// How many passages the answer may draw on (1 to 50; default 3).
    #[schemars(range(min = 1, max = 50))]
    k: Option<usize>,
    /// Collections to answer from (default: `["default"]`).
    #[serde(default)]
    collections: Vec<String>,
    /// Only documents that match all of these.
    #[serde(default)]
    filter: Filter,
    /// Answer from this one document, whole (its `doc_id`), instead of from
    /// the passages search finds; a long one is read part by part.
    document: Option<String>,
}

/// `get_passage`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PassageArgs {
    /// The passage's `chunk_id`, as `search` or `ask` returned it.
    id: String,
    /// Its collection (default `default`).
    collection: Option<String>,
}

/// `get_document`'s arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DocumentArgs {
    /// The document's `doc_id`, as `search`, `ask` or a resource gave it.
    id: String,
    /// Its collection (default `default`).
    collection: Option<String>,
    /// Where to start reading, in bytes: 0, or the `next_offset` of the
    /// previous page.
    #[serde(default)]
    offset: usize,
}

/// No arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// The tools, described for a model choosing among them.
fn tools() -> Vec<Tool> {
    let read_only = || ToolAnnotations::new().read_only(true).open_world(false);
    vec![
        Tool::new(
            "search",
            "Find passages in the documents indexed by lore (handbooks, manuals, code, \
             notes) that match a question or keywords. Returns the best passages, best \
             first, each with its text, document path, heading, doc_id and chunk_id. \
             Fast; use it first to locate information, then quote the passages or read \
             more with get_passage or get_document.",
            rmcp::handler::server::tool::schema_for_type::<SearchArgs>(),
        )
        .with_annotations(read_only()),
        Tool::new(
            "ask",
            "Answer a question from the indexed documents. The answer cites the passages \
             it uses as [n] (citations lists each with its path and chunk_id), or says the \
             documents do not contain the answer (abstained: true) instead of guessing. \
             A local model writes it: seconds to a minute. Use it for a grounded answer; \
             use search for raw passages.",
            rmcp::handler::server::tool::schema_for_type::<AskArgs>(),
        )
        .with_annotations(read_only()),
        Tool::new(
            "get_passage",
            "Read one passage by the chunk_id that search or ask returned, with the text \
             just before and after it in its document.",
            rmcp::handler::server::tool::schema_for_type::<PassageArgs>(),
        )
        .with_annotations(read_only()),
        Tool::new(
            "get_document",
            "Read a whole document by its doc_id (from search, ask or a resource). A long \
             document comes in pages of 64 KB: call again with offset = next_offset until \
             next_offset is null.",
            rmcp::handler::server::tool::schema_for_type::<DocumentArgs>(),
        )
        .with_annotations(read_only()),
        Tool::new(
            "list_collections",
            "List the document collections this caller may search or ask (name and chunk \
             count). Pass their names as collections to search or ask.",
            rmcp::handler::server::tool::schema_for_type::<NoArgs>(),
        )
        .with_annotations(read_only()),
    ]
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("lore", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "lore answers from a private document index. Use search to find passages, ask \
             for an answer with citations (or an honest 'not in the documents'), and \
             get_passage or get_document to read more. Documents are also resources \
             (lore://COLLECTION/DOC_ID).",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResponse, ErrorData> {
        Ok(self.call(request, context).await?.into())
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListResourcesResult, ErrorData> {
        let principal = self.caller(&context.extensions)?;
        let cursor = match request.and_then(|r| r.cursor) {
            Some(cursor) => cursor
                .parse()
                .map_err(|_| ErrorData::invalid_params("bad cursor", None))?,
            None => 0,
        };
        let tools = self.clone();
        let value = self
            .turns
            .run(
                Work::Read,
                Box::new(move || to_value(tools.resources(&principal, cursor)?)),
            )
            .await
            .map_err(protocol_error)?;
        serde_json::from_value(value).map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<ReadResourceResponse, ErrorData> {
        let principal = self.caller(&context.extensions)?;
        let tools = self.clone();
        let uri = request.uri.clone();
        let value = self
            .turns
            .run(
                Work::Read,
                Box::new(move || to_value(tools.read(&principal, &uri)?)),
            )
            .await
            .map_err(protocol_error)?;
        let result: ReadResourceResult = serde_json::from_value(value)
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(result.into())
    }
}

/// A resource request's error: not found stays not found (so a document
/// the caller may not read looks like one that does not exist).
fn protocol_error(err: Error) -> ErrorData {
    match err {
        Error::NotFound(what) => ErrorData::resource_not_found(format!("no {what}"), None),
        Error::InvalidRequest(reason) => ErrorData::invalid_params(reason, None),
        other => ErrorData::internal_error(other.to_string(), None),
    }
}

/// Serves the MCP tools over stdin and stdout as `principal` until the
/// client closes the stream.
pub fn serve_stdio(engine: Arc<Engine>, principal: Principal) -> Result<()> {
    use rmcp::ServiceExt;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::unavailable(format!("cannot start the MCP runtime: {e}")))?;
    runtime.block_on(async {
        let running = Tools::acting_as(engine, principal)
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| Error::unavailable(format!("the MCP client did not start: {e}")))?;
        running
            .waiting()
            .await
            .map_err(|e| Error::unavailable(format!("the MCP session failed: {e}")))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cut_on_character_boundaries_and_say_where_the_next_starts() {
        let text = "é".repeat(MAX_TEXT_BYTES); // two bytes each
        let (first, next) = page(&text, 0).unwrap();
        assert_eq!(first.len(), MAX_TEXT_BYTES);
        let (second, next) = page(&text, next.unwrap()).unwrap();
        assert_eq!(second.len(), MAX_TEXT_BYTES);
        assert_eq!(next, None);
        // An offset inside a character starts at that character.
        let (odd, _) = page(&text, 3).unwrap();
        assert!(odd.starts_with('é'));
        assert!(page(&text, text.len() + 1).is_err());
        assert_eq!(page("", 0).unwrap(), ("", None));
    }

    #[test]
    fn every_tool_has_an_object_schema_that_names_its_required_arguments() {
        let tools = tools();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "search",
                "ask",
                "get_passage",
                "get_document",
                "list_collections"
            ]
        );
        let required = |name: &str| -> Vec<String> {
            let tool = tools.iter().find(|t| t.name == name).unwrap();
            assert_eq!(tool.input_schema["type"], "object");
            serde_json::from_value(
                tool.input_schema
                    .get("required")
                    .cloned()
                    .unwrap_or(json!([])),
            )
            .unwrap()
        };
        assert_eq!(required("search"), ["query"]);
        assert_eq!(required("ask"), ["question"]);
        assert_eq!(required("get_document"), ["id"]);
        assert!(required("list_collections").is_empty());
    }

    #[test]
    fn a_request_without_a_caller_is_refused() {
        let mut extensions = Extensions::default();
        assert!(caller(None, &extensions).is_err(), "no request parts");
        let (parts, ()) = http::Request::new(()).into_parts();
        extensions.insert(parts);
        assert!(
            caller(None, &extensions).is_err(),
            "parts without a principal"
        );
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts
            .extensions
            .insert(Principal::everywhere("k1", crate::keys::Role::Read));
        extensions.insert(parts);
        assert_eq!(caller(None, &extensions).unwrap().id, "k1");
        let local = Principal::owner("mcp");
        assert_eq!(
            caller(Some(&local), &Extensions::default()).unwrap().id,
            "mcp"
        );
    }

    #[test]
    fn bad_arguments_are_named() {
        let err = parse::<SearchArgs>(json!({ "query": "x", "k": "many" })).unwrap_err();
        assert!(tool_message(&err).contains("bad arguments"), "{err}");
        let err = parse::<SearchArgs>(json!({ "query": "x", "collection": "a" })).unwrap_err();
        assert!(tool_message(&err).contains("unknown field"), "{err}");
    }
}
