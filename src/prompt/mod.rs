//! Retrieved chunks + question → a chat [`Prompt`] for the generator. The
//! chunks are numbered `[1]`..`[n]` with their source paths and packed, best
//! first, into a token budget: the context window minus the system prompt,
//! the question, any worked examples and the tokens reserved for the
//! answer. The wording lives in the `.txt` files beside this file
//! (golden-tested): `system.txt` (or `system_expert.txt`, the "you are an
//! expert" variant), `user.txt`, `examples.txt` (few-shot), `reasoning.txt`
//! (chain of thought), `quote.txt` (quote first), the reflection pair `system_reflect.txt` /
//! `reflect.txt`, and the conversation rewrite `system_rewrite.txt`,
//! `rewrite.txt` with its worked examples `rewrite_examples.txt`, the
//! question of what a follow-up's pronoun stands for,
//! `system_referent.txt` / `referent.txt`, and the pair that combines a long document's part answers, `system_combine.txt`
//! / `combine.txt`.

use serde::Serialize;

use crate::config::Example;
use crate::error::{Error, Result};
use crate::generate::{Generator, Message, Role};
use crate::search::Hit;
use crate::types::ChunkId;

/// The system prompt.
pub const SYSTEM: &str = include_str!("system.txt");
/// The system prompt that tells the model it is a careful expert.
pub const SYSTEM_EXPERT: &str = include_str!("system_expert.txt");
/// The user message; `{examples}`, `{sources}`, `{question}` and
/// `{reasoning}` are filled in.
pub const USER: &str = include_str!("user.txt");
/// One worked example.
pub const EXAMPLE: &str = include_str!("examples.txt");
/// The chain-of-thought instruction, after the question.
pub const REASONING: &str = include_str!("reasoning.txt");
/// The quote-first instruction, after the question.
pub const QUOTE: &str = include_str!("quote.txt");
/// What ends the reasoning and starts the answer.
pub const ANSWER_MARKER: &str = "\nAnswer: ";
/// The reflection pass's system prompt.
pub const SYSTEM_REFLECT: &str = include_str!("system_reflect.txt");
/// The reflection pass's request; `{sources}`, `{question}` and `{draft}`
/// are filled in.
pub const REFLECT: &str = include_str!("reflect.txt");
/// The system prompt that combines the answers of a long document's parts.
pub const SYSTEM_COMBINE: &str = include_str!("system_combine.txt");
/// The combining request; `{path}`, `{notes}` and `{question}` are
/// filled in.
pub const COMBINE: &str = include_str!("combine.txt");
/// The question-rewriting pass's system prompt.
pub const SYSTEM_REWRITE: &str = include_str!("system_rewrite.txt");
/// The question-rewriting request; `{history}` and `{question}` are
/// filled in.
pub const REWRITE: &str = include_str!("rewrite.txt");
/// Worked rewrites: blocks separated by a blank line, each the earlier
/// turns, then `Last question: …`, then `Rewritten question: …`.
pub const REWRITE_EXAMPLES: &str = include_str!("rewrite_examples.txt");
/// The system prompt that asks what a follow-up's pronoun stands for.
pub const SYSTEM_REFERENT: &str = include_str!("system_referent.txt");
/// The pronoun request; `{history}`, `{question}` and `{word}` are filled
/// in.
pub const REFERENT: &str = include_str!("referent.txt");
/// The start of a default answer: the model continues with a source
/// number, so every answer carries at least one citation in the format
/// lore parses (a small model skips the instruction otherwise).
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

/// The prompt's variants (the talk's techniques that live in the prompt).
#[derive(Debug, Clone, Copy, Default)]
pub struct Style<'a> {
    /// The "you are an expert" system prompt.
    pub expert: bool,
    /// Worked examples before the sources (empty: none).
    pub examples: &'a [Example],
    /// Ask for step-by-step reasoning before the answer.
    pub reasoning: bool,
    /// Ask for verbatim quotes of the sources before the answer.
    pub quotes: bool,
    /// Sources to put first, in this order, as far as they were found
    /// (the previous prompt's: its keys and values are then reused); the
    /// rest follow in rank order.
    pub lead: &'a [SourceKey],
}

