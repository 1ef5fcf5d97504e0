//! The HTTP API's bodies, defined once: the server deserialises requests
//! and serialises responses with these types, the client
//! (`client::Remote`) does the reverse, and the OpenAPI document is
//! generated from them. Each request body turns into the engine's request
//! (and back, for the client); the range checks live with the engine's
//! requests ([`AskRequest::validate`], [`SearchRequest::validate`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{AskRequest, CollectionInfo, ConstraintOptions, Techniques, Turn};
use crate::error::Result;
use crate::generate::Sampling;
use crate::search::{Filter, Mode, SearchRequest};

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable machine-readable code (`invalid_request`, `unauthorized`,
    /// `forbidden`, `not_found`, `busy`, ...).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

/// The data of a `token` event of `POST /v1/ask` with `stream: true`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenEvent {
    /// The next piece of the answer's text.
    pub text: String,
}

/// `POST /v1/search` body.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// The query text.
    pub query: String,
    /// Hits wanted (1..=1000).
    #[serde(default = "default_search_k")]
    #[cfg_attr(feature = "server", schema(default = 10, minimum = 1, maximum = 1000))]
    pub k: usize,
    /// Retriever.
    #[serde(default)]
    pub mode: Mode,
    /// Only chunks of documents matching this.
    #[serde(default)]
    pub filter: Filter,
    /// At most one hit per document.
    #[serde(default)]
    pub collapse: bool,
}

fn default_search_k() -> usize {
    10
}

impl SearchBody {
    /// The body that asks for `request` (its collections go in the URL).
    pub fn of(request: &SearchRequest) -> SearchBody {
        SearchBody {
            query: request.query.clone(),
            k: request.k,
            mode: request.mode,
            filter: request.filter.clone(),
            collapse: request.collapse,
        }
    }

    /// The engine's request, for the collections the URL names.
    pub fn into_request(self, collections: Vec<String>) -> SearchRequest {
        SearchRequest {
            filter: self.filter,
            collapse: self.collapse,
            collections,
            ..SearchRequest::new(self.query, self.k, self.mode)
        }
    }
}

/// `POST /v1/ask` body.
#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AskBody {
    /// The question.
    pub question: String,
    /// Chunks to answer from (1..=50, default 3).
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(minimum = 1, maximum = 50))]
    pub k: Option<usize>,
    /// Only documents matching this.
    #[serde(default)]
    pub filter: Filter,
    /// Most tokens to generate (default 256); at most the context window
    /// (`generator.context_tokens`, 2048 by default) less 256 for the prompt.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(minimum = 1))]
    pub max_tokens: Option<usize>,
    /// 0 = greedy (default), up to 2.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(minimum = 0, maximum = 2))]
    pub temperature: Option<f64>,
    /// Nucleus mass kept (above 0, up to 1; default 0.9).
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(exclusive_minimum = 0, maximum = 1))]
    pub top_p: Option<f64>,
    /// Random seed: same seed and input, same output.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stream Server-Sent Events: `token` events `{text}`, then one `done`
    /// event with the whole answer object.
    #[serde(default)]
    pub stream: bool,
    /// The answer is JSON valid against this JSON Schema; the string
    /// `"cited"` selects the built-in `{answer, citations}` schema.
    #[serde(default)]
    pub schema: Option<Value>,
    /// The answer is exactly one of these strings.
    #[serde(default)]
    pub choices: Option<Vec<String>>,
    /// The whole answer matches this regular expression.
    #[serde(default)]
    pub regex: Option<String>,
    /// The answer follows this Lark grammar (llguidance's dialect).
    #[serde(default)]
    pub grammar: Option<String>,
    /// Prompting techniques: chain of thought, self-consistency samples,
    /// reflection, few-shot examples, the expert prompt.
    #[serde(default)]
    pub techniques: Techniques,
    /// Earlier turns of the conversation, oldest first: the question is
    /// rewritten from them into a standalone one (reported as
    /// `standalone_question`) before retrieval. Only the newest turns that
    /// fit `generator.history_tokens` are used.
    #[serde(default)]
    pub history: Vec<Turn>,
    /// Answer from this one document, whole (its id, or the path of the
    /// file it came from on the server), instead of from retrieved chunks;
    /// a document too long for one prompt is answered part by part and
    /// the parts' answers are returned as `parts`.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(max_length = 4096))]
    pub document: Option<String>,
    /// With `document`: summarize it (the question may be empty).
    #[serde(default)]
    pub summarize: bool,
}

