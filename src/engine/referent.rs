//! What a follow-up's pronoun stands for. A small model asked to rewrite
//! "Can *it* be shared across threads?" often hands it back unchanged; the
//! retriever then never sees what "it" was. This pass asks the narrower
//! question — which words of the earlier question does "it" stand for —
//! and lets the model answer only with a span of that question (a
//! [`Constraint::Choices`] of its runs of subject words), then puts the
//! span in the pronoun's place: "Can `Rc<T>` be shared across threads?".

use crate::error::Result;
use crate::generate::{Constraint, Generator, Sampling};
use crate::prompt;
use crate::store::keywords::is_subject_word;

/// Most tokens the chosen span may take.
const REFERENT_TOKENS: usize = 24;
/// Most words of one candidate span.
const SPAN_WORDS: usize = 4;
/// Most candidate spans offered.
const MAX_SPANS: usize = 48;
/// Longest candidate span, in bytes (a span the model could not finish
/// within [`REFERENT_TOKENS`] is no candidate).
const SPAN_BYTES: usize = 60;

/// Pronouns that point back at one thing, with their possessive forms.
const SINGULAR: &[&str] = &["it", "its"];
/// Pronouns that point back at several, with their possessive forms.
const PLURAL: &[&str] = &["they", "them", "their"];
/// Words after which "it" points at nothing ("is it possible…").
const EXPLETIVE_BEFORE: &[&str] = &[
    "possible",
    "true",
    "necessary",
    "safe",
    "ok",
    "okay",
    "worth",
    "better",
    "best",
    "important",
    "enough",
    "likely",
];

/// A pronoun in a follow-up.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pronoun {
    /// The word as written ("it", "Its").
    word: String,
    /// The pronouns it is replaced together with ([`SINGULAR`] or
    /// [`PLURAL`]).
    family: &'static [&'static str],
}

/// The words of `text` (runs of letters, digits and apostrophes) with
/// their byte ranges.
fn words(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        let inside = c.is_alphanumeric() || c == '\'';
        match (start, inside) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// Whether the word at `index` of `spans` is a pronoun of `family` that
/// points back (not "it" in "is it possible").
fn points_back(text: &str, spans: &[(usize, usize)], index: usize, family: &[&str]) -> bool {
    let (s, e) = spans[index];
    let word = text[s..e].to_lowercase();
    if !family.contains(&word.as_str()) {
        return false;
    }
    let next = spans
        .get(index + 1)
        .map(|&(s, e)| text[s..e].to_lowercase());
    !(word == "it" && next.is_some_and(|n| EXPLETIVE_BEFORE.contains(&n.as_str())))
}

/// The first pronoun of `question` that points back, if any.
fn find_pronoun(question: &str) -> Option<Pronoun> {
    let spans = words(question);
    (0..spans.len()).find_map(|i| {
        [SINGULAR, PLURAL]
            .into_iter()
            .find(|family| points_back(question, &spans, i, family))
            .map(|family| Pronoun {
                word: question[spans[i].0..spans[i].1].to_string(),
                family,
            })
    })
}

/// `question` with every pronoun of `pronoun`'s family that points back
/// replaced by `referent` ("its" by "`referent`'s").
fn substitute(question: &str, pronoun: &Pronoun, referent: &str) -> String {
    let spans = words(question);
    let mut out = String::with_capacity(question.len() + referent.len());
    let mut last = 0;
    for i in 0..spans.len() {
        if !points_back(question, &spans, i, pronoun.family) {
            continue;
        }
        let (s, e) = spans[i];
        let possessive = matches!(question[s..e].to_lowercase().as_str(), "its" | "their");
        out.push_str(&question[last..s]);
        out.push_str(referent);
        if possessive {
            out.push_str("'s");
        }
        last = e;
    }
    out.push_str(&question[last..]);
    out
}

/// The spans a pronoun may stand for: every run of up to [`SPAN_WORDS`]
/// subject words (not stop words, not question words) of `earlier`, the
/// newest earlier question, as written there (`Rc<T>`, `work_mem
/// setting`), at most [`MAX_SPANS`] of them.
fn candidate_spans(earlier: &str) -> Vec<String> {
    let words: Vec<&str> = earlier
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| "?.,!:;\"'()`".contains(c)))
        .collect();
    let runs = words.split(|w| !is_subject_word(w));
    let mut spans: Vec<String> = Vec::new();
    let windows = runs.flat_map(|run| {
        (1..=SPAN_WORDS.min(run.len()))
            .rev()
            .flat_map(|len| run.windows(len))
    });
    for window in windows {
        let span = window.join(" ");
        if span.len() <= SPAN_BYTES && !spans.contains(&span) {
            spans.push(span);
            if spans.len() == MAX_SPANS {
                break;
            }
        }
    }
    spans
}

