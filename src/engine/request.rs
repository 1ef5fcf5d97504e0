//! What `ask` takes and returns: [`AskRequest`] with its one validation,
//! the constraint options as the CLI and HTTP API spell them, the
//! [`Techniques`] a request turns on, and [`AskResponse`] with its
//! evidence, timings and the reason for an abstention.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::conversation::Turn;
pub use super::technique::Verdict;
use super::technique::{self, Technique};
use crate::answer::{Citation, Correction, Quote};
use crate::config::GeneratorConfig;
use crate::error::{Error, Result, check_range};
use crate::generate::{Constraint, Sampling};
use crate::search::{Filter, Hit, Readers};
/// Most samples one self-consistency vote may draw.
pub const MAX_SAMPLES: usize = 16;
/// Most chunks one answer may be built from.
pub const MAX_K: usize = 50;
/// Temperature of self-consistency samples when the request's is 0.
pub const VOTE_TEMPERATURE: f64 = 0.7;

/// Longest document id or path a question may name.
pub const MAX_DOCUMENT_NAME: usize = 4096;

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
    /// What the answer must match; none: text that cites sources as `[n]`.
    #[serde(default)]
    pub constraint: Option<Constraint>,
    /// Answer as `{answer, citations}` JSON, citations checked against the
    /// sources (instead of `constraint`).
    #[serde(default)]
    pub cited_json: bool,
    /// The prompting techniques to apply.
    #[serde(default)]
    pub techniques: Techniques,
    /// Collections to answer from (none: `default`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<String>,
    /// Earlier turns of the conversation, oldest first: the question is
    /// rewritten to stand alone before retrieval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Turn>,
    /// Answer from this one document, whole (its id, or the path of the
    /// file it came from), instead of from retrieved chunks; a document
    /// too long for one prompt is answered part by part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// With `document`: a summary is asked for, so the question's words
    /// need not be in the document (no support check).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub summary: bool,
    /// Who reads: the answer is built only from documents they may read.
    #[serde(skip)]
    pub readers: Readers,
}

impl AskRequest {
    /// Three sources: measured on the handbook, enough for the answer while
    /// keeping the prompt (the slow part on a CPU) near 600 tokens.
    pub const DEFAULT_K: usize = 3;

    /// A request for `question` with every default.
    pub fn new(question: impl Into<String>) -> Self {
        AskRequest {
            question: question.into(),
            k: Self::DEFAULT_K,
            filter: Filter::default(),
            sampling: Sampling::default(),
            constraint: None,
            cited_json: false,
            techniques: Techniques::default(),
            collections: Vec::new(),
            history: Vec::new(),
            document: None,
            summary: false,
            readers: Readers::Everyone,
        }
    }

    /// The question a summary asks.
    pub const SUMMARY_QUESTION: &str =
        "Summarize this document: what it is for and its main points.";
}

impl AskRequest {
    /// Refuses a request that cannot be answered, before any work: the
    /// one place an answer's bounds are checked, for every caller (the
    /// server checks before it queues, the engine again when it runs).
    pub fn validate(&self, generator: &GeneratorConfig) -> Result<()> {
        if self.question.trim().is_empty() {
            return Err(Error::InvalidRequest("question is empty".into()));
        }
        // Bounded before anything is tokenized, with or without history.
        if self.question.len() > crate::search::MAX_QUERY_BYTES {
            return Err(Error::InvalidRequest(format!(
                "the question is {} bytes; at most {} are accepted",
                self.question.len(),
                crate::search::MAX_QUERY_BYTES
            )));
        }
        check_range("k", self.k, 1, MAX_K)?;
        match &self.document {
            None if self.summary => {
                return Err(Error::InvalidRequest(
                    "a summary needs a document (its id or path)".into(),
                ));
            }
            Some(document) if document.trim().is_empty() || document.len() > MAX_DOCUMENT_NAME => {
                return Err(Error::InvalidRequest(format!(
                    "document must name a document id or path of 1 to {MAX_DOCUMENT_NAME} bytes"
                )));
            }
            Some(_) if self.collections.len() > 1 => {
                return Err(Error::InvalidRequest(
                    "a document is read from one collection; name one".into(),
                ));
            }
            _ => {}
        }
        let s = &self.sampling;
        check_range("max_tokens", s.max_tokens, 1, generator.max_answer_tokens())?;
        check_range("temperature", s.temperature, 0.0, 2.0)?;
        check_range("top_p", s.top_p, 0.0, 1.0)?;
        if s.top_p <= 0.0 {
            return Err(Error::InvalidRequest("top_p must be above 0".into()));
        }
        check_range(
            "techniques.samples",
            self.techniques.samples,
            0,
            MAX_SAMPLES,
        )?;
        let most = generator.max_request_tokens;
        let tokens = self.techniques.tokens(s.max_tokens);
        if tokens > most {
            return Err(Error::InvalidRequest(format!(
                "this request may generate {tokens} tokens (max_tokens × samples, twice with \
                 chain of thought, once more to reflect); the limit is {most} \
                 (generator.max_request_tokens)"
            )));
        }
        Ok(())
    }
}