impl AskBody {
    /// The body that asks for `request`, streamed or not (its collections
    /// go in the URL); a grammar with an inner answer has no such form.
    pub fn of(request: &AskRequest, stream: bool) -> Result<AskBody> {
        let constraint = ConstraintOptions::of(request)?;
        let s = &request.sampling;
        Ok(AskBody {
            question: request.question.clone(),
            k: Some(request.k),
            filter: request.filter.clone(),
            max_tokens: Some(s.max_tokens),
            temperature: Some(s.temperature),
            top_p: Some(s.top_p),
            seed: Some(s.seed),
            stream,
            schema: constraint.schema,
            choices: constraint.choices,
            regex: constraint.regex,
            grammar: constraint.grammar,
            techniques: request.techniques.clone(),
            history: request.history.clone(),
            document: request.document.clone(),
            summarize: request.summary,
        })
    }

    /// The engine's request, defaults filled in (not yet range-checked:
    /// see [`AskRequest::validate`]).
    pub fn into_request(self) -> Result<AskRequest> {
        let defaults = Sampling::default();
        let sampling = Sampling {
            max_tokens: self.max_tokens.unwrap_or(defaults.max_tokens),
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            seed: self.seed.unwrap_or(defaults.seed),
            ..defaults
        };
        let question = if self.summarize && self.question.trim().is_empty() {
            AskRequest::SUMMARY_QUESTION.to_string()
        } else {
            self.question
        };
        let mut request = AskRequest {
            k: self.k.unwrap_or(AskRequest::DEFAULT_K),
            filter: self.filter,
            sampling,
            techniques: self.techniques,
            history: self.history,
            document: self.document,
            summary: self.summarize,
            ..AskRequest::new(question)
        };
        let constraint = ConstraintOptions {
            schema: self.schema,
            choices: self.choices,
            regex: self.regex,
            grammar: self.grammar,
        };
        constraint.apply(&mut request)?;
        Ok(request)
    }
}

/// `POST /v1/ingest` body.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct IngestBody {
    /// A file or folder on the server, under a configured ingest root.
    #[cfg_attr(feature = "server", schema(value_type = String))]
    pub path: PathBuf,
}

/// `POST /v1/remove` body.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RemoveBody {
    /// A document id, or an ingested file or folder on the server (under a
    /// configured ingest root).
    pub target: String,
}

/// `GET /v1/collections` body.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct CollectionList {
    /// The collections this key may use, `default` first.
    pub collections: Vec<CollectionInfo>,
}

/// `POST /v1/collections` body.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewCollection {
    /// Letters, digits, `-`, `_`, `.`; starts with a letter or digit.
    pub name: String,
    /// The embedder: the name of a model directory in the server's models
    /// folder (default: the configured embedder).
    #[serde(default)]
    pub embedder: Option<String>,
}

/// `DELETE /v1/collections/{name}` body.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Dropped {
    /// The collection dropped.
    pub name: String,
    /// Chunks it held.
    pub chunks: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::Constraint;

    #[test]
    fn a_request_survives_the_wire() {
        let mut request = AskRequest {
            k: 5,
            filter: Filter::parse(&["type=md".to_string()]).unwrap(),
            sampling: Sampling {
                temperature: 0.4,
                top_p: 0.8,
                seed: 9,
                max_tokens: 77,
                ..Sampling::default()
            },
            ..AskRequest::new("Which days does the roaster run?")
        };
        request.techniques.samples = 3;
        request.constraint = Some(Constraint::Choices {
            choices: vec!["yes".into(), "no".into()],
        });
        let sent = serde_json::to_string(&AskBody::of(&request, true).unwrap()).unwrap();
        let body: AskBody = serde_json::from_str(&sent).unwrap();
        assert!(body.stream);
        let back = body.into_request().unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&request).unwrap()
        );
        let search = SearchRequest {
            collapse: true,
            ..SearchRequest::new("roaster", 4, Mode::Bm25)
        };
        let sent = serde_json::to_string(&SearchBody::of(&search)).unwrap();
        let back = serde_json::from_str::<SearchBody>(&sent)
            .unwrap()
            .into_request(Vec::new());
        assert_eq!(
            (back.query, back.k, back.collapse),
            ("roaster".into(), 4, true)
        );
        assert_eq!(back.mode, Mode::Bm25);
    }
}
