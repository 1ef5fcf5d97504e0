//! Conversations: a follow-up ("and for SEV2?") means nothing to the
//! retriever without the turns before it, so [`Engine::ask`] with a
//! history first has the generator rewrite the question into a standalone
//! one, then retrieves and answers that. The history shown to the rewrite
//! is bounded by `generator.history_tokens` and by the context window:
//! turns are taken newest first, each clipped, until the budget is spent,
//! so the oldest are dropped first and no history overflows the context.

use std::collections::BTreeSet;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Engine;
use super::referent::resolve_pronoun;
use crate::answer::without_citations;
use crate::error::{Error, Result};
use crate::generate::{Constraint, Generated, Generator, Sampling};
use crate::prompt;
use crate::store::keywords::{asked_terms, terms};

/// Most characters of one turn shown to the rewrite (its start: a
/// question, or the statement an answer opens with).
pub const MAX_TURN_CHARS: usize = 1_000;
/// Most tokens the rewritten question may take.
pub const REWRITE_TOKENS: usize = 64;

/// Who said a turn of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    /// The person asking.
    User,
    /// lore's answer.
    Assistant,
}

/// One earlier turn of a conversation, oldest first in a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// Who said it.
    pub role: Speaker,
    /// What was said (an answer's `Sources:` list and `[n]` marks are
    /// ignored).
    pub content: String,
}

impl Turn {
    /// A turn of the person asking.
    pub fn user(content: impl Into<String>) -> Turn {
        Turn {
            role: Speaker::User,
            content: content.into(),
        }
    }

    /// A turn of lore's.
    pub fn assistant(content: impl Into<String>) -> Turn {
        Turn {
            role: Speaker::Assistant,
            content: content.into(),
        }
    }

    /// The turn as the rewrite prompt shows it: one line, clipped.
    fn line(&self) -> String {
        let text = match self.role {
            Speaker::User => self.content.as_str(),
            Speaker::Assistant => strip_sources(&self.content),
        };
        let mut words = clip(&without_citations(text), MAX_TURN_CHARS)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if words.is_empty() {
            words.push('…');
        }
        let who = match self.role {
            Speaker::User => "User",
            Speaker::Assistant => "Assistant",
        };
        format!("{who}: {words}")
    }
}

/// The rewrite of a follow-up into a standalone question.
pub struct Rewrite {
    /// The standalone question.
    pub question: String,
    /// Turns of the history shown to the rewrite (the newest ones).
    pub turns_used: usize,
    /// The generation, for timings.
    pub generated: Generated,
    /// Wall time of the whole rewrite, milliseconds.
    pub ms: f64,
}

impl Engine {
    /// `question` rewritten to stand alone given `history` (oldest turn
    /// first); `None` when no turn has text. `go_on` is asked at every
    /// token (`false` cancels).
    pub fn standalone_question(
        &self,
        question: &str,
        history: &[Turn],
        go_on: &mut dyn FnMut() -> bool,
    ) -> Result<Option<Rewrite>> {
        if history.iter().all(|t| t.content.trim().is_empty()) {
            return Ok(None);
        }
        let start = Instant::now();
        let generator = self.generator()?;
        let context = self.context_tokens(generator.as_ref());
        let (lines, turns_used) = fit_history(
            generator.as_ref(),
            question,
            history,
            self.config.generator.history_tokens,
            context,
        )?;
        if turns_used == 0 {
            return Ok(None);
        }
        // The follow-up as fit_history counted it: the prompt stays inside
        // the context whatever the follow-up's length.
        let rendered = generator.render(&prompt::rewrite(&lines, clip(question, MAX_TURN_CHARS)));
        let sampling = Sampling {
            temperature: 0.0,
            max_tokens: REWRITE_TOKENS,
            ..Sampling::default()
        };
        let one_line = Constraint::Regex {
            pattern: r"[^\n\[\]]{1,400}".into(),
        };
        let generated =
            generator.generate(&rendered, &sampling, Some(&one_line), &mut |_| go_on())?;
        tracing::debug!(rewrite = %generated.text, tokens = generated.gen_tokens, "follow-up rewritten");
        let question = match usable_rewrite(&generated, question) {
            Some(rewrite) if adds_context(&rewrite, question, history) => rewrite,
            rewrite => match resolve_pronoun(
                generator.as_ref(),
                &lines,
                question,
                earlier_question(history).unwrap_or(""),
                go_on,
            )? {
                Some(resolved) => resolved,
                None => rewrite.unwrap_or_else(|| fallback(question, history)),
            },
        };
        Ok(Some(Rewrite {
            question,
            turns_used,
            generated,
            ms: start.elapsed().as_secs_f64() * 1000.0,
        }))
    }
}