/// `question` with its first pointing-back pronoun (and the others of its
/// kind) replaced by the span of `earlier` (the newest earlier question)
/// the model says it stands for; `None` when it has no such pronoun,
/// `earlier` no subject word, or the model's pick is not one of the spans.
/// `lines` are the history lines the rewrite was shown.
pub(crate) fn resolve_pronoun(
    generator: &dyn Generator,
    lines: &str,
    question: &str,
    earlier: &str,
    go_on: &mut dyn FnMut() -> bool,
) -> Result<Option<String>> {
    let Some(pronoun) = find_pronoun(question) else {
        return Ok(None);
    };
    let spans = candidate_spans(earlier);
    if spans.is_empty() {
        return Ok(None);
    }
    let rendered = generator.render(&prompt::referent(lines, question, &pronoun.word));
    let sampling = Sampling {
        temperature: 0.0,
        max_tokens: REFERENT_TOKENS,
        ..Sampling::default()
    };
    let choices = Constraint::Choices {
        choices: spans.iter().map(|s| format!("\"{s}\"")).collect(),
    };
    let generated = generator.generate(&rendered, &sampling, Some(&choices), &mut |_| go_on())?;
    let chosen = generated.text.trim().trim_matches('"');
    tracing::debug!(pronoun = %pronoun.word, referent = %chosen, "follow-up pronoun resolved");
    if !spans.iter().any(|s| s == chosen) {
        return Ok(None);
    }
    Ok(Some(substitute(question, &pronoun, chosen)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::scripted::Scripted;

    #[test]
    fn the_models_pick_must_be_one_of_the_spans() {
        let earlier = "What is `Rc<T>` an abbreviation for?";
        let pick = |reply: &str, question: &str, earlier: &str| {
            resolve_pronoun(&Scripted::new(reply), "", question, earlier, &mut || true).unwrap()
        };
        assert_eq!(
            pick("\"Rc<T>\"", "Can it be shared?", earlier).as_deref(),
            Some("Can Rc<T> be shared?")
        );
        // Fail closed: a name the asker never said, or nothing, changes
        // nothing.
        assert_eq!(pick("\"Arc<T>\"", "Can it be shared?", earlier), None);
        assert_eq!(pick("", "Can it be shared?", earlier), None);
        // No pronoun, or no subject word to point at: no pick is taken.
        assert_eq!(pick("\"Rc<T>\"", "And for SEV2?", earlier), None);
        assert_eq!(pick("\"Rc<T>\"", "Can it be shared?", "What is it?"), None);
    }

    #[test]
    fn a_pronoun_that_points_back_is_found_and_an_empty_it_is_not() {
        let found = |q: &str| find_pronoun(q).map(|p| p.word);
        assert_eq!(found("Can it be shared?").as_deref(), Some("it"));
        assert_eq!(found("What is its default?").as_deref(), Some("its"));
        assert_eq!(
            found("Is it possible to turn them off?").as_deref(),
            Some("them")
        );
        assert_eq!(found("And a SEV2 one?"), None);
        assert_eq!(found("Which item is italic?"), None, "whole words only");
        assert_eq!(found("What if it's late?"), None, "it's is not it");
    }

    #[test]
    fn the_referent_takes_every_pronoun_of_its_kind() {
        let swap = |q: &str, r: &str| substitute(q, &find_pronoun(q).unwrap(), r);
        assert_eq!(
            swap("Can it be shared across threads? If not, why not?", "Rc<T>"),
            "Can Rc<T> be shared across threads? If not, why not?"
        );
        assert_eq!(
            swap("What is its default?", "work_mem"),
            "What is work_mem's default?"
        );
        assert_eq!(
            swap(
                "How do I remove it when I am done with it?",
                "linked worktree"
            ),
            "How do I remove linked worktree when I am done with linked worktree?"
        );
        assert_eq!(
            swap("Are they kept, and is it possible to see them?", "backups"),
            "Are backups kept, and is it possible to see backups?"
        );
    }

    #[test]
    fn spans_are_runs_of_the_earlier_questions_subject_words() {
        assert_eq!(
            candidate_spans("What is `Rc<T>` an abbreviation for?"),
            ["Rc<T>", "abbreviation"]
        );
        let spans = candidate_spans(
            "Which command prevents future projects from depending on a published crate?",
        );
        assert!(spans.contains(&"published crate".to_string()), "{spans:?}");
        assert!(spans.contains(&"command prevents future projects".to_string()));
        assert!(
            spans
                .iter()
                .all(|s| !s.contains(" a ") && !s.starts_with("Which"))
        );
        assert!(candidate_spans("What is it?").is_empty());
        assert!(candidate_spans("").is_empty());
        // A hostile question: no span is longer than the model may write,
        // and there are never more than the constraint is given.
        let words: Vec<String> = (0..100_000).map(|i| format!("w{i}")).collect();
        let spans = candidate_spans(&format!("{} {}", "x".repeat(5_000), words.join(" ")));
        assert_eq!(spans.len(), MAX_SPANS);
        assert!(
            spans
                .iter()
                .all(|s| s.len() <= SPAN_BYTES && s.starts_with('w'))
        );
    }
}
