//! Retrieved chunks + question → a chat [`Prompt`] for the generator. The
//! chunks are numbered [1]..[n] with their source paths and packed, best
//! first, into a token budget: the context window minus the system prompt,
//! the question and the tokens reserved for the answer. The wording lives
//! in `system.txt` and `user.txt` beside this file (golden-tested). The
//! answer itself is started for the model with [`ANSWER_PREFIX`].

use serde::Serialize;

use crate::error::{Error, Result};
use crate::generate::{Generator, Message, Role};
use crate::search::Hit;

/// The system prompt.
pub const SYSTEM: &str = include_str!("system.txt");
/// The user message; `{sources}` and `{question}` are filled in.
pub const USER: &str = include_str!("user.txt");
/// The start of the answer, written for the model: it continues with a
/// source number, so every answer carries at least one citation in the
/// format lore parses (a small model skips the instruction otherwise).
pub const ANSWER_PREFIX: &str = "According to [";
/// What the model is told to say when the sources lack the answer.
pub const NOT_IN_DOCUMENTS: &str = "I don't know based on the documents.";

/// A numbered source in a prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// Its number, from 1.
    pub n: usize,
    /// The retrieved chunk.
    pub hit: Hit,
}

/// A prompt ready for generation.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The chat, in order.
    pub messages: Vec<Message>,
    /// The sources it cites, by number.
    pub sources: Vec<Source>,
}

fn render_source(n: usize, hit: &Hit) -> String {
    let heading = if hit.heading.is_empty() {
        String::new()
    } else {
        format!(" — {}", hit.heading.join(" › "))
    };
    format!("[{n}] {}{heading}\n{}\n", hit.path, hit.text.trim())
}

/// Builds the prompt for `question` from `hits` (best first), fitting in
/// `context_tokens` with `answer_tokens` left for the answer.
pub fn build(
    generator: &dyn Generator,
    question: &str,
    hits: &[Hit],
    context_tokens: usize,
    answer_tokens: usize,
) -> Result<Prompt> {
    let frame = |sources: &str| {
        vec![
            Message {
                role: Role::System,
                content: SYSTEM.trim().to_string(),
            },
            Message {
                role: Role::User,
                content: USER
                    .trim()
                    .replace("{sources}", sources)
                    .replace("{question}", question.trim()),
            },
        ]
    };
    let fixed = generator.count_tokens(&generator.render(&frame("")))?;
    let budget = context_tokens
        .checked_sub(fixed + answer_tokens)
        .filter(|b| *b > 0)
        .ok_or_else(|| {
            Error::InvalidRequest(format!(
                "the question and instructions take {fixed} tokens; with {answer_tokens} reserved for the answer \
                 they do not fit the {context_tokens}-token context"
            ))
        })?;
    let mut used = 0;
    let mut sources = Vec::new();
    let mut text = String::new();
    for hit in hits {
        let block = render_source(sources.len() + 1, hit);
        let cost = generator.count_tokens(&block)? + 1;
        if used + cost > budget {
            continue;
        }
        used += cost;
        text.push_str(&block);
        text.push('\n');
        sources.push(Source {
            n: sources.len() + 1,
            hit: hit.clone(),
        });
    }
    Ok(Prompt {
        messages: frame(text.trim_end()),
        sources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Generated, Sampling};
    use crate::types::{ChunkId, DocId};

    /// Counts words as tokens and renders ChatML; never generates.
    struct Words;

    impl Generator for Words {
        fn id(&self) -> &str {
            "words"
        }
        fn context_length(&self) -> usize {
            4096
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
            _: &str,
            _: &Sampling,
            _: &mut dyn FnMut(&str) -> bool,
        ) -> Result<Generated> {
            Err(Error::Inference("not a model".into()))
        }
    }

    fn hit(n: usize, text: &str) -> Hit {
        Hit {
            rank: n,
            score: 1.0 / n as f32,
            doc_id: DocId(format!("d{n}")),
            path: format!("/docs/file{n}.md"),
            chunk_id: ChunkId(format!("c{n}")),
            byte_range: 0..text.len(),
            heading: vec!["Guide".into(), format!("Part {n}")],
            text: text.into(),
        }
    }

    #[test]
    fn rendered_prompt_matches_the_golden_file() {
        let hits = [
            hit(1, "Pages are acknowledged within 5 minutes."),
            hit(2, "Hand-off is on Monday."),
        ];
        let prompt = build(&Words, "How fast is a page acknowledged?", &hits, 4096, 256).unwrap();
        let rendered = Words.render(&prompt.messages);
        let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/src/prompt/golden.txt");
        if std::env::var_os("LORE_BLESS").is_some() {
            std::fs::write(golden, &rendered).unwrap();
        }
        let expected =
            std::fs::read_to_string(golden).expect("golden file (regenerate with LORE_BLESS=1)");
        assert_eq!(
            rendered, expected,
            "prompt changed; review and rerun with LORE_BLESS=1"
        );
        assert_eq!(prompt.sources.len(), 2);
    }

    #[test]
    fn sources_that_do_not_fit_are_left_out_best_first_kept() {
        let long = "word ".repeat(300);
        let hits = [hit(1, "short and best"), hit(2, &long), hit(3, "short too")];
        let prompt = build(&Words, "q?", &hits, 400, 100).unwrap();
        let kept: Vec<&str> = prompt.sources.iter().map(|s| s.hit.text.as_str()).collect();
        assert_eq!(kept, ["short and best", "short too"]);
        assert_eq!(prompt.sources[1].n, 2, "numbers stay consecutive");
    }

    #[test]
    fn a_question_larger_than_the_window_is_an_error() {
        let question = "why ".repeat(3000);
        let err = build(&Words, &question, &[hit(1, "x")], 2048, 256).unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)));
    }
}