fn default_k() -> usize {
    AskRequest::DEFAULT_K
}

/// The constraint options as the CLI and the HTTP API take them: at most
/// one of a JSON Schema (or `"cited"` for the built-in cited JSON), a
/// choice list, a regex, a Lark grammar.
#[derive(Debug, Clone, Default)]
pub struct ConstraintOptions {
    /// A JSON Schema object, or the string `"cited"`.
    pub schema: Option<Value>,
    /// Allowed answers.
    pub choices: Option<Vec<String>>,
    /// A regular expression the whole answer matches.
    pub regex: Option<String>,
    /// A Lark grammar (llguidance's dialect).
    pub grammar: Option<String>,
}

impl ConstraintOptions {
    /// The options that give `request`'s constraint (the inverse of
    /// [`ConstraintOptions::apply`]); a grammar with an inner answer has
    /// no such form.
    pub fn of(request: &AskRequest) -> Result<ConstraintOptions> {
        let mut options = ConstraintOptions::default();
        if request.cited_json {
            options.schema = Some(Value::String("cited".into()));
        }
        match request.constraint.clone() {
            None => {}
            Some(Constraint::JsonSchema { schema }) => options.schema = Some(schema),
            Some(Constraint::Choices { choices }) => options.choices = Some(choices),
            Some(Constraint::Regex { pattern }) => options.regex = Some(pattern),
            Some(Constraint::Grammar { lark, answer: None }) => options.grammar = Some(lark),
            Some(Constraint::Grammar { .. }) => {
                return Err(Error::InvalidRequest(
                    "a grammar with an inner answer cannot be sent to a server".into(),
                ));
            }
        }
        Ok(options)
    }

    /// Sets `request`'s constraint (or cited JSON) from these options.
    pub fn apply(self, request: &mut AskRequest) -> Result<()> {
        let given = [
            self.schema.is_some(),
            self.choices.is_some(),
            self.regex.is_some(),
            self.grammar.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(Error::InvalidRequest(
                "give at most one of schema, choices, regex and grammar".into(),
            ));
        }
        request.constraint = match (self.schema, self.choices, self.regex, self.grammar) {
            (Some(Value::String(name)), ..) if name == "cited" => {
                request.cited_json = true;
                None
            }
            (Some(Value::String(name)), ..) => {
                return Err(Error::InvalidRequest(format!(
                    "schema '{name}' is not built in (\"cited\" is); give a JSON Schema object"
                )));
            }
            (Some(schema), ..) => Some(Constraint::JsonSchema { schema }),
            (_, Some(choices), ..) => Some(Constraint::Choices { choices }),
            (_, _, Some(pattern), _) => Some(Constraint::Regex { pattern }),
            (.., Some(lark)) => Some(Constraint::lark(lark)),
            _ => None,
        };
        Ok(())
    }
}

/// The talk's techniques, each off by default: the switches of
/// [`technique::ALL`] (in JSON each a boolean field named like the
/// technique, `_` for `-`) and self-consistency's sample count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Techniques {
    /// Self-consistency: answers sampled (at temperature > 0) for a
    /// majority vote; 0 or 1 = one answer.
    pub samples: usize,
    /// Bit `i` set: `technique::ALL[i]` is on.
    on: u64,
}

impl Techniques {
    /// These techniques and `technique` too.
    pub fn with(mut self, technique: &dyn Technique) -> Techniques {
        self.on |= Self::bit(technique);
        self
    }

    /// True when `technique` is on.
    pub fn has(&self, technique: &dyn Technique) -> bool {
        self.on & Self::bit(technique) != 0
    }

    /// These techniques and the one called `name` too.
    pub fn named(self, name: &str) -> Result<Techniques> {
        let technique = technique::named(name).ok_or_else(|| {
            Error::InvalidRequest(format!(
                "unknown technique '{name}' ({})",
                technique::names()
            ))
        })?;
        Ok(self.with(technique))
    }

