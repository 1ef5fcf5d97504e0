//! Constrained decoding: a [`Constraint`] compiled by llguidance into a
//! matcher that, before every token, says which tokens of the vocabulary
//! keep the output inside the constraint; the others get a logit of −∞,
//! so the sampler can never pick them, at any temperature.
//!
//! The token table comes from the tokenizer lore builds from the GGUF,
//! handed to `toktrie_hf_tokenizers` as tokenizer JSON (it pins an older
//! `tokenizers`, so the live object cannot cross over).

use llguidance::api::{GrammarWithLexer, TopLevelGrammar};
use llguidance::toktrie::{SimpleVob, TokEnv, TokenId};
use llguidance::{Matcher, ParserFactory};
use tokenizers::Tokenizer;

use super::Constraint;
use crate::error::{Error, Result};

/// Largest schema or grammar accepted, in bytes of JSON or text.
pub const MAX_CONSTRAINT_BYTES: usize = 64 * 1024;
/// Most strings a choice list may hold.
pub const MAX_CHOICES: usize = 256;

/// The name under which a grammar refers to its `answer` constraint.
const ANSWER: &str = "answer";

/// Compiles constraints for one model's vocabulary.
pub struct Guides {
    factory: ParserFactory,
}

impl Guides {
    /// Builds the token table of `tokenizer`, with `end_tokens` as the
    /// tokens that may end a complete output and `vocab` the logits' length
    /// (models pad their vocabulary past the tokenizer's).
    pub fn new(tokenizer: &Tokenizer, end_tokens: &[u32], vocab: usize) -> Result<Self> {
        let fail = |e: String| Error::Inference(format!("constrained decoding setup: {e}"));
        let json = tokenizer
            .to_string(false)
            .map_err(|e| fail(e.to_string()))?;
        let mut bytes = toktrie_hf_tokenizers::ByteTokenizer::from_json_bytes(json.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
        let mut ends: Vec<u32> = Vec::new();
        for &t in end_tokens {
            if !ends.contains(&t) && t < bytes.tokrx_info().vocab_size {
                ends.push(t);
            }
        }
        if !ends.is_empty() {
            bytes.set_eos_tokens(&ends);
        }
        let env: TokEnv = bytes
            .into_tok_env(Some(vocab))
            .map_err(|e| fail(e.to_string()))?;
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| fail(e.to_string()))?;
        factory.quiet();
        Ok(Guides { factory })
    }

    /// The logits' length the token table was built for.
    pub fn vocab(&self) -> usize {
        self.factory.tok_env().tok_trie().vocab_size()
    }

    /// A fresh matcher for `constraint`, or the reason it cannot be
    /// compiled (a bad schema, regex or grammar is the caller's error).
    pub fn start(&self, constraint: &Constraint) -> Result<Guide> {
        self.compile(grammar(constraint)?)
    }

    fn compile(&self, grammar: TopLevelGrammar) -> Result<Guide> {
        // A grammar is the caller's input: should compiling one panic, it
        // is refused like any other bad grammar.
        let parser = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.factory.create_parser(grammar)
        }))
        .map_err(|_| {
            Error::InvalidRequest("constraint: the grammar could not be compiled".into())
        })?;
        let matcher = Matcher::new(parser);
        if let Some(error) = matcher.get_error() {
            return Err(Error::InvalidRequest(format!("constraint: {error}")));
        }
        Ok(Guide {
            matcher,
            accepted: 0,
        })
    }
}

/// llguidance's grammar for `constraint`, after size checks.
fn grammar(constraint: &Constraint) -> Result<TopLevelGrammar> {
    let too_big = |what: &str| {
        Error::InvalidRequest(format!(
            "the {what} is larger than {MAX_CONSTRAINT_BYTES} bytes"
        ))
    };
    Ok(match constraint {
        Constraint::JsonSchema { schema } => {
            if serde_json::to_string(schema).map_or(0, |s| s.len()) > MAX_CONSTRAINT_BYTES {
                return Err(too_big("schema"));
            }
            if !schema.is_object() && !schema.is_boolean() {
                return Err(Error::InvalidRequest(
                    "a JSON Schema is an object (or true/false)".into(),
                ));
            }
            TopLevelGrammar::from_json_schema(compact(schema))
        }
        Constraint::Choices { choices } => TopLevelGrammar::from_lark(choice_grammar(choices)?),
        Constraint::Regex { pattern } => {
            if pattern.len() > MAX_CONSTRAINT_BYTES {
                return Err(too_big("regex"));
            }
            TopLevelGrammar::from_regex(pattern)
        }
        Constraint::Grammar { lark, answer } => {
            if lark.len() > MAX_CONSTRAINT_BYTES {
                return Err(too_big("grammar"));
            }
            let mut top = TopLevelGrammar::from_lark(lark.clone());
            if let Some(answer) = answer {
                top.grammars.push(named_answer(answer)?);
            }
            top
        }
    })
}