/// The model's rewrite, unless it is empty, cut off at the token limit, or
/// the follow-up repeated as it was.
fn usable_rewrite(generated: &Generated, question: &str) -> Option<String> {
    let rewritten = one_line(&generated.text);
    let usable = rewritten.len() >= 3
        && generated.gen_tokens < REWRITE_TOKENS
        && !rewritten.eq_ignore_ascii_case(&one_line(question));
    usable.then_some(rewritten)
}

/// Whether `rewrite` brings in a word of the earlier turns that the
/// follow-up lacks: a rewrite that does not ("What option makes *it*
/// dump…") resolved nothing.
fn adds_context(rewrite: &str, question: &str, history: &[Turn]) -> bool {
    let asked = asked_terms(question);
    let earlier: BTreeSet<String> = history
        .iter()
        .flat_map(|t| asked_terms(&t.content))
        .collect();
    asked_terms(rewrite)
        .iter()
        .any(|t| !asked.contains(t) && earlier.contains(t))
}

/// The follow-up, followed by the last earlier user turn it follows: when
/// neither the rewrite nor a pronoun's referent made it stand alone. That
/// gives retrieval the words the follow-up refers to, while the question
/// the model reads first is the one to answer (put first, the earlier
/// question was answered again).
fn fallback(question: &str, history: &[Turn]) -> String {
    let asked = one_line(question);
    match earlier_question(history) {
        Some(earlier) => format!("{asked} (following: {})", one_line(earlier)),
        None => asked,
    }
}

/// The newest user turn with text, its first [`MAX_TURN_CHARS`] bytes:
/// the earlier question as the fallback and the referent pass read it.
fn earlier_question(history: &[Turn]) -> Option<&str> {
    history
        .iter()
        .rev()
        .find(|t| t.role == Speaker::User && !t.content.trim().is_empty())
        .map(|t| clip(&t.content, MAX_TURN_CHARS))
}

/// `text` with its whitespace runs made single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The words of `rewrite` that the conversation used (the follow-up, or
/// an earlier turn the rewrite was shown), compared as the keyword index
/// compares them (stemmed: "acknowledged" is "acknowledge"): what the
/// support check measures. A word the rewrite brought in ("What is the
/// *difference* between…") was not asked, and a source need not hold it.
/// The whole rewrite when it shares no word with the conversation.
pub fn asked_words(rewrite: &str, question: &str, history: &[Turn]) -> String {
    let said: BTreeSet<String> = std::iter::once(question)
        .chain(history.iter().map(|t| t.content.as_str()))
        .flat_map(terms)
        .collect();
    let kept: Vec<&str> = rewrite
        .split_whitespace()
        .filter(|w| terms(w).iter().any(|t| said.contains(t)))
        .collect();
    if kept.is_empty() {
        rewrite.to_string()
    } else {
        kept.join(" ")
    }
}

/// The newest turns of `history` that fit, as prompt lines oldest first,
/// and how many there are. The budget is the smaller of `history_tokens`
/// and what the context has left after the rewrite's own prompt (with the
/// question) and its answer.
fn fit_history(
    generator: &dyn Generator,
    question: &str,
    history: &[Turn],
    history_tokens: usize,
    context: usize,
) -> Result<(String, usize)> {
    let question = clip(question, MAX_TURN_CHARS);
    let frame = generator.count_tokens(&generator.render(&prompt::rewrite("", question)))?;
    let room = context.saturating_sub(frame + REWRITE_TOKENS);
    let budget = history_tokens.min(room);
    let mut kept: Vec<String> = Vec::new();
    let mut used = 0;
    for turn in history.iter().rev() {
        if turn.content.trim().is_empty() {
            continue;
        }
        let line = turn.line();
        let cost = generator.count_tokens(&line)? + 1;
        if used + cost > budget {
            break;
        }
        used += cost;
        kept.push(line);
    }
    kept.reverse();
    let lines = kept.join("\n");
    let total = generator.count_tokens(&generator.render(&prompt::rewrite(&lines, question)))?;
    if !kept.is_empty() && total + REWRITE_TOKENS > context {
        return Err(Error::store(
            "conversation",
            format!("the rewrite prompt took {total} tokens of a {context}-token context"),
        ));
    }
    Ok((lines, kept.len()))
}