    /// The switches that are on, in the order they act.
    pub fn switches(&self) -> impl Iterator<Item = &'static dyn Technique> + '_ {
        technique::ALL.iter().copied().filter(|t| self.has(*t))
    }

    fn bit(technique: &dyn Technique) -> u64 {
        technique::ALL
            .iter()
            .position(|t| t.name() == technique.name())
            .map_or(0, |i| 1 << i)
    }

    /// Room one output takes, in answers of `max_tokens`: one, and one
    /// more for each technique's own part (reasoning, quotes).
    pub(super) fn outputs_per_answer(&self) -> usize {
        1 + self.switches().map(|t| t.outputs()).sum::<usize>()
    }

    /// The most tokens a request with these techniques may generate, for
    /// answers of at most `max_tokens`.
    pub fn tokens(&self, max_tokens: usize) -> usize {
        let per_answer = max_tokens * self.outputs_per_answer();
        let passes: usize = self.switches().map(|t| t.passes()).sum();
        per_answer * self.samples.max(1) + passes * max_tokens
    }
}

impl Serialize for Techniques {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(technique::ALL.len() + 1))?;
        for t in technique::ALL {
            map.serialize_entry(&technique::field_name(*t), &self.has(*t))?;
        }
        map.serialize_entry("samples", &self.samples)?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for Techniques {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Techniques;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of techniques")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Techniques, A::Error> {
                let mut techniques = Techniques::default();
                while let Some(field) = map.next_key::<String>()? {
                    if field == "samples" {
                        techniques.samples = map.next_value()?;
                    } else if let Some(t) = technique::of_field(&field) {
                        if map.next_value::<bool>()? {
                            techniques = techniques.with(t);
                        }
                    } else {
                        let fields: Vec<String> = technique::ALL
                            .iter()
                            .map(|t| technique::field_name(*t))
                            .collect();
                        return Err(serde::de::Error::custom(format!(
                            "unknown field `{field}`, expected `samples` or one of {}",
                            fields.join(", ")
                        )));
                    }
                }
                Ok(techniques)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

#[cfg(feature = "server")]
impl utoipa::PartialSchema for Techniques {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
        let mut object = ObjectBuilder::new()
            .description(Some("The talk's techniques, each off by default."))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for t in technique::ALL {
            let switch = ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .description(Some(t.about()))
                .default(Some(Value::Bool(false)));
            object = object.property(technique::field_name(*t), switch);
        }
        let samples = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .description(Some(
                "Self-consistency: answers sampled (at temperature > 0) for a\n\
                 majority vote; 0 or 1 = one answer.",
            ))
            .default(Some(Value::from(0)))
            .maximum(Some(MAX_SAMPLES as f64))
            .minimum(Some(0.0));
        object.property("samples", samples).into()
    }
}

#[cfg(feature = "server")]
impl utoipa::ToSchema for Techniques {}

/// Where the time went.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct AskTimings {
    /// Rewriting a follow-up into a standalone question (0 without a
    /// history).
    #[serde(default)]
    pub rewrite_ms: f64,
    /// Prompt tokens of that rewrite.
    #[serde(default)]
    pub rewrite_prompt_tokens: usize,
    /// Retrieval.
    pub retrieve_ms: f64,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens taken from the model's cache, not computed again: the
    /// prompt began like the one before it.
    #[serde(default)]
    pub reused_tokens: usize,
    /// Prompt processing (all passes; self-consistency's samples share one).
    pub prompt_ms: f64,
    /// Tokens generated (all samples and passes).
    pub gen_tokens: usize,
    /// Generation (all samples and passes).
    pub gen_ms: f64,
}

/// One distinct answer of a self-consistency vote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Vote {
    /// The answer (the first sample that gave it).
    pub answer: String,
    /// Samples that gave it.
    pub count: usize,
}

/// Reflection's report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Reflection {
    /// The decision.
    pub verdict: Verdict,
    /// The answer before reflection.
    pub draft: String,
}

