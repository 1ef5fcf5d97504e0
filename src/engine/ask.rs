//! [`Engine::ask`]: retrieve, decide whether the documents can answer at
//! all, build the prompt, generate (streaming), resolve citations.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Engine;
use crate::answer::{Citation, Correction, is_abstention, resolve, verify};
use crate::error::{Error, Result};
use crate::generate::Sampling;
use crate::prompt::{self, NOT_IN_DOCUMENTS};
use crate::search::{Filter, Hit, Mode, SearchRequest};

/// A question.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AskRequest {
    /// The question.
    pub question: String,
    /// Chunks to retrieve.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Only documents matching this.
    #[serde(default)]
    pub filter: Filter,
    /// Sampling and answer length.
    #[serde(default)]
    pub sampling: Sampling,
}

impl AskRequest {
    /// Three sources: measured on the handbook, enough for the answer while
    /// keeping the prompt (the slow part on a CPU) near 600 tokens.
    pub const DEFAULT_K: usize = 3;
}

fn default_k() -> usize {
    AskRequest::DEFAULT_K
}

/// Where the time went.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AskTimings {
    /// Retrieval.
    pub retrieve_ms: f64,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt processing.
    pub prompt_ms: f64,
    /// Tokens generated.
    pub gen_tokens: usize,
    /// Generation.
    pub gen_ms: f64,
}

/// An answer with its evidence (`lore ask --json`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AskResponse {
    /// The answer text.
    pub answer: String,
    /// True when lore says the documents do not contain the answer.
    pub abstained: bool,
    /// Citations resolved to chunks.
    pub citations: Vec<Citation>,
    /// Citation numbers that pointed at no source (dropped).
    pub invalid_citations: Vec<usize>,
    /// Citations moved to the source that supports their sentence (the
    /// answer text shows the corrected numbers).
    pub corrected_citations: Vec<Correction>,
    /// The retrieved chunks, best first.
    pub retrieved: Vec<Hit>,
    /// Timings.
    pub timings: AskTimings,
}

impl Engine {
    /// Answers `request` from the documents, streaming the answer's text
    /// to `on_text` (return `false` to stop).
    pub fn ask(
        &self,
        request: &AskRequest,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<AskResponse> {
        if request.question.trim().is_empty() {
            return Err(Error::InvalidRequest("empty question".into()));
        }
        let start = Instant::now();
        let search = SearchRequest {
            filter: request.filter.clone(),
            ..SearchRequest::new(request.question.clone(), request.k, Mode::Hybrid)
        };
        let found = self.search(&search)?;
        let relevant = found.best_dense.unwrap_or(0.0) >= self.config.generator.min_score;
        let retrieved = found.hits;
        let mut timings = AskTimings {
            retrieve_ms: start.elapsed().as_secs_f64() * 1000.0,
            ..AskTimings::default()
        };
        if !relevant || retrieved.is_empty() {
            on_text(NOT_IN_DOCUMENTS);
            return Ok(AskResponse {
                answer: NOT_IN_DOCUMENTS.to_string(),
                abstained: true,
                citations: Vec::new(),
                invalid_citations: Vec::new(),
                corrected_citations: Vec::new(),
                retrieved,
                timings,
            });
        }
        let generator = self.generator()?;
        let context = self
            .config
            .generator
            .context_tokens
            .min(generator.context_length());
        let built = prompt::build(
            generator.as_ref(),
            &request.question,
            &retrieved,
            context,
            request.sampling.max_tokens,
        )?;
        let rendered = format!(
            "{}{}",
            generator.render(&built.messages),
            prompt::ANSWER_PREFIX
        );
        on_text(prompt::ANSWER_PREFIX);
        let mut generated = generator.generate(&rendered, &request.sampling, on_text)?;
        generated.text = format!("{}{}", prompt::ANSWER_PREFIX, generated.text);
        let (text, corrected_citations) = verify(&generated.text, &built.sources);
        let (citations, invalid_citations) = resolve(&text, &built.sources);
        timings.prompt_tokens = generated.prompt_tokens;
        timings.prompt_ms = generated.prompt_ms;
        timings.gen_tokens = generated.gen_tokens;
        timings.gen_ms = generated.gen_ms;
        Ok(AskResponse {
            abstained: is_abstention(&text),
            answer: text.trim().to_string(),
            citations,
            invalid_citations,
            corrected_citations,
            retrieved,
            timings,
        })
    }
}