/// The start of `text`, at most `max` bytes, cut at a character boundary.
fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// An answer without the `Sources:` list lore appends to it.
fn strip_sources(answer: &str) -> &str {
    answer.split("\n\nSources:").next().unwrap_or(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::StopReason;
    use crate::generate::scripted::Scripted;

    /// Counts words as tokens, within a context of `context`.
    fn words(context: usize) -> Scripted {
        Scripted::new("").with_context(context)
    }

    fn long_history(turns: usize) -> Vec<Turn> {
        (0..turns)
            .map(|i| {
                let text = format!("turn{i} ") + &"word ".repeat(300);
                if i % 2 == 0 {
                    Turn::user(text)
                } else {
                    Turn::assistant(text)
                }
            })
            .collect()
    }

    #[test]
    fn the_newest_turns_are_kept_and_the_oldest_dropped() {
        let history = long_history(40);
        let (lines, used) = fit_history(&words(2048), "and then?", &history, 500, 2048).unwrap();
        assert!((1..40).contains(&used), "{used}");
        assert!(lines.contains("turn39"), "the newest turn is kept");
        assert!(!lines.contains("turn0 "), "the oldest is dropped");
        assert!(words(0).count_tokens(&lines).unwrap() <= 500);
    }

    #[test]
    fn no_history_overflows_a_small_context() {
        let history = long_history(500);
        // Too small for the rewrite's own prompt: no turn, so no rewrite.
        let (_, used) = fit_history(&words(150), "and?", &history, 10_000, 150).unwrap();
        assert_eq!(used, 0);
        for context in [600, 1000, 2048] {
            let (lines, used) =
                fit_history(&words(context), "and?", &history, 10_000, context).unwrap();
            assert!(used > 0, "{context}");
            let rendered = words(context).render(&prompt::rewrite(&lines, "and?"));
            let total = words(context).count_tokens(&rendered).unwrap();
            assert!(total + REWRITE_TOKENS <= context, "{total} in {context}");
        }
    }

    fn generated(text: &str, tokens: usize) -> Generated {
        Generated {
            text: text.into(),
            prompt_tokens: 10,
            reused_tokens: 0,
            prompt_ms: 0.0,
            gen_tokens: tokens,
            gen_ms: 0.0,
            stop: StopReason::EndToken,
        }
    }

    #[test]
    fn a_useless_rewrite_falls_back_to_the_earlier_question() {
        let history = [
            Turn::user("Where is form X sent?"),
            Turn::assistant("To the office."),
        ];
        let ask = "and  why?";
        assert_eq!(
            usable_rewrite(&generated("Why is form X sent there?", 8), ask).as_deref(),
            Some("Why is form X sent there?")
        );
        assert_eq!(usable_rewrite(&generated(" And why? ", 4), ask), None);
        assert_eq!(usable_rewrite(&generated("", 0), ask), None);
        assert_eq!(
            usable_rewrite(&generated("cut off", REWRITE_TOKENS), ask),
            None
        );
        assert_eq!(
            fallback(ask, &history),
            "and why? (following: Where is form X sent?)"
        );
        assert_eq!(fallback(ask, &[Turn::assistant("hi")]), "and why?");
    }

    #[test]
    fn a_rewrite_that_brings_in_no_earlier_word_resolved_nothing() {
        let history = [
            Turn::user("What does pg_dump do?"),
            Turn::assistant("It dumps a database [1]."),
        ];
        let ask = "Which option makes it dump only the schema?";
        // "What" is in the earlier question, but it names nothing.
        assert!(!adds_context(
            "What option makes it dump only the schema?",
            ask,
            &history
        ));
        assert!(adds_context(
            "Which option makes pg_dump dump only the schema?",
            ask,
            &history
        ));
    }

    #[test]
    fn support_is_measured_on_the_words_the_conversation_used() {
        let history = [
            Turn::user("How fast must a SEV1 page be acknowledged?"),
            Turn::assistant("Within 5 minutes [1]."),
        ];
        assert_eq!(
            asked_words(
                "What is the difference between a SEV1 and SEV2 page?",
                "And a SEV2 one?",
                &history
            ),
            "SEV1 SEV2 page?"
        );
        // Nothing in common: the rewrite is all there is to measure.
        assert_eq!(
            asked_words("Who runs payroll?", "and?", &history),
            "Who runs payroll?"
        );
    }

    #[test]
    fn an_answer_loses_its_sources_and_marks() {
        let turn = Turn::assistant("Within 5 minutes [1][2].\n\nSources:\n[1] a.md\n[2] b.md");
        assert_eq!(turn.line(), "Assistant: Within 5 minutes .");
        assert_eq!(
            without_citations("a [x] b [12] c `v[0]`"),
            "a [x] b  c `v[0]`"
        );
    }

    #[test]
    fn a_long_turn_is_clipped_at_a_character_boundary() {
        let turn = Turn::user("é".repeat(MAX_TURN_CHARS));
        assert!(turn.line().len() <= MAX_TURN_CHARS + "User: ".len());
    }

    #[test]
    fn the_earlier_question_is_the_newest_user_turn_clipped() {
        let long: Vec<String> = (0..100_000).map(|i| format!("w{i}")).collect();
        let history = [
            Turn::user(long.join(" ")),
            Turn::assistant("An answer [1]."),
            Turn::user("  "),
        ];
        let earlier = earlier_question(&history).unwrap();
        assert!(earlier.len() <= MAX_TURN_CHARS && earlier.starts_with("w0 w1"));
        assert_eq!(earlier_question(&[Turn::assistant("An answer.")]), None);
    }
}