/// An answer with its evidence (`lore ask --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct AskResponse {
    /// The answer text (JSON text under a JSON constraint).
    pub answer: String,
    /// True when lore says the documents do not contain the answer.
    pub abstained: bool,
    /// Citations resolved to chunks.
    pub citations: Vec<Citation>,
    /// Citation numbers that pointed at no source (dropped).
    pub invalid_citations: Vec<usize>,
    /// Quote first: the verbatim quotes written before the answer, each
    /// with its byte range in its source chunk's text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotes: Vec<Quote>,
    /// Citations moved to the source that supports their sentence (the
    /// answer text shows the corrected numbers).
    pub corrected_citations: Vec<Correction>,
    /// Why lore abstained, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abstained_because: Option<Abstention>,
    /// How much of what the question asks the best source covers, 0 to 1:
    /// the share of its terms, weighted by rarity, that the source holds
    /// (question words like "how" or "often" left out). Under
    /// `generator.min_support` lore abstains. None when nothing was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support: Option<f64>,
    /// The answer parsed, when it is JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// The answer stopped at `max_tokens` (or the context window) before
    /// its end: under a constraint it may be incomplete.
    #[serde(default)]
    pub truncated: bool,
    /// Chain of thought's reasoning (never part of the answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// Self-consistency's tally, most votes first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub votes: Vec<Vote>,
    /// Reflection's verdict on the draft.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reflection: Option<Reflection>,
    /// With `abstained_because: "unsourced"`: the withdrawn answer and the
    /// names and figures in it that no source holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsourced: Option<Unsourced>,
    /// The question as retrieved and answered, when a history made lore
    /// rewrite it to stand alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standalone_question: Option<String>,
    /// A document too long for one prompt: what each part of it said,
    /// before the parts were combined into the answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartAnswer>,
    /// The retrieved chunks, numbered as the citations number them: those
    /// the prompt gave, in its order (best first, unless
    /// `generator.keep_source_order` kept the last prompt's order; each
    /// hit's `rank` is its rank), then those that did not fit (a whole
    /// document: its chunks in order).
    pub retrieved: Vec<Hit>,
    /// Timings.
    pub timings: AskTimings,
}

/// An answer withdrawn because it named what its sources do not hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Unsourced {
    /// The answer as the model wrote it.
    pub draft: String,
    /// The names and figures in it that no source holds (lower case).
    pub names: Vec<String>,
}

/// What one part of a long document said to the question.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct PartAnswer {
    /// The part's first and last passage, as the citations number them.
    pub passages: [usize; 2],
    /// Its answer, citing the document's passages as `[n]`.
    pub answer: String,
    /// The part did not hold the answer.
    pub abstained: bool,
}

/// Why an answer is an abstention.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Abstention {
    /// Nothing close enough was found (`generator.min_score`).
    NoMatch,
    /// What was found does not cover what is asked
    /// (`generator.min_support`).
    Unsupported,
    /// The model said the sources do not hold the answer.
    Model,
    /// Reflection withdrew the draft.
    Reflection,
    /// The answer named commands, options or settings that none of its
    /// sources holds (`generator.check_names`): it was not read from them.
    Unsourced,
}

impl Abstention {
    /// Its name, as in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Abstention::NoMatch => "no_match",
            Abstention::Unsupported => "unsupported",
            Abstention::Model => "model",
            Abstention::Reflection => "reflection",
            Abstention::Unsourced => "unsourced",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_counts_every_token_its_techniques_may_generate() {
        let t = |cot: bool, samples, reflect: bool| {
            let mut t = Techniques {
                samples,
                ..Techniques::default()
            };
            if cot {
                t = t.with(&technique::Cot);
            }
            if reflect {
                t = t.with(&technique::Reflect);
            }
            t
        };
        assert_eq!(t(false, 0, false).tokens(100), 100);
        assert_eq!(t(false, 5, false).tokens(100), 500);
        assert_eq!(t(true, 5, true).tokens(100), 1100);
    }

    #[test]
    fn every_technique_is_named_parsed_switched_and_serialised_from_one_table() {
        for &technique in technique::ALL {
            let on = Techniques::default().named(technique.name()).unwrap();
            assert!(on.has(technique));
            assert_eq!(
                on.switches().count(),
                1,
                "{} turned on another",
                technique.name()
            );
            let json = serde_json::to_value(&on).unwrap();
            assert_eq!(json[technique::field_name(technique)], true, "{json}");
            assert_eq!(serde_json::from_value::<Techniques>(json).unwrap(), on);
        }
        let few = Techniques::default().named("fewshot").unwrap();
        assert!(few.has(&technique::FewShot));
        assert!(Techniques::default().named("telepathy").is_err());
        let parsed: Techniques =
            serde_json::from_str(r#"{"cot": true, "samples": 3, "quote": false}"#).unwrap();
        let want = Techniques {
            samples: 3,
            ..Techniques::default()
        };
        assert_eq!(parsed, want.with(&technique::Cot));
        let unknown = serde_json::from_str::<Techniques>(r#"{"telepathy": true}"#);
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown field `telepathy`")
        );
    }
}
