//! The shape of an answer and what is read back from it: the grammar a
//! default answer is decoded through (a citation can only be `[n]` with
//! `n` a given source), the built-in cited-JSON schema, then numbers
//! resolved to the chunks they name, numbers that name nothing dropped and
//! reported, citations checked against the text they cite, the abstention
//! recognised, and answers normalised for a vote.
//!
//! The check: a small model often quotes source 1 and writes `[2]`. Each
//! sentence's content words are compared with every source; when the cited
//! source holds few of them and another holds most, the citation is moved
//! to that source (in the text too) and the move is reported.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use serde_json::{Value, json};

use crate::generate::Constraint;
use crate::prompt::{ANSWER_PREFIX, NOT_IN_DOCUMENTS, Source};
use crate::types::ChunkId;

/// Longest `answer` string of the cited-JSON schema, in characters.
const MAX_JSON_ANSWER: usize = 1000;

/// `"1" | "2" | ...` for sources `1..=sources` (at least one).
fn source_numbers(sources: usize) -> String {
    (1..=sources.max(1))
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The grammar of a default answer: "According to \[n\]" and text in which
/// `[` only opens a citation of given sources (`[2]`, `[1, 3]`), never a
/// link, a file name or a bracket of the document's own syntax. The
/// abstention is not an alternative at the start: offered one, the default
/// model abstained on a third of answerable questions of a manual it had
/// not seen (50 % gold facts against 72 %); abstaining is left to
/// retrieval's `min_score` and to reflection.
pub fn text_grammar(sources: usize) -> Constraint {
    let prefix = serde_json::to_string(ANSWER_PREFIX).unwrap_or_default();
    Constraint::lark(format!(
        "start: {prefix} cites \"]\" body\n\
         body: (TEXT | \"[\" cites \"]\")*\n\
         cites: N (\", \" N)*\n\
         N: {}\n\
         TEXT: /[^\\[\\]]+/\n",
        source_numbers(sources)
    ))
}

/// The built-in "answer with citations" schema: `{answer, citations}` with
/// every citation a given source's number.
pub fn cited_schema(sources: usize) -> Constraint {
    Constraint::JsonSchema {
        schema: json!({
            "type": "object",
            "properties": {
                "answer": {"type": "string", "maxLength": MAX_JSON_ANSWER},
                "citations": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 1, "maximum": sources.max(1)},
                    "maxItems": sources.max(1)
                }
            },
            "required": ["answer", "citations"],
            "additionalProperties": false
        }),
    }
}

/// The spellings a choice list is decoded through: each choice as given,
/// and also capitalised and in lower case, unless another choice is spelt
/// that way. A model starts a reply with "Yes" far more readily than with
/// "yes": forced to lower case, the default model answered "no" to most
/// yes/no questions.
pub fn choice_spellings(choices: &[String]) -> Vec<String> {
    let mut out: Vec<String> = choices.to_vec();
    for choice in choices {
        let mut chars = choice.chars();
        let capital = chars
            .next()
            .map(|c| c.to_uppercase().chain(chars).collect::<String>())
            .unwrap_or_default();
        for variant in [capital, choice.to_lowercase()] {
            let taken = choices
                .iter()
                .any(|c| c != choice && c.to_lowercase() == variant.to_lowercase());
            if !taken && !out.contains(&variant) {
                out.push(variant);
            }
        }
    }
    out
}

/// The choice `answer` spells (exactly, else ignoring case).
pub fn canonical_choice<'a>(answer: &str, choices: &'a [String]) -> Option<&'a String> {
    let answer = answer.trim();
    choices.iter().find(|c| c.as_str() == answer).or_else(|| {
        let lower = answer.to_lowercase();
        let mut matching = choices.iter().filter(|c| c.to_lowercase() == lower);
        let first = matching.next();
        first.filter(|_| matching.next().is_none())
    })
}

/// The cited numbers of a cited-JSON answer, in order, without repeats.
pub fn json_citations(value: &Value) -> Vec<usize> {
    let mut found = Vec::new();
    for n in value["citations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
    {
        if !found.contains(&(n as usize)) {
            found.push(n as usize);
        }
    }
    found
}

/// An answer reduced for a majority vote: citations and punctuation gone,
/// lower case, single spaces.
pub fn vote_key(text: &str) -> String {
    strip_citations(text)
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A citation resolved to its chunk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Citation {
    /// The number used in the answer.
    pub n: usize,
    /// The collection of the cited chunk.
    pub collection: String,
    /// Source path.
    pub path: String,
    /// Chunk id.
    pub chunk_id: ChunkId,
    /// Byte range in the source.
    #[cfg_attr(feature = "server", schema(schema_with = crate::types::byte_range_schema))]
    pub byte_range: Range<usize>,
    /// Heading path.
    pub heading: Vec<String>,
}

/// The numbers cited in `text` (`[1]`, `[1, 3]`, `[2][4]`), in order of
/// first appearance, without repeats.
pub fn cited_numbers(text: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        let inside = &after[..close];
        if inside
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == ' ')
        {
            for n in inside
                .split(',')
                .filter_map(|p| p.trim().parse::<usize>().ok())
            {
                if !found.contains(&n) {
                    found.push(n);
                }
            }
        }
        rest = &after[close..];
    }
    found
}

/// Resolves the citations of `text` against `sources`: valid ones, and the
/// numbers that point at no source.
pub fn resolve(text: &str, sources: &[Source]) -> (Vec<Citation>, Vec<usize>) {
    resolve_numbers(&cited_numbers(text), sources)
}

