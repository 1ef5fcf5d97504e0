//! Chain of thought: the model reasons step by step first, then writes the
//! answer after a marker; the reasoning is returned apart, never as the
//! answer.

use super::{Parts, Technique};
use crate::config::GeneratorConfig;
use crate::generate::Constraint;
use crate::prompt::{ANSWER_MARKER, Style};

/// Chain of thought.
pub struct Cot;

impl super::sealed::Sealed for Cot {}

impl Technique for Cot {
    fn name(&self) -> &'static str {
        "cot"
    }

    fn about(&self) -> &'static str {
        "Chain of thought: reason step by step first; the reasoning is\n\
         returned apart and never as the answer."
    }

    fn prompt<'a>(&self, style: &mut Style<'a>, _config: &'a GeneratorConfig) {
        style.reasoning = true;
    }

    fn outputs(&self) -> usize {
        1
    }

    /// Free reasoning, then the marker, then the answer. The reasoning
    /// cannot contain the marker, so the marker always separates it from
    /// the answer; when the reasoning reaches its token budget, the marker
    /// is forced.
    fn around(&self, answer: Constraint, max_tokens: usize) -> Constraint {
        let marker = serde_json::to_string(ANSWER_MARKER).unwrap_or_default();
        let bare = regex_escape(ANSWER_MARKER.trim_end());
        Constraint::Grammar {
            lark: format!(
                "start: reasoning {marker} @answer\n\
                 reasoning[max_tokens={max_tokens}]: /(?s:.*)/ & ~/(?s:.*{bare}.*)/\n"
            ),
            answer: Some(Box::new(answer)),
        }
    }

    fn hold(&self) -> Option<(&'static str, usize)> {
        Some((ANSWER_MARKER, ANSWER_MARKER.len()))
    }

    fn read_output<'t>(&self, text: &'t str, read: &mut Parts) -> &'t str {
        match text.find(ANSWER_MARKER) {
            Some(at) => {
                read.reasoning = Some(text[..at].trim().to_string());
                &text[at + ANSWER_MARKER.len()..]
            }
            None => {
                read.reasoning = Some(text.trim().to_string());
                ""
            }
        }
    }
}

/// `text` as a regex that matches it literally (newlines as `\n`).
fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            c if c.is_ascii_punctuation() => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}
