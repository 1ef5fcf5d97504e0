//! The shape of an answer and what is read back from it: the grammar a
//! default answer is decoded through (a citation can only be `[n]` with
//! `n` a given source), the built-in cited-JSON schema, then numbers
//! resolved to the chunks they name, numbers that name nothing dropped and
//! reported, citations checked against the text they cite, the abstention
//! recognised, and answers normalised for a vote.
//!
//! Names checked: an answer that names a command, option, setting or
//! other identifier (in a code span, or shaped like code: `--flag`,
//! `snake_case`, `dotted.name`, `call()`) that none of its sources holds
//! was not read from them ([`unsourced_names`]).
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

/// Names of at most this many characters count as words that must stand
/// alone in a source (`mv` is not in "remove"); longer ones may be part
/// of a longer word (`reflogExpire` of `gc.reflogExpire`).
const SHORT_NAME: usize = 5;

/// The names `answer` uses that no text of `sources` holds: each word of
/// a code span, and each code-shaped word outside them (`--flag`, `-x`,
/// `snake_case`, `dotted.name`, `call()`), compared without case. Short
/// names must be whole words of a source; longer ones anywhere in it.
/// Then the commands of code spans (`cargo add`) that neither a source nor
/// the `question` holds whole. Then the figures of two digits or more
/// (`5432`, `50,000`) that neither a source nor the `question` holds: a
/// figure recalled, not read.
/// Citations, one-digit numbers and the sentence's own words are neither.
pub fn unsourced_names(answer: &str, sources: &[&str], question: &str) -> Vec<String> {
    let texts: Vec<String> = sources.iter().map(|s| s.to_lowercase()).collect();
    let words: std::collections::HashSet<&str> = texts
        .iter()
        .flat_map(|t| t.split(|c: char| !is_name_char(c)))
        .map(|w| w.trim_matches('.'))
        .filter(|w| !w.is_empty())
        .collect();
    let held = |name: &str| {
        words.contains(name)
            || (name.chars().count() > SHORT_NAME && texts.iter().any(|t| t.contains(name)))
    };
    let answer = strip_citations(answer);
    let mut missing: Vec<String> = Vec::new();
    for name in names(&answer) {
        if !held(&name) && !missing.contains(&name) {
            missing.push(name);
        }
    }
    let commands = commands(&answer);
    // Sources with their whitespace made single, only when there is a
    // command to look for.
    let spaced: Vec<String> = if commands.is_empty() {
        Vec::new()
    } else {
        texts
            .iter()
            .map(String::as_str)
            .chain([question.to_lowercase().as_str()])
            .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    for command in commands {
        let reported = missing.contains(&command)
            || command.split(' ').any(|w| missing.iter().any(|m| m == w));
        if !reported && !spaced.iter().any(|t| t.contains(&command)) {
            missing.push(command);
        }
    }
    let given: std::collections::HashSet<String> = sources
        .iter()
        .chain([&question])
        .flat_map(|t| figures(t).into_iter().chain(spelled_figures(t)))
        .collect();
    for figure in figures(&answer) {
        if !given.contains(&figure) && !missing.contains(&figure) {
            missing.push(figure);
        }
    }
    missing
}

/// Number words from ten to ninety-nine, as figures: a source that says
/// "thirty days" holds the answer's "30 days".
fn spelled_figures(text: &str) -> Vec<String> {
    const TEENS: [&str; 10] = [
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    const UNITS: [&str; 9] = [
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .collect();
    let mut found = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if let Some(n) = TEENS.iter().position(|t| t == word) {
            found.push((10 + n).to_string());
        } else if let Some(n) = TENS.iter().position(|t| t == word) {
            let tens = 20 + 10 * n;
            let unit = words
                .get(i + 1)
                .and_then(|w| UNITS.iter().position(|u| u == w))
                .map_or(0, |u| u + 1);
            found.push((tens + unit).to_string());
        }
    }
    found
}

/// The figures of `text` with two digits or more, separators between
/// digits read the same way everywhere: `50,000` is `50000`, `2.6.20`
/// stays as it is.
fn figures(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut figure = String::new();
    let mut end = |figure: &mut String| {
        if figure.chars().filter(char::is_ascii_digit).count() >= 2 {
            found.push(figure.clone());
        }
        figure.clear();
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let next_is_digit = chars.peek().is_some_and(char::is_ascii_digit);
        match c {
            '0'..='9' => figure.push(c),
            ',' if !figure.is_empty() && next_is_digit => {}
            '.' if !figure.is_empty() && next_is_digit => figure.push(c),
            _ => end(&mut figure),
        }
    }
    end(&mut figure);
    found
}

/// A character of a name: letters, digits and `_ . -`.
fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// `name.conf`, `a.b.c`: two parts of at least two characters around a
/// dot (not "e.g" or "U.S").
fn dotted(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() > 1 && parts.windows(2).any(|p| p[0].len() > 1 && p[1].len() > 1)
}

/// `answer` with each code fence's info string dropped: "```bash" tells
/// how to show the block, it names nothing the answer claims.
fn without_fence_info(answer: &str) -> String {
    answer
        .split('\n')
        .map(|line| match line.trim_start().strip_prefix("```") {
            Some(info) if is_fence_info(info.trim()) => "```",
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fence's info string: one word such as `bash` or `c++`.
fn is_fence_info(info: &str) -> bool {
    info.chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '+' | '-' | '_' | '.' | '#'))
}

/// The names [`unsourced_names`] checks, lower case.
fn names(answer: &str) -> Vec<String> {
    let answer = without_fence_info(answer);
    let mut found = Vec::new();
    let mut keep = |word: &str, in_code: bool| {
        let word = word
            .trim_matches(|c: char| !is_name_char(c))
            .trim_matches('.')
            .to_lowercase();
        let has_letter = word.chars().any(char::is_alphabetic);
        let shaped = word.starts_with('-') || word.contains('_') || dotted(&word);
        if has_letter && (in_code || shaped) {
            found.push(word);
        }
    };
    for (i, part) in answer.split('`').enumerate() {
        let in_code = i % 2 == 1;
        for token in part.split_whitespace() {
            let call = token.trim_end_matches(|c: char| ".,;:!?".contains(c));
            if !in_code && call.ends_with("()") {
                keep(call.trim_end_matches("()"), true);
                continue;
            }
            for word in token.split(|c: char| !is_name_char(c)) {
                keep(word, in_code);
            }
        }
    }
    found
}

/// The commands in `answer`'s code spans, lower case: spans of two to four
/// words, each a plain name (`cargo add`, `git worktree lock`, `create
/// extension`). Each word may be in the sources while the command is not
/// (`cargo` and `add` are in a book that never mentions `cargo add`), so
/// the command is checked whole. Spans with options or punctuation
/// (`pg_dump --schema-only`, `-u, --include-untracked`) are left to the
/// word check: an answer joins a command and an option the sources name
/// apart.
fn commands(answer: &str) -> Vec<String> {
    let plain = |word: &str| {
        word.starts_with(|c: char| c.is_alphabetic()) && word.chars().all(is_name_char)
    };
    answer
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|span| span.split_whitespace().collect::<Vec<_>>())
        .filter(|words| (2..=4).contains(&words.len()) && words.iter().all(|w| plain(w)))
        .map(|words| words.join(" ").to_lowercase())
        .collect()
}

/// Longest `answer` string of the cited-JSON schema, in characters.
const MAX_JSON_ANSWER: usize = 1000;

/// `"1" | "2" | ...` for sources `1..=sources` (at least one).
fn source_numbers(sources: usize) -> String {
    (1..=sources.max(1))
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The grammar of a default answer: "According to \[n\]", then text in
/// which `[` followed by a digit opens a citation of given sources (`[2]`,
/// `[1, 3]`), any other `[` is literal (`#[derive(Debug)]`,
/// `[dependencies]`, a Markdown link), and a code span between backticks
/// holds anything (`v[0]`, `[u8; 4]`); a fenced block reads as spans too.
/// So code survives, and every number the model writes in brackets
/// outside code is a source it was given. The abstention is not an
/// alternative at the start: offered one, the default model abstained on a
/// third of answerable questions of a manual it had not seen (50 % gold
/// facts against 72 %); abstaining is left to retrieval's `min_score` and
/// to reflection.
pub fn text_grammar(sources: usize) -> Constraint {
    Constraint::lark(format!("start: answer\n{}", answer_rules(sources, true)))
}

/// The rules of [`text_grammar`], its whole answer the rule `answer`;
/// without `lines`, the answer is one line (code spans inline only).
fn answer_rules(sources: usize, lines: bool) -> String {
    let prefix = serde_json::to_string(ANSWER_PREFIX).unwrap_or_default();
    let newline = if lines { "" } else { "\\n" };
    format!(
        "answer: {prefix} cites \"]\" body\n\
         body: (TEXT | CODE | LITERAL | \"[\" cites \"]\")*\n\
         cites: N (\", \" N)*\n\
         N: {}\n\
         TEXT: /[^\\[`{newline}]+/\n\
         CODE: /`[^`{newline}]*`/\n\
         LITERAL: /\\[[^0-9\\[`\\n]/\n",
        source_numbers(sources)
    )
}

/// What ends the quotes of a quote-first answer: the answer's start on
/// the next line.
pub const QUOTES_END: &str = "\nAccording to [";
/// What starts a quote line of a quote-first answer.
const QUOTE_LABEL: &str = "Quote [";
/// Most quotes a quote-first answer holds.
pub const MAX_QUOTES: usize = 3;

/// The grammar of a quote-first answer: one to [`MAX_QUOTES`] lines
/// `Quote [n]: …`, each a run of whole words copied from one line of
/// source `n` (a quote that is not in that source cannot be decoded), then
/// the answer of [`text_grammar`] on one line (so no unchecked "quote"
/// can follow it).
pub fn quoted_grammar(sources: &[Source]) -> Constraint {
    let mut lark = format!(
        "start: quote{} answer\nquote: {}\n",
        " quote?".repeat(MAX_QUOTES - 1),
        sources
            .iter()
            .map(|s| format!("\"{QUOTE_LABEL}{}]: \" q{} \"\\n\"", s.n, s.n))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for source in sources {
        let lines = quotable_lines(&source.hit.text);
        let names: Vec<String> = (0..lines.len().max(1))
            .map(|i| format!("Q{}_{i}", source.n))
            .collect();
        lark.push_str(&format!("q{}: {}\n", source.n, names.join(" | ")));
        for (name, line) in names.iter().zip(lines.iter().chain([&"-"])) {
            let text = serde_json::to_string(line).unwrap_or_default();
            lark.push_str(&format!(
                "{name}: %regex {{ \"substring_words\": {text} }}\n"
            ));
        }
    }
    lark.push_str(&answer_rules(sources.len(), false));
    Constraint::lark(lark)
}

/// The lines of a source a quote may come from: trimmed, with a letter
/// or digit.
fn quotable_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.chars().any(char::is_alphanumeric))
        .collect()
}

/// A verbatim quote from a cited source, written before the answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Quote {
    /// The number of the source it quotes.
    pub n: usize,
    /// The quoted chunk.
    pub chunk_id: ChunkId,
    /// Its source path.
    pub path: String,
    /// The quote, exactly as the chunk's text holds it.
    pub text: String,
    /// Its byte range in the chunk's text (the `text` of the retrieved
    /// hit).
    #[cfg_attr(feature = "server", schema(schema_with = crate::types::byte_range_schema))]
    pub range: Range<usize>,
}

/// Splits a quote-first output into its quotes (each found in its source;
/// one that is not, as after a cut-off, is dropped) and the answer after
/// them.
pub fn read_quotes<'a>(text: &'a str, sources: &[Source]) -> (Vec<Quote>, &'a str) {
    let mut quotes = Vec::new();
    let mut rest = text;
    while let Some(line) = rest.strip_prefix(QUOTE_LABEL) {
        let (line, after) = line.split_once('\n').unwrap_or((line, ""));
        rest = after;
        let Some((n, quoted)) = line.split_once("]: ") else {
            continue;
        };
        let source = n
            .parse::<usize>()
            .ok()
            .and_then(|n| sources.iter().find(|s| s.n == n));
        let quoted = quoted.trim();
        if let Some((source, at)) = source
            .filter(|_| !quoted.is_empty())
            .and_then(|s| s.hit.text.find(quoted).map(|at| (s, at)))
        {
            quotes.push(Quote {
                n: source.n,
                chunk_id: source.hit.chunk_id.clone(),
                path: source.hit.path.clone(),
                text: quoted.to_string(),
                range: at..at + quoted.len(),
            });
        }
    }
    (quotes, rest)
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

/// The byte ranges of `text` outside code spans: a backtick opens a span
/// and the next one closes it (a fence is three spans); an unclosed span
/// runs to the end.
fn prose(text: &str) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut in_code) = (0, false);
    for (i, _) in text.match_indices('`') {
        if !in_code && i > start {
            ranges.push(start..i);
        }
        in_code = !in_code;
        start = i + 1;
    }
    if !in_code && start < text.len() {
        ranges.push(start..text.len());
    }
    ranges
}

