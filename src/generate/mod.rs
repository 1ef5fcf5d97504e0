//! Text generation: the [`Generator`] seam, its sampling parameters and
//! the [`Constraint`]s an output can be held to. [`gguf::GgufGenerator`]
//! runs a quantized GGUF model with candle, choosing the architecture from
//! the file's metadata; [`guide`] turns a constraint into token masks;
//! [`scripted`] is a fake for plumbing tests.

mod decoder;
pub mod gguf;
pub mod guide;
mod kv_disk;
pub mod scripted;
mod sources;
mod spm;
mod weights;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Who says a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The person asking.
    User,
    /// The model.
    Assistant,
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who says it.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// How tokens are chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f64,
    /// Nucleus mass kept (1.0 = all).
    pub top_p: f64,
    /// Candidates kept (0 = all).
    pub top_k: usize,
    /// Penalty on tokens seen in the last `repeat_last_n` (1.0 = none).
    pub repeat_penalty: f32,
    /// Window of the repeat penalty.
    pub repeat_last_n: usize,
    /// Random seed: same seed and input, same output.
    pub seed: u64,
    /// Most tokens to generate.
    pub max_tokens: usize,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_p: 0.9,
            top_k: 40,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: 42,
            max_tokens: 256,
        }
    }
}

/// What an output must match, enforced token by token while decoding
/// (never by validating and retrying).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Constraint {
    /// JSON valid against this JSON Schema.
    JsonSchema {
        /// The schema.
        schema: serde_json::Value,
    },
    /// Exactly one of these strings.
    Choices {
        /// The strings allowed.
        choices: Vec<String>,
    },
    /// Text matching this regular expression, whole.
    Regex {
        /// The expression (Rust `regex` syntax, no look-around).
        pattern: String,
    },
    /// Text of this Lark grammar (llguidance's dialect).
    Grammar {
        /// The grammar; its rule `start` is the whole output. `@answer` in
        /// it stands for the `answer` constraint.
        lark: String,
        /// What `@answer` must match (itself without an `answer`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "server", schema(no_recursion))]
        answer: Option<Box<Constraint>>,
    },
}

impl Constraint {
    /// A Lark grammar with no `@answer`.
    pub fn lark(lark: impl Into<String>) -> Constraint {
        Constraint::Grammar {
            lark: lark.into(),
            answer: None,
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model emitted an end token.
    EndToken,
    /// `max_tokens` reached.
    MaxTokens,
    /// The context window is full.
    ContextFull,
    /// The caller's callback asked to stop.
    Cancelled,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    /// The text produced.
    pub text: String,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Of those, how many came from the cache of an earlier call whose
    /// prompt began the same way (not computed again).
    #[serde(default)]
    pub reused_tokens: usize,
    /// Time to process the prompt.
    pub prompt_ms: f64,
    /// Tokens generated.
    pub gen_tokens: usize,
    /// Time to generate them.
    pub gen_ms: f64,
    /// Why it stopped.
    pub stop: StopReason,
}

/// A language model that continues a chat.
///
/// Contract: `generate` is deterministic for the same prompt, sampling,
/// constraint and seed (whatever ran before: a prompt that shares a prefix
/// with the previous one may reuse its cached keys and values, which gives
/// the same logits); it never feeds the model more than `context_length` tokens (a
/// prompt that does not fit is an error, not a crash); `on_text` receives
/// the text as it is produced, in order, and returning `false` stops
/// generation. Implementations serialise concurrent calls internally.
pub trait Generator: Send + Sync {
    /// Identity (file name and architecture).
    fn id(&self) -> &str;
    /// Bytes of keys and values the model holds between prompts (its
    /// cache, the kept first pieces, the sources), as of its last answer.
    fn cache_bytes(&self) -> usize {
        0
    }
    /// The context window in tokens.
    fn context_length(&self) -> usize;
    /// Tokens of `text` in the model's vocabulary.
    fn count_tokens(&self, text: &str) -> Result<usize>;
    /// The chat rendered in the model's template, ready for generation.
    fn render(&self, messages: &[Message]) -> String;
    /// Continues `prompt`; with a `constraint`, only tokens that keep the
    /// output inside it are ever sampled, and generation ends when the
    /// constraint is complete. While the prompt is processed `on_text("")`
    /// is asked whether to go on, so a cancelled request stops early.
    fn generate(
        &self,
        prompt: &str,
        sampling: &Sampling,
        constraint: Option<&Constraint>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generated>;
    /// One continuation of `prompt` per entry of `samplings`, each what
    /// `generate` would give, with the prompt processed once: every sample
    /// starts from the same cached keys and values. Only the first reports
    /// prompt time. `go_on` is asked at every token; `false` ends the
    /// sample (`Cancelled`) and skips the rest.
    fn generate_each(
        &self,
        prompt: &str,
        samplings: &[Sampling],
        constraint: Option<&Constraint>,
        go_on: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<Generated>> {
        let mut out = Vec::with_capacity(samplings.len());
        for sampling in samplings {
            let generated = self.generate(prompt, sampling, constraint, &mut |_| go_on())?;
            let cancelled = generated.stop == StopReason::Cancelled;
            out.push(generated);
            if cancelled {
                break;
            }
        }
        Ok(out)
    }
}
