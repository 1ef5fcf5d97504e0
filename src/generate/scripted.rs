//! A deterministic fake generator for plumbing tests, as `embed::hash` is
//! for embedders: words count as tokens, a chat renders as `<Role>` lines,
//! and every prompt is answered with one fixed text, streamed whole. The
//! engine then runs end to end without a model.

use super::{Constraint, Generated, Generator, Message, Sampling, StopReason};
use crate::error::Result;

/// Answers every prompt with `reply`.
pub struct Scripted {
    reply: String,
    context: usize,
}

impl Scripted {
    /// A fake that always says `reply`, with a 4,096-token context.
    pub fn new(reply: impl Into<String>) -> Self {
        Scripted {
            reply: reply.into(),
            context: 4096,
        }
    }

    /// The same with a context of `tokens`.
    pub fn with_context(self, tokens: usize) -> Self {
        Scripted {
            context: tokens,
            ..self
        }
    }
}

impl Generator for Scripted {
    fn id(&self) -> &str {
        "scripted"
    }

    fn context_length(&self) -> usize {
        self.context
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(text.split_whitespace().count())
    }

    fn render(&self, messages: &[Message]) -> String {
        messages
            .iter()
            .map(|m| format!("<{:?}>\n{}\n", m.role, m.content))
            .collect()
    }

    fn generate(
        &self,
        prompt: &str,
        _: &Sampling,
        _: Option<&Constraint>,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generated> {
        let stop = if on_text(&self.reply) {
            StopReason::EndToken
        } else {
            StopReason::Cancelled
        };
        Ok(Generated {
            text: self.reply.clone(),
            prompt_tokens: self.count_tokens(prompt)?,
            reused_tokens: 0,
            prompt_ms: 0.0,
            gen_tokens: self.count_tokens(&self.reply)?,
            gen_ms: 0.0,
            stop,
        })
    }
}