/// `answer`'s grammar, named so that `@answer` refers to it.
fn named_answer(answer: &Constraint) -> Result<GrammarWithLexer> {
    let mut inner = grammar(answer)?;
    if inner.grammars.len() != 1 {
        return Err(Error::InvalidRequest(
            "the answer of a grammar cannot have an answer of its own".into(),
        ));
    }
    let mut inner = inner.grammars.remove(0);
    inner.name = Some(ANSWER.into());
    Ok(inner)
}

/// `schema` with llguidance told to write JSON on one line with single
/// spaces (`{"a": 1, "b": 2}`) unless the schema says otherwise in its own
/// `x-guidance`: free whitespace lets a small model spend its tokens on
/// newlines.
fn compact(schema: &serde_json::Value) -> serde_json::Value {
    let mut schema = match schema {
        serde_json::Value::Bool(true) => serde_json::json!({}),
        other => other.clone(),
    };
    if let Some(object) = schema.as_object_mut() {
        object.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": "
            })
        });
    }
    schema
}

/// `start: "a" | "b" | ...`, each choice a JSON-escaped string literal.
fn choice_grammar(choices: &[String]) -> Result<String> {
    if choices.is_empty() || choices.iter().any(String::is_empty) {
        return Err(Error::InvalidRequest(
            "choices must be non-empty strings".into(),
        ));
    }
    if choices.len() > MAX_CHOICES
        || choices.iter().map(String::len).sum::<usize>() > MAX_CONSTRAINT_BYTES
    {
        return Err(Error::InvalidRequest(format!(
            "at most {MAX_CHOICES} choices of {MAX_CONSTRAINT_BYTES} bytes in all"
        )));
    }
    let literals: Vec<String> = choices
        .iter()
        .map(|c| serde_json::to_string(c).unwrap_or_default())
        .collect();
    Ok(format!("start: {}\n", literals.join(" | ")))
}

fn no_output(why: &str) -> Error {
    Error::InvalidRequest(format!("the constraint admits no output ({why})"))
}

/// One output's matcher: masks logits, follows the sampled tokens.
#[derive(Clone)]
pub struct Guide {
    matcher: Matcher,
    /// Tokens accepted so far.
    accepted: usize,
}

impl Guide {
    /// Sets every token the constraint does not allow next to −∞.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let allowed: SimpleVob = match self.matcher.compute_mask_or_eos() {
            Ok(allowed) if allowed.num_set() > 0 => allowed,
            // Before the first token: a grammar that derives no string at
            // all (`start: start`), the caller's error.
            Ok(_) if self.accepted == 0 => return Err(no_output("no token can start it")),
            Ok(_) => {
                return Err(Error::Inference(
                    "the constraint allows no token here".into(),
                ));
            }
            Err(e) if self.accepted == 0 => {
                return Err(no_output(e.to_string().lines().next().unwrap_or_default()));
            }
            Err(e) => return Err(self.error(e)),
        };
        allowed.iter_unset_entries(|i| {
            if let Some(l) = logits.get_mut(i) {
                *l = f32::NEG_INFINITY;
            }
        });
        Ok(())
    }

    /// Advances past the sampled `token`.
    pub fn accept(&mut self, token: u32) -> Result<()> {
        self.accepted += 1;
        self.matcher
            .consume_token(token as TokenId)
            .map_err(|e| self.error(e))
    }

    /// True when the constraint is complete and nothing may follow.
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// True when `tokens`, fed one by one, are a whole output the
    /// constraint accepts.
    #[cfg(test)]
    pub fn accepts_all(&mut self, tokens: &[u32]) -> bool {
        tokens.iter().all(|&t| self.accept(t).is_ok())
            && self.matcher.is_accepting().unwrap_or(false)
    }

    /// A matcher failure mid-answer: the constraint is the caller's input,
    /// and it grew past llguidance's limits (e.g. `(a{1000}){1000}`).
    fn error(&self, e: impl std::fmt::Display) -> Error {
        let first = e.to_string();
        let first = first.lines().next().unwrap_or_default();
        Error::InvalidRequest(format!(
            "constraint: matching it went past the limits after {} tokens ({first})",
            self.accepted
        ))
    }
}
