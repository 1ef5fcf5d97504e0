//! The talk's prompting techniques that a request switches on, each one
//! file behind [`Technique`]: what it adds to the prompt, to the answer's
//! room and constraint, how its part of the output is read back, and any
//! pass after the draft. [`ALL`] lists them; a new technique is a file
//! here and a line there, and the CLI's `--technique`, `lore eval`'s
//! names, the API's `techniques` object and its schema follow from it.
//! Self-consistency takes a count, not a switch: it is
//! [`Techniques::samples`](super::Techniques::samples), run by the ask flow.

mod cot;
mod expert;
mod few_shot;
mod quote;
mod reflect;

pub use cot::Cot;
pub use expert::Expert;
pub use few_shot::FewShot;
pub use quote::Quote;
pub use reflect::Reflect;

use crate::answer::Quote as QuoteSpan;
use crate::config::GeneratorConfig;
use crate::error::Result;
use crate::generate::{Constraint, Generated, Generator, Sampling};
use crate::prompt::{Source, Style};

/// Every switch, in the order they act: an output is read back, and a
/// prompt is shaped, in this order.
pub const ALL: &[&dyn Technique] = &[&Cot, &FewShot, &Expert, &Quote, &Reflect];

/// One prompting technique. Every hook has a default that does nothing,
/// so a technique implements only what it changes. Sealed: the techniques
/// are those of [`ALL`], so a request can name each one by its place there.
pub trait Technique: sealed::Sealed + Sync {
    /// Its name: the CLI's `--technique NAME` and `lore eval`'s names; the
    /// API's field is the same with `_` for `-`.
    fn name(&self) -> &'static str;

    /// What it does, for `--help` and the API's schema.
    fn about(&self) -> &'static str;

    /// Changes the prompt.
    fn prompt<'a>(&self, _style: &mut Style<'a>, _config: &'a GeneratorConfig) {}

    /// Outputs of up to `max_tokens` that one answer takes besides the
    /// answer itself (reasoning, quotes).
    fn outputs(&self) -> usize {
        0
    }

    /// Passes of up to `max_tokens` after the answer is drafted.
    fn passes(&self) -> usize {
        0
    }

    /// Why it cannot run with cited JSON or a caller's constraint, when
    /// it needs the default text answer.
    fn text_only(&self) -> Option<&'static str> {
        None
    }

    /// The default text answer's own constraint, when the technique
    /// replaces it (quotes before the answer).
    fn text_constraint(&self, _sources: &[Source]) -> Option<Constraint> {
        None
    }

    /// The whole output's constraint around the answer's (free reasoning
    /// before it), for answers of at most `max_tokens`.
    fn around(&self, answer: Constraint, _max_tokens: usize) -> Constraint {
        answer
    }

    /// While streaming, text is held back until this marker; the second
    /// value is how many of its bytes are not part of the answer.
    fn hold(&self) -> Option<(&'static str, usize)> {
        None
    }

    /// Takes this technique's part off the front of the whole output
    /// (reasoning) into `read`; returns the rest.
    fn read_output<'t>(&self, text: &'t str, _read: &mut Parts) -> &'t str {
        text
    }

    /// Takes this technique's part off the front of a text answer (quotes)
    /// into `read`; returns the rest.
    fn read_answer<'t>(&self, text: &'t str, _sources: &[Source], _read: &mut Parts) -> &'t str {
        text
    }

    /// Checks a finished draft (reflection); `None` when the technique
    /// does not check.
    fn review(
        &self,
        _draft: &Draft<'_>,
        _go_on: &mut dyn FnMut() -> bool,
    ) -> Result<Option<Reviewed>> {
        Ok(None)
    }
}

mod sealed {
    /// Only this module's techniques implement [`super::Technique`]: each
    /// file seals its own.
    pub trait Sealed {}
}

/// The parts of an output that techniques take apart from the answer.
#[derive(Debug, Default)]
pub struct Parts {
    /// Chain of thought's reasoning.
    pub reasoning: Option<String>,
    /// Verbatim quotes of the sources.
    pub quotes: Vec<QuoteSpan>,
}

/// A drafted answer and what it was drafted from, for a check.
pub struct Draft<'a> {
    /// The model that wrote it, which checks it.
    pub generator: &'a dyn Generator,
    /// The (standalone) question.
    pub question: &'a str,
    /// The sources the answer was written from.
    pub sources: &'a [Source],
    /// The request's sampling, for one answer.
    pub sampling: &'a Sampling,
    /// The answer's constraint, which a revision must match.
    pub constraint: &'a Constraint,
    /// A text answer, which may be withdrawn; JSON answers can only be
    /// kept or revised.
    pub text: bool,
    /// The draft's answer.
    pub answer: &'a str,
}

/// What reflection decided about the draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The draft follows from its sources.
    Keep,
    /// The draft was replaced by a corrected answer.
    Revise,
    /// The sources do not answer the question.
    Abstain,
}

/// A check's outcome.
pub struct Reviewed {
    /// The decision.
    pub verdict: Verdict,
    /// The corrected answer's raw text, with [`Verdict::Revise`].
    pub revision: Option<String>,
    /// The check's generation.
    pub generated: Generated,
}

/// The technique called `name` (`fewshot` is read as `few-shot`).
pub fn named(name: &str) -> Option<&'static dyn Technique> {
    let name = if name == "fewshot" { "few-shot" } else { name };
    ALL.iter().copied().find(|t| t.name() == name)
}

/// The technique whose API field is `field` (`few_shot`).
pub fn of_field(field: &str) -> Option<&'static dyn Technique> {
    ALL.iter().copied().find(|t| field_name(*t) == field)
}

/// Its field in the API's `techniques` object.
pub fn field_name(technique: &dyn Technique) -> String {
    technique.name().replace('-', "_")
}

/// Every name, comma-separated (for error messages).
pub fn names() -> String {
    ALL.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
}