/// Resolves cited `numbers` against `sources`.
pub fn resolve_numbers(numbers: &[usize], sources: &[Source]) -> (Vec<Citation>, Vec<usize>) {
    let mut citations = Vec::new();
    let mut invalid = Vec::new();
    for &n in numbers {
        match sources.iter().find(|s| s.n == n) {
            Some(s) => citations.push(Citation {
                n,
                collection: s.hit.collection.clone(),
                path: s.hit.path.clone(),
                chunk_id: s.hit.chunk_id.clone(),
                byte_range: s.hit.byte_range.clone(),
                heading: s.hit.heading.clone(),
            }),
            None => invalid.push(n),
        }
    }
    (citations, invalid)
}

/// A citation moved to the source that supports its sentence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Correction {
    /// The number the model wrote.
    pub from: usize,
    /// The number of the source that holds the sentence's words.
    pub to: usize,
}

/// Share of a sentence's words a source must hold to support it.
const SUPPORTED: f64 = 0.6;
/// How much better another source must do before a citation is moved.
const MARGIN: f64 = 0.25;

/// Lower-case words of three or more letters or digits: enough to compare a
/// sentence with a source without a stop-word list.
fn content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 3 || w.chars().all(|c| c.is_ascii_digit()) && !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn support(words: &[String], source: &str) -> f64 {
    if words.is_empty() {
        return 0.0;
    }
    let have: std::collections::HashSet<String> = content_words(source).into_iter().collect();
    words.iter().filter(|w| have.contains(*w)).count() as f64 / words.len() as f64
}

/// Checks each `[n]` against the sentence it ends or starts, moving it to a
/// source that supports the sentence much better. Returns the corrected
/// text and the moves made.
pub fn verify(text: &str, sources: &[Source]) -> (String, Vec<Correction>) {
    let mut out = String::with_capacity(text.len());
    let mut corrections = Vec::new();
    for sentence in text.split_inclusive(['.', '!', '?', '\n']) {
        let cited = cited_numbers(sentence);
        let words: Vec<String> = content_words(&strip_citations(sentence));
        let mut fixed = sentence.to_string();
        for n in cited {
            let Some(source) = sources.iter().find(|s| s.n == n) else {
                continue;
            };
            let own = support(&words, &source.hit.text);
            let best = sources
                .iter()
                .map(|s| (s.n, support(&words, &s.hit.text)))
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
            if let Some((to, score)) = best
                && to != n
                && own < SUPPORTED
                && score >= SUPPORTED
                && score >= own + MARGIN
            {
                fixed = fixed.replace(&format!("[{n}]"), &format!("[{to}]"));
                corrections.push(Correction { from: n, to });
            }
        }
        out.push_str(&fixed);
    }
    (out, corrections)
}

/// `text` without its `[n]` markers and the words around a leading
/// "According to".
fn strip_citations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        match rest[open..].find(']') {
            Some(close) => rest = &rest[open + close + 1..],
            None => {
                rest = &rest[open..];
                break;
            }
        }
    }
    out.push_str(rest);
    out.replace("According to", "")
}

/// True when the model said the sources do not hold the answer.
pub fn is_abstention(text: &str) -> bool {
    let t = text.trim().to_lowercase();
    let marker = NOT_IN_DOCUMENTS.trim_end_matches('.').to_lowercase();
    t.starts_with(&marker) || t.starts_with("i don't know") || t.starts_with("i do not know")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn citation_numbers_are_found_in_their_forms() {
        assert_eq!(
            cited_numbers("A [1]. B [2, 3][1] and [x] [10]"),
            vec![1, 2, 3, 10]
        );
        assert!(cited_numbers("no citations [here]").is_empty());
    }

    fn source(n: usize, text: &str) -> Source {
        Source {
            n,
            hit: crate::search::Hit {
                rank: n,
                collection: "default".into(),
                score: 1.0,
                doc_id: crate::types::DocId(format!("d{n}")),
                path: format!("/d{n}.md"),
                chunk_id: ChunkId(format!("c{n}")),
                byte_range: 0..1,
                heading: Vec::new(),
                text: text.into(),
                found_by: Vec::new(),
            },
        }
    }

    #[test]
    fn a_citation_of_the_wrong_source_is_moved_to_the_right_one() {
        let sources = [
            source(1, "The gateway allows 600 requests per minute per API key."),
            source(
                2,
                "ledger-api listens on port 8443 behind the load balancer.",
            ),
        ];
        let (text, moved) = verify(
            "According to [2], the gateway allows 600 requests per minute per API key.",
            &sources,
        );
        assert_eq!(moved, vec![Correction { from: 2, to: 1 }]);
        assert!(text.starts_with("According to [1]"));
        // A correct citation is left alone.
        let (text, moved) = verify("It listens on port 8443 [2].", &sources);
        assert!(moved.is_empty());
        assert_eq!(text, "It listens on port 8443 [2].");
    }

    #[test]
    fn choices_are_decoded_in_natural_case_and_read_back_as_given() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let choices = s(&["yes", "no", "maybe"]);
        assert_eq!(
            choice_spellings(&choices),
            s(&["yes", "no", "maybe", "Yes", "No", "Maybe"])
        );
        assert_eq!(canonical_choice("Maybe", &choices), Some(&choices[2]));
        assert_eq!(canonical_choice("perhaps", &choices), None);
        // Choices that differ only in case keep their exact spellings.
        let cased = s(&["A", "a"]);
        assert_eq!(choice_spellings(&cased), cased);
        assert_eq!(canonical_choice("a", &cased), Some(&cased[1]));
    }

    #[test]
    fn abstention_is_recognised() {
        assert!(is_abstention("I don't know based on the documents."));
        assert!(!is_abstention("The answer is 5 minutes [1]."));
    }
}