/// Each citation mark outside code (`[1]`, `[2, 3]`): its byte range and
/// its numbers. A bracket that does not open on a digit, or holds anything
/// but numbers, commas and spaces, is text (`[dependencies]`, `[ ]`), as
/// is anything inside backticks: the answer grammar's own reading.
fn citation_marks(text: &str) -> Vec<(Range<usize>, Vec<usize>)> {
    let mut marks = Vec::new();
    for range in prose(text) {
        let part = &text[range.clone()];
        let mut from = 0;
        while let Some(close) = part[from..].find(']').map(|c| from + c) {
            if let Some(open) = part[from..close].rfind('[').map(|o| from + o) {
                let inside = &part[open + 1..close];
                let numbers: Vec<usize> = inside
                    .split(',')
                    .filter_map(|p| p.trim().parse().ok())
                    .collect();
                let only_numbers = inside.starts_with(|c: char| c.is_ascii_digit())
                    && inside
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == ',' || c == ' ');
                if only_numbers && !numbers.is_empty() {
                    marks.push((range.start + open..range.start + close + 1, numbers));
                }
            }
            from = close + 1;
        }
    }
    marks
}

/// The numbers cited in `text` (`[1]`, `[1, 3]`, `[2][4]`), in order of
/// first appearance, without repeats; brackets in code are not citations.
pub fn cited_numbers(text: &str) -> Vec<usize> {
    let mut found = Vec::new();
    for n in citation_marks(text).into_iter().flat_map(|(_, n)| n) {
        if !found.contains(&n) {
            found.push(n);
        }
    }
    found
}

