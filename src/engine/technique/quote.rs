//! Quote first: before a text answer, up to three verbatim quotes of the
//! sources it cites, each held by the grammar to the words of its source
//! and returned with its byte range.

use super::{Parts, Technique};
use crate::answer::{QUOTES_END, quoted_grammar, read_quotes};
use crate::config::GeneratorConfig;
use crate::generate::Constraint;
use crate::prompt::{Source, Style};

/// Quotes before the answer.
pub struct Quote;

impl super::sealed::Sealed for Quote {}

impl Technique for Quote {
    fn name(&self) -> &'static str {
        "quote"
    }

    fn about(&self) -> &'static str {
        "Quote first: before a text answer, up to three verbatim quotes\n\
         from the sources it cites, each held by the grammar to the words of\n\
         its source and returned with its byte range."
    }

    fn prompt<'a>(&self, style: &mut Style<'a>, _config: &'a GeneratorConfig) {
        style.quotes = true;
    }

    fn outputs(&self) -> usize {
        1
    }

    fn text_only(&self) -> Option<&'static str> {
        Some("quotes come with the default text answer, not with cited JSON or a constraint")
    }

    fn text_constraint(&self, sources: &[Source]) -> Option<Constraint> {
        Some(quoted_grammar(sources))
    }

    /// The answer starts on the line after the quotes.
    fn hold(&self) -> Option<(&'static str, usize)> {
        Some((QUOTES_END, 1))
    }

    fn read_answer<'t>(&self, text: &'t str, sources: &[Source], read: &mut Parts) -> &'t str {
        let (quotes, rest) = read_quotes(text, sources);
        read.quotes = quotes;
        rest
    }
}