/// Which chunk a source is: its collection and chunk id.
pub type SourceKey = (String, ChunkId);

/// The key of `hit`.
pub fn source_key(hit: &Hit) -> SourceKey {
    (hit.collection.clone(), hit.chunk_id.clone())
}

/// `hits` with the longest run of `lead`'s first sources that are all
/// among them moved to the front, in `lead`'s order: a prompt then starts
/// with the same sources as the one before it, as far as it can.
pub fn lead_first(mut hits: Vec<Hit>, lead: &[SourceKey]) -> Vec<Hit> {
    let mut front = Vec::with_capacity(hits.len());
    for key in lead {
        let Some(at) = hits.iter().position(|h| &source_key(h) == key) else {
            break;
        };
        front.push(hits.remove(at));
    }
    front.extend(hits);
    front
}

/// How a prompt names the document at `path`: its file and the folder
/// holding it (`hr/vacation-policy.md`), never the whole path. The answer
/// then does not depend on where the documents live, and the server's
/// layout never reaches the model, nor through it the caller.
pub fn shown_path(path: &str) -> &str {
    let path = path.trim_end_matches('/');
    let mut cuts = path.rmatch_indices('/').map(|(at, _)| at);
    match (cuts.next(), cuts.next()) {
        (Some(_), Some(at)) => &path[at + 1..],
        _ => path.trim_start_matches('/'),
    }
}

fn render_source(n: usize, hit: &Hit) -> String {
    let heading = if hit.heading.is_empty() {
        String::new()
    } else {
        format!(" — {}", hit.heading.join(" › "))
    };
    format!(
        "[{n}] {}{heading}\n{}\n",
        shown_path(&hit.path),
        hit.text.trim()
    )
}

/// The numbered sources as the prompt shows them.
pub fn render_sources(sources: &[Source]) -> String {
    let blocks: Vec<String> = sources.iter().map(|s| render_source(s.n, &s.hit)).collect();
    blocks.join("\n").trim_end().to_string()
}

fn render_example(n: usize, example: &Example) -> String {
    fill(
        EXAMPLE,
        &[
            ("n", &n.to_string()),
            ("source", example.source.trim()),
            ("question", example.question.trim()),
            ("answer", example.answer.trim()),
        ],
    )
}