/// `text` without its citation marks (code is left as it is).
pub fn without_citations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (range, _) in citation_marks(text) {
        out.push_str(&text[last..range.start]);
        last = range.end;
    }
    out.push_str(&text[last..]);
    out
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
    for range in sentences(text) {
        let sentence = &text[range];
        let words: Vec<String> = content_words(&strip_citations(sentence));
        let mut moves = Vec::new();
        for n in cited_numbers(sentence) {
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
                moves.push(Correction { from: n, to });
            }
        }
        out.push_str(&renumber(sentence, &moves));
        corrections.extend(moves);
    }
    (out, corrections)
}

/// The sentences of `text`, each with its closing mark; a code span never
/// ends one (`std::fs::read` or `a.b` inside backticks).
fn sentences(text: &str) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut in_code) = (0, false);
    for (i, c) in text.char_indices() {
        match c {
            '`' => in_code = !in_code,
            '.' | '!' | '?' | '\n' if !in_code => {
                ranges.push(start..i + 1);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < text.len() {
        ranges.push(start..text.len());
    }
    ranges
}

/// `sentence` with the citation numbers `moves` names replaced, in its
/// citation marks only.
fn renumber(sentence: &str, moves: &[Correction]) -> String {
    if moves.is_empty() {
        return sentence.to_string();
    }
    renumber_citations(sentence, |n| {
        moves.iter().find(|m| m.from == n).map_or(n, |m| m.to)
    })
}

/// `text` with each number of its citation marks (`[2]`, `[1, 3]`, outside
/// code) replaced by `to(number)`.
pub fn renumber_citations(text: &str, to: impl Fn(usize) -> usize) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (range, numbers) in citation_marks(text) {
        out.push_str(&text[last..range.start]);
        let numbers: Vec<String> = numbers.iter().map(|n| to(*n).to_string()).collect();
        out.push_str(&format!("[{}]", numbers.join(", ")));
        last = range.end;
    }
    out.push_str(&text[last..]);
    out
}

/// `text` without its `[n]` marks and the words of a leading
/// "According to".
fn strip_citations(text: &str) -> String {
    without_citations(text).replace("According to", "")
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
    fn names_no_source_holds_are_reported() {
        let sources = [
            "git-worktree.html — Manage worktrees\nRemove it with git worktree remove. \
             The -f, --force option overrides. See gc.reflogExpire and core_editor.",
            "Authenticationauthentication_timeout (integer) sets the limit; e.g. 1min.",
        ];
        let missing = |answer: &str| unsourced_names(answer, &sources, "");
        // Held: code words, options, settings, a long name glued to the
        // word before it, the source's own path.
        assert!(
            missing("According to [1], run `git worktree remove` with -f or --force.").is_empty()
        );
        assert!(missing("Set gc.reflogExpire and `core_editor` [1].").is_empty());
        assert!(missing("Set `reflogExpire` [1].").is_empty());
        assert!(missing("authentication_timeout is 1min [2].").is_empty());
        assert!(missing("See git-worktree.html [1].").is_empty());
        // Prose, abbreviations, one-digit numbers and citations are not
        // names.
        assert!(missing("It takes e.g. 5 minutes, well-known [1][2].").is_empty());
        // Not held: a command word, an option, a file, a call.
        assert_eq!(missing("Use `git mv` [1]."), ["mv"]);
        assert_eq!(
            missing("Pass --hard, then edit pg_hba.conf."),
            ["--hard", "pg_hba.conf"]
        );
        assert_eq!(missing("Call reset() twice; `reset` it."), ["reset"]);
        // A code fence's language is how to show the block, not a name;
        // the block's own words are checked.
        assert!(missing("Run [1]:\n```bash\ngit worktree remove -f\n```").is_empty());
        assert_eq!(missing("Run [1]:\n  ```sh\ngit mv\n  ```"), ["mv"]);
        assert_eq!(missing("Run ```git mv``` [1]."), ["mv"]);
        // A short name must stand alone: "mv" inside "remove" is not it.
        assert_eq!(unsourced_names("`mv`", &["remove it"], ""), ["mv"]);
    }

    #[test]
    fn a_command_is_held_only_when_a_source_or_the_question_names_it_whole() {
        let sources = ["Run cargo build with --release, then add the crate to\n  Cargo.toml."];
        let missing = |answer: &str, question: &str| unsourced_names(answer, &sources, question);
        // Both words are in the source, the command is not.
        assert_eq!(missing("Use `cargo add` [1].", ""), ["cargo add"]);
        // Whole, across a line break and in another case.
        assert!(missing("Run `Cargo Build` [1].", "").is_empty());
        assert!(missing("Use `cargo add` [1].", "What does cargo  add do?").is_empty());
        // Options and punctuation are left to the word check.
        assert!(missing("Run `cargo build --release` or `cargo, crate` [1].", "").is_empty());
        assert!(missing("Run `cargo build`, add `crate` [1].", "").is_empty());
    }

    #[test]
    fn figures_no_source_holds_are_reported() {
        let sources = ["Lag must stay below 50,000 messages; port 5432 (v2.6.20, 2^32)."];
        let missing = |answer: &str, question: &str| unsourced_names(answer, &sources, question);
        assert!(missing("Keep lag under 50000 messages on port 5432 [1].", "").is_empty());
        assert!(missing("Version 2.6.20 allows 2^32 [1].", "").is_empty());
        // A figure the question gave may be repeated.
        assert!(missing("After 90 days it expires [1].", "What after 90 days?").is_empty());
        // Recalled, not read: a figure no source holds, one-digit ones
        // and citations aside.
        assert_eq!(missing("The port is 5433, not 5 [1].", ""), ["5433"]);
        assert_eq!(missing("It is 50,001 [12].", ""), ["50001"]);
        // Spelled out in the source, written as a figure in the answer.
        let spelled = ["Kept for thirty days, or twenty-five when full; fifteen at most."];
        assert!(unsourced_names("30 days, 25, 15 [1].", &spelled, "").is_empty());
        assert_eq!(unsourced_names("20 days [1].", &spelled, ""), ["20"]);
        assert_eq!(unsourced_names("31 days [1].", &spelled, ""), ["31"]);
    }

    #[test]
    fn the_quotes_end_where_the_answer_starts() {
        // The stream holds a quote-first answer until this marker: it must
        // be the answer's own opening, on the line after the quotes.
        assert_eq!(QUOTES_END, format!("\n{ANSWER_PREFIX}"));
    }

    #[test]
    fn citation_numbers_are_found_in_their_forms() {
        assert_eq!(
            cited_numbers("A [1]. B [2, 3][1] and [x] [10]"),
            vec![1, 2, 3, 10]
        );
        assert!(cited_numbers("no citations [here], [ 9] or [, 9]").is_empty());
        assert_eq!(cited_numbers("a [link[2]"), vec![2]);
    }

    #[test]
    fn brackets_in_code_are_code_not_citations() {
        let text = "Use `#[derive(Debug)]` [1]; `v[0]` and `[u8; 4]` [2].\n\
                    ```toml\n[dependencies]\nserde = \"1\"\n[3]\n```\nDone [3].";
        assert_eq!(cited_numbers(text), vec![1, 2, 3]);
        assert_eq!(
            without_citations(text),
            "Use `#[derive(Debug)]` ; `v[0]` and `[u8; 4]` .\n\
             ```toml\n[dependencies]\nserde = \"1\"\n[3]\n```\nDone ."
        );
        // A sentence does not end inside code, and moves touch marks only.
        let sources = [
            source(1, "Attributes such as derive(Debug) print a struct."),
            source(2, "Indexing v[0] reads the first element."),
        ];
        let (fixed, moved) = verify("Indexing `v[0]` reads the first element [1].", &sources);
        assert_eq!(moved, vec![Correction { from: 1, to: 2 }]);
        assert_eq!(fixed, "Indexing `v[0]` reads the first element [2].");
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
    fn quotes_are_read_with_their_byte_ranges_and_a_quote_not_in_its_source_is_dropped() {
        let sources = [
            source(1, "Dose 18 grams.\nExtract 36 grams in 30 seconds."),
            source(2, "Milk is delivered daily."),
        ];
        let (quotes, answer) = read_quotes(
            "Quote [1]: Extract 36 grams\nQuote [2]: delivered weekly\nQuote [9]: x\nAccording to [1], 36 grams.",
            &sources,
        );
        assert_eq!(answer, "According to [1], 36 grams.");
        assert_eq!(quotes.len(), 1);
        assert_eq!(quotes[0].n, 1);
        assert_eq!(quotes[0].text, "Extract 36 grams");
        assert_eq!(
            &sources[0].hit.text[quotes[0].range.clone()],
            "Extract 36 grams"
        );
        // Without quotes the text is the answer.
        assert_eq!(
            read_quotes("According to [2], daily.", &sources).1,
            "According to [2], daily."
        );
    }

    #[test]
    fn abstention_is_recognised() {
        assert!(is_abstention("I don't know based on the documents."));
        assert!(!is_abstention("The answer is 5 minutes [1]."));
    }
}