/// `template` with each `{name}` replaced by its value, in one pass: a
/// value that itself contains `{name}` (a document, a question) is left
/// as written.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let found = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (close, *value))
        });
        match found {
            Some((close, value)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Builds the prompt for `question` from `hits` (best first), fitting in
/// `context_tokens` with `answer_tokens` left for the answer. Examples go
/// first and take at most half of the room left for sources.
pub fn build(
    generator: &dyn Generator,
    question: &str,
    hits: &[Hit],
    context_tokens: usize,
    answer_tokens: usize,
    style: Style<'_>,
) -> Result<Prompt> {
    let system = if style.expert { SYSTEM_EXPERT } else { SYSTEM };
    let mut reasoning = String::new();
    for (wanted, text) in [(style.quotes, QUOTE), (style.reasoning, REASONING)] {
        if wanted {
            reasoning.push_str(&format!("\n\n{}", text.trim()));
        }
    }
    let frame = |examples: &str, sources: &str| {
        vec![
            Message {
                role: Role::System,
                content: system.trim().to_string(),
            },
            Message {
                role: Role::User,
                content: fill(
                    USER.trim(),
                    &[
                        ("examples", examples),
                        ("sources", sources),
                        ("question", question.trim()),
                        ("reasoning", &reasoning),
                    ],
                ),
            },
        ]
    };
    let fixed = generator.count_tokens(&generator.render(&frame("", "")))?;
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
    let mut examples = String::new();
    for (i, example) in style.examples.iter().enumerate() {
        let block = format!("{}\n", render_example(i + 1, example).trim_end());
        let cost = generator.count_tokens(&block)? + 1;
        if used + cost > budget / 2 {
            break;
        }
        used += cost;
        examples.push_str(&block);
        examples.push('\n');
    }
    // Chosen in rank order, then placed with the previous prompt's first.
    // Each counted with the widest number it may get.
    let mut chosen = Vec::new();
    for hit in hits {
        let cost = generator.count_tokens(&render_source(hits.len(), hit))? + 1;
        if used + cost > budget {
            continue;
        }
        used += cost;
        chosen.push(hit.clone());
    }
    let sources: Vec<Source> = lead_first(chosen, style.lead)
        .into_iter()
        .enumerate()
        .map(|(i, hit)| Source { n: i + 1, hit })
        .collect();
    Ok(Prompt {
        messages: frame(&examples, &render_sources(&sources)),
        sources,
    })
}

/// One part's answer, for [`combine`]: the passages it covers (first and
/// last number) and what it said, citing them.
pub struct Note<'a> {
    /// First and last passage of the part.
    pub passages: [usize; 2],
    /// The part's answer.
    pub text: &'a str,
}

/// The chat that combines the answers of the parts of the document at
/// `path` into one answer to `question`.
pub fn combine(question: &str, path: &str, notes: &[Note<'_>]) -> Vec<Message> {
    let notes: Vec<String> = notes
        .iter()
        .map(|note| {
            let [first, last] = note.passages;
            format!("Passages [{first}] to [{last}]: {}", note.text.trim())
        })
        .collect();
    vec![
        Message {
            role: Role::System,
            content: SYSTEM_COMBINE.trim().to_string(),
        },
        Message {
            role: Role::User,
            content: fill(
                COMBINE.trim(),
                &[
                    ("path", shown_path(path)),
                    ("notes", &notes.join("\n\n")),
                    ("question", question.trim()),
                ],
            ),
        },
    ]
}

/// The reflection pass's chat: the sources, the question and the draft,
/// and the request to keep, revise or abstain.
pub fn reflection(question: &str, sources: &[Source], draft: &str) -> Vec<Message> {
    vec![
        Message {
            role: Role::System,
            content: SYSTEM_REFLECT.trim().to_string(),
        },
        Message {
            role: Role::User,
            content: fill(
                REFLECT.trim(),
                &[
                    ("sources", &render_sources(sources)),
                    ("question", question.trim()),
                    ("draft", draft.trim()),
                ],
            ),
        },
    ]
}

/// The question-rewriting pass's chat: the worked examples as earlier
/// exchanges, then `history` (`User: …` / `Assistant: …` lines, oldest
/// first) and the last `question`.
pub fn rewrite(history: &str, question: &str) -> Vec<Message> {
    let ask = |history: &str, question: &str| Message {
        role: Role::User,
        content: fill(
            REWRITE.trim(),
            &[("history", history.trim()), ("question", question.trim())],
        ),
    };
    let mut messages = vec![Message {
        role: Role::System,
        content: SYSTEM_REWRITE.trim().to_string(),
    }];
    for block in REWRITE_EXAMPLES.split("\n\n") {
        let (before, answer) = block
            .rsplit_once("\nRewritten question: ")
            .unwrap_or((block, ""));
        let (turns, asked) = before
            .rsplit_once("\nLast question: ")
            .unwrap_or(("", before));
        messages.push(ask(turns, asked));
        messages.push(Message {
            role: Role::Assistant,
            content: answer.trim().to_string(),
        });
    }
    messages.push(ask(history, question));
    messages
}

/// The chat that asks what `word` (a pronoun of the last `question`)
/// stands for in `history` (`User: …` / `Assistant: …` lines).
pub fn referent(history: &str, question: &str, word: &str) -> Vec<Message> {
    vec![
        Message {
            role: Role::System,
            content: SYSTEM_REFERENT.trim().to_string(),
        },
        Message {
            role: Role::User,
            content: fill(
                REFERENT.trim(),
                &[
                    ("history", history.trim()),
                    ("question", question.trim()),
                    ("word", word),
                ],
            ),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::scripted::Scripted;
    use crate::types::{ChunkId, DocId};

    /// Counts words as tokens and renders `<Role>` lines.
    fn words() -> Scripted {
        Scripted::new("")
    }

    fn hit(n: usize, text: &str) -> Hit {
        Hit {
            rank: n,
            collection: "default".into(),
            score: 1.0 / n as f32,
            doc_id: DocId(format!("d{n}")),
            path: format!("/docs/file{n}.md"),
            chunk_id: ChunkId(format!("c{n}")),
            byte_range: 0..text.len(),
            heading: vec!["Guide".into(), format!("Part {n}")],
            text: text.into(),
            found_by: Vec::new(),
        }
    }

    #[test]
    fn rendered_prompt_matches_the_golden_file() {
        let hits = [
            hit(1, "Pages are acknowledged within 5 minutes."),
            hit(2, "Hand-off is on Monday."),
        ];
        let prompt = build(
            &words(),
            "How fast is a page acknowledged?",
            &hits,
            4096,
            256,
            Style::default(),
        )
        .unwrap();
        assert_golden("golden.txt", &words().render(&prompt.messages));
        assert_eq!(prompt.sources.len(), 2);
    }

    #[test]
    fn a_source_is_named_by_its_folder_and_file_wherever_it_lives() {
        for (path, shown) in [
            (
                "/check/work/main/corpora/tiny/roasting.md",
                "tiny/roasting.md",
            ),
            ("/work/main/corpora/tiny/roasting.md", "tiny/roasting.md"),
            ("docs/hr/leave.md", "hr/leave.md"),
            ("/leave.md", "leave.md"),
            ("leave.md", "leave.md"),
            ("/srv/docs/", "srv/docs"),
        ] {
            assert_eq!(shown_path(path), shown, "{path}");
        }
        let rendered = |path: &str| {
            let mut source = hit(1, "Hand-off is on Monday.");
            source.path = path.into();
            render_source(1, &source)
        };
        assert_eq!(
            rendered("/home/ana/notes/team/rota.md"),
            rendered("/srv/lore/team/rota.md")
        );
    }

    /// Compares `rendered` with `src/prompt/<name>` (rewritten with
    /// `LORE_BLESS=1`).
    fn assert_golden(name: &str, rendered: &str) {
        let golden = format!("{}/src/prompt/{name}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("LORE_BLESS").is_some() {
            std::fs::write(&golden, rendered).unwrap();
        }
        let expected =
            std::fs::read_to_string(&golden).expect("golden file (regenerate with LORE_BLESS=1)");
        assert_eq!(
            rendered, expected,
            "prompt {name} changed; review and rerun with LORE_BLESS=1"
        );
    }

    #[test]
    fn expert_few_shot_reasoning_prompt_matches_its_golden_file() {
        let hits = [hit(1, "Pages are acknowledged within 5 minutes.")];
        let examples = crate::config::GeneratorConfig::default().examples;
        let style = Style {
            expert: true,
            examples: &examples,
            reasoning: true,
            quotes: false,
            lead: &[],
        };
        let prompt = build(
            &words(),
            "How fast is a page acknowledged?",
            &hits,
            4096,
            256,
            style,
        )
        .unwrap();
        assert_golden("golden_techniques.txt", &words().render(&prompt.messages));
    }

    #[test]
    fn reflection_prompt_matches_its_golden_file() {
        let sources = [Source {
            n: 1,
            hit: hit(1, "Pages are acknowledged within 5 minutes."),
        }];
        let messages = reflection(
            "How fast is a page acknowledged?",
            &sources,
            "According to [1], pages are acknowledged within 10 minutes.",
        );
        assert_golden("golden_reflect.txt", &words().render(&messages));
    }

    #[test]
    fn rewrite_prompt_matches_its_golden_file() {
        let messages = rewrite(
            "User: How fast is a SEV1 page acknowledged?\nAssistant: Within 5 minutes.",
            "And for SEV2?",
        );
        assert_eq!(
            messages.len(),
            2 + 2 * REWRITE_EXAMPLES.split("\n\n").count()
        );
        assert!(messages.iter().all(|m| !m.content.is_empty()));
        assert_golden("golden_rewrite.txt", &words().render(&messages));
    }

    #[test]
    fn referent_prompt_matches_its_golden_file() {
        let messages = referent(
            "User: What does the work_mem setting limit?\nAssistant: Memory per sort.",
            "What is its default?",
            "its",
        );
        assert_golden("golden_referent.txt", &words().render(&messages));
    }

    #[test]
    fn examples_never_crowd_out_the_sources() {
        let example = Example {
            source: "word ".repeat(200),
            question: "q?".into(),
            answer: "a [1].".into(),
        };
        let examples = vec![example; 3];
        let style = Style {
            examples: &examples,
            ..Style::default()
        };
        let prompt = build(&words(), "q?", &[hit(1, "the source")], 700, 100, style).unwrap();
        assert_eq!(prompt.sources.len(), 1);
        let user = &prompt.messages[1].content;
        assert_eq!(user.matches("Example ").count(), 1, "{user}");
    }

    #[test]
    fn placeholders_inside_documents_and_questions_are_left_alone() {
        let hits = [hit(1, "A literal {question} and {sources} in a document.")];
        let prompt = build(
            &words(),
            "Why {reasoning}?",
            &hits,
            4096,
            256,
            Style::default(),
        )
        .unwrap();
        let user = &prompt.messages[1].content;
        assert!(user.contains("A literal {question} and {sources} in a document."));
        assert!(user.contains("Question: Why {reasoning}?"));
    }

    #[test]
    fn sources_that_do_not_fit_are_left_out_best_first_kept() {
        let long = "word ".repeat(300);
        let hits = [hit(1, "short and best"), hit(2, &long), hit(3, "short too")];
        let prompt = build(&words(), "q?", &hits, 400, 100, Style::default()).unwrap();
        let kept: Vec<&str> = prompt.sources.iter().map(|s| s.hit.text.as_str()).collect();
        assert_eq!(kept, ["short and best", "short too"]);
        assert_eq!(prompt.sources[1].n, 2, "numbers stay consecutive");
    }

    #[test]
    fn the_previous_prompts_sources_come_first_in_its_order() {
        let hits = [
            hit(1, "one"),
            hit(2, "two"),
            hit(3, "three"),
            hit(4, "four"),
        ];
        let order = |lead: &[SourceKey]| {
            let style = Style {
                lead,
                ..Style::default()
            };
            let prompt = build(&words(), "q?", &hits, 4096, 100, style).unwrap();
            assert!(prompt.sources.iter().enumerate().all(|(i, s)| s.n == i + 1));
            prompt
                .sources
                .iter()
                .map(|s| s.hit.text.clone())
                .collect::<Vec<_>>()
        };
        let key = |n: usize| source_key(&hit(n, ""));
        assert_eq!(order(&[]), ["one", "two", "three", "four"]);
        // The same sources in another rank order keep the last prompt's.
        assert_eq!(
            order(&[key(3), key(1), key(4), key(2)]),
            ["three", "one", "four", "two"]
        );
        // Only the run of leading sources found again moves up: a prompt
        // can reuse no more than the start it shares with the last one.
        assert_eq!(
            order(&[key(2), key(9), key(1)]),
            ["two", "one", "three", "four"]
        );
        // Another collection's chunk of the same id is another source.
        let other = ("other".to_string(), hit(3, "").chunk_id);
        assert_eq!(order(&[other]), ["one", "two", "three", "four"]);
    }

    #[test]
    fn a_question_larger_than_the_window_is_an_error() {
        let question = "why ".repeat(3000);
        let err = build(
            &words(),
            &question,
            &[hit(1, "x")],
            2048,
            256,
            Style::default(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)));
    }
}
