//! `lore eval --qa`: answer quality on a user's own questions. A QA set is
//! JSON lines: `{question, answer, source}` for a question the documents
//! answer (`answer`: the fact, or a list of accepted spellings; `source`:
//! the end of the path that holds it), and `{question}` alone (optionally
//! `"near": true`) for one they do not, which should be abstained on.
//! A line with `after` (earlier questions, oldest first) is a follow-up:
//! those are asked first, each with the turns before it, and the question
//! is asked with them and their answers as the conversation's history.
//! Each question is asked through [`Engine::ask`] as a user would, and the
//! report tells retrieval misses (the gold source was not among the
//! chunks given to the model) from generation misses.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Technique;
use crate::engine::{Abstention, AskRequest, AskResponse, Engine, Turn, Vote};
use crate::error::{Error, Result};
use crate::generate::Sampling;

/// Longest line of a QA set, in bytes.
const MAX_LINE: usize = 64 * 1024;
/// Characters of each answer kept in the report.
const ANSWER_CHARS: usize = 300;
/// Most earlier questions a follow-up may carry.
const MAX_AFTER: usize = 8;

/// Accepted spellings of a fact: one, or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Accepted {
    One(String),
    Many(Vec<String>),
}

/// One line of a QA set, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    question: String,
    #[serde(default)]
    answer: Option<Accepted>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    near: bool,
    /// Earlier questions of the same conversation, oldest first.
    #[serde(default)]
    after: Vec<String>,
    /// An id or comment the file may carry; not used.
    #[serde(default, rename = "_id")]
    _id: Option<serde_json::Value>,
}

/// One question of a QA set.
#[derive(Debug, Clone)]
pub struct QaItem {
    /// The question.
    pub question: String,
    /// Earlier questions of its conversation, oldest first (none: it is
    /// asked alone).
    pub after: Vec<String>,
    /// What kind it is, and what a good answer holds.
    pub expect: Expect,
}

/// What a good answer to a [`QaItem`] does.
#[derive(Debug, Clone)]
pub enum Expect {
    /// States one of these spellings of the fact and cites `source`.
    Fact {
        /// Accepted spellings.
        spellings: Vec<String>,
        /// The end of the path of the document that holds it, if known.
        source: Option<String>,
    },
    /// Abstains: the documents do not hold the answer. `near`: the
    /// question is on the documents' subject (the hard kind).
    Abstain {
        /// On the documents' subject.
        near: bool,
    },
}

/// Reads QA sets; at most `limit` questions of each file. A bad line is an
/// error naming its file and line.
pub fn load_qa(files: &[PathBuf], limit: Option<usize>) -> Result<Vec<QaItem>> {
    let mut items = Vec::new();
    for file in files {
        let opened = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
        let mut reader = std::io::BufReader::new(opened);
        let mut taken = 0;
        let mut number = 0;
        while limit.is_none_or(|l| taken < l) {
            number += 1;
            let Some(text) = next_line(&mut reader, file, number)? else {
                break;
            };
            if text.trim().is_empty() {
                continue;
            }
            items.push(parse(&text).map_err(|reason| bad(file, number, &reason))?);
            taken += 1;
        }
    }
    if items.is_empty() {
        return Err(Error::InvalidRequest("the QA set holds no question".into()));
    }
    Ok(items)
}

fn next_line(reader: &mut impl BufRead, file: &Path, number: usize) -> Result<Option<String>> {
    let mut bytes = Vec::new();
    let read = std::io::Read::take(&mut *reader, MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut bytes)
        .map_err(|e| Error::io(file, e))?;
    if read == 0 {
        return Ok(None);
    }
    if bytes.len() > MAX_LINE {
        return Err(bad(file, number, &format!("longer than {MAX_LINE} bytes")));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| bad(file, number, "not UTF-8"))
}

fn bad(file: &Path, line: usize, reason: &str) -> Error {
    Error::InvalidRequest(format!("{}:{line}: {reason}", file.display()))
}

fn parse(text: &str) -> std::result::Result<QaItem, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if line.question.trim().is_empty() || line.after.iter().any(|q| q.trim().is_empty()) {
        return Err("an empty question".into());
    }
    if line.after.len() > MAX_AFTER {
        return Err(format!("more than {MAX_AFTER} earlier questions"));
    }
    let expect = match line.answer {
        None if line.source.is_some() => {
            return Err("a source without an answer".into());
        }
        None => Expect::Abstain { near: line.near },
        Some(accepted) => {
            let spellings = match accepted {
                Accepted::One(one) => vec![one],
                Accepted::Many(many) => many,
            };
            if spellings.iter().all(|s| normalize(s).is_empty()) {
                return Err("an answer with no words".into());
            }
            Expect::Fact {
                spellings,
                source: line.source,
            }
        }
    };
    Ok(QaItem {
        question: line.question,
        after: line.after,
        expect,
    })
}

/// Lower case, every run of other characters one space: "28 working
/// days." and "28 Working Days" compare equal.
fn normalize(text: &str) -> String {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// True when `answer` states one of `spellings` (as whole words).
pub fn states(answer: &str, spellings: &[String]) -> bool {
    let answer = format!(" {} ", normalize(answer));
    spellings
        .iter()
        .map(|s| normalize(s))
        .any(|s| !s.is_empty() && answer.contains(&format!(" {s} ")))
}

/// How one question went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QaRow {
    /// The question.
    pub question: String,
    /// `answerable`, `far` or `near` (out of the documents).
    pub kind: String,
    /// It was asked after earlier questions, with their answers as history.
    #[serde(default)]
    pub follow_up: bool,
    /// A follow-up as rewritten to stand alone (what retrieval searched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standalone_question: Option<String>,
    /// The answer (clipped).
    pub answer: String,
    /// It abstained.
    pub abstained: bool,
    /// Why it abstained: before the model (`no_match`, `unsupported`), the
    /// model itself, reflection, or the answer check (`unsourced`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abstained_because: Option<Abstention>,
    /// It states the fact (answerable questions).
    pub fact: bool,
    /// The model answered and an answer check (names and figures, or
    /// reflection) withdrew it: whether what it withdrew stated the fact
    /// (true: a right answer lost). None when nothing was withdrawn after
    /// the model wrote it (answerable questions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn_fact: Option<bool>,
    /// It cites the gold source (answerable questions with a source).
    pub cited: bool,
    /// The gold source was among the chunks given to the model.
    pub retrieved: bool,
    /// An accepted spelling of the fact is in the chunks retrieved for the
    /// answer (their text or headings; as for `retrieved`, the k given to
    /// the model and any that did not fit its prompt): a fact missed with
    /// it is the model's miss, one missed without it retrieval's.
    #[serde(default)]
    pub fact_given: bool,
    /// The question's support: how much of it the best source covers (none
    /// when nothing was found).
    pub support: Option<f64>,
    /// Self-consistency's samples (clipped), each distinct answer with its
    /// count; empty without samples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub votes: Vec<Vote>,
    /// Some sample stated the fact, whichever won the vote (answerable
    /// questions asked with samples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_fact: Option<bool>,
    /// Seconds to answer.
    pub seconds: f64,
}

/// What abstaining below one support threshold would give.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cutoff {
    /// Answers with a lower support are withdrawn.
    pub threshold: f64,
    /// Share of answerable questions then abstained on.
    pub wrongly_abstained: f64,
    /// Share of answerable questions then answered with the fact.
    pub fact: f64,
    /// Share of far out-of-corpus questions then abstained on.
    pub far_abstained: f64,
    /// Share of near-domain out-of-corpus questions then abstained on.
    pub near_abstained: f64,
    /// Of the answers then given, the share that state their fact
    /// (an answer to an out-of-corpus question counts as wrong).
    pub precision: f64,
}

/// The figures of one technique over a QA set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QaReport {
    /// The technique's name.
    pub technique: String,
    /// Chunks given to the model for each answer.
    #[serde(default)]
    pub k: usize,
    /// Answerable questions.
    pub answerable: usize,
    /// Share of answerable questions whose answer states the fact.
    pub fact: f64,
    /// Share of answerable questions with a source whose answer cites it.
    pub cited: f64,
    /// Share of answerable questions with a source where it was among the
    /// chunks given to the model (the bound retrieval sets).
    pub retrieved: f64,
    /// Share of answerable questions where the fact itself was in the
    /// chunks given to the model (see [`QaRow::fact_given`]).
    #[serde(default)]
    pub fact_given: f64,
    /// Share of answerable questions abstained on (wrongly).
    pub wrongly_abstained: f64,
    /// Answerable questions whose answer an answer check withdrew after
    /// the model wrote it (names and figures no source holds, reflection).
    #[serde(default)]
    pub withdrawn: usize,
    /// Of those, the ones whose withdrawn answer stated the fact.
    #[serde(default)]
    pub withdrawn_right: usize,
    /// Answerable follow-ups (questions with `after`).
    #[serde(default)]
    pub follow_ups: usize,
    /// Share of them whose answer states the fact.
    #[serde(default)]
    pub follow_up_fact: f64,
    /// With samples: the share of answerable questions where some sample
    /// stated the fact, the most any vote could reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled_fact: Option<f64>,
    /// Out-of-corpus questions on other subjects.
    pub far: usize,
    /// Share of them abstained on.
    pub far_abstained: f64,
    /// Out-of-corpus questions on the documents' subject.
    pub near: usize,
    /// Share of them abstained on.
    pub near_abstained: f64,
    /// Median seconds per answer.
    pub median_seconds: f64,
    /// The figures if answers under each support threshold were withdrawn.
    pub calibration: Vec<Cutoff>,
    /// Each question.
    pub rows: Vec<QaRow>,
}

/// Thresholds [`QaReport::calibration`] tries.
const THRESHOLDS: [f64; 11] = [0.0, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0];

/// The share of the rows of `kind` for which `hit` holds.
fn share(rows: &[QaRow], kind: &str, hit: &dyn Fn(&QaRow) -> bool) -> f64 {
    let of: Vec<&QaRow> = rows.iter().filter(|r| r.kind == kind).collect();
    of.iter().filter(|r| hit(r)).count() as f64 / of.len().max(1) as f64
}

fn calibration(rows: &[QaRow]) -> Vec<Cutoff> {
    THRESHOLDS
        .iter()
        .map(|&threshold| {
            let answered = |r: &QaRow| !r.abstained && r.support.is_some_and(|s| s >= threshold);
            let given: Vec<&QaRow> = rows.iter().filter(|r| answered(r)).collect();
            Cutoff {
                threshold,
                wrongly_abstained: share(rows, "answerable", &|r| !answered(r)),
                fact: share(rows, "answerable", &|r| answered(r) && r.fact),
                far_abstained: share(rows, "far", &|r| !answered(r)),
                near_abstained: share(rows, "near", &|r| !answered(r)),
                precision: given.iter().filter(|r| r.fact).count() as f64
                    / given.len().max(1) as f64,
            }
        })
        .collect()
}

/// Asks every question of `items` with `technique`, `k` chunks given to
/// the model, and scores the answers.
pub fn evaluate_qa(
    engine: &Engine,
    items: &[QaItem],
    technique: &Technique,
    k: usize,
    max_tokens: usize,
    tick: &mut dyn FnMut(),
) -> Result<QaReport> {
    let mut rows = Vec::with_capacity(items.len());
    let ask = |question: &str, history: Vec<Turn>| {
        let request = AskRequest {
            k,
            sampling: Sampling {
                max_tokens,
                ..Sampling::default()
            },
            techniques: technique.techniques.clone(),
            collections: engine.config().collections(),
            history,
            ..AskRequest::new(question.to_string())
        };
        engine.ask(&request, &mut |_| true)
    };
    for item in items {
        let mut history = Vec::with_capacity(item.after.len() * 2);
        for earlier in &item.after {
            let response = ask(earlier, history.clone())?;
            history.push(Turn::user(earlier.clone()));
            history.push(Turn::assistant(response.answer));
        }
        let start = Instant::now();
        let response = ask(&item.question, history)?;
        let seconds = start.elapsed().as_secs_f64();
        let answer: String = response.answer.chars().take(ANSWER_CHARS).collect();
        let row = match &item.expect {
            Expect::Fact { spellings, source } => {
                let gold = |path: &str| source.as_deref().is_some_and(|s| path.ends_with(s));
                QaRow {
                    kind: "answerable".into(),
                    abstained: response.abstained,
                    abstained_because: response.abstained_because,
                    fact: !response.abstained && states(&response.answer, spellings),
                    withdrawn_fact: withdrawn(&response).map(|draft| states(draft, spellings)),
                    cited: response.citations.iter().any(|c| gold(&c.path)),
                    retrieved: response.retrieved.iter().any(|h| gold(&h.path)),
                    fact_given: response.retrieved.iter().any(|h| {
                        states(&h.text, spellings)
                            || h.heading.iter().any(|line| states(line, spellings))
                    }),
                    support: response.support,
                    follow_up: !item.after.is_empty(),
                    standalone_question: response.standalone_question.clone(),
                    sampled_fact: (!response.votes.is_empty())
                        .then(|| response.votes.iter().any(|v| states(&v.answer, spellings))),
                    votes: clipped(&response.votes),
                    ..row(&item.question, answer, seconds)
                }
            }
            Expect::Abstain { near } => QaRow {
                kind: if *near { "near" } else { "far" }.into(),
                abstained: response.abstained,
                abstained_because: response.abstained_because,
                support: response.support,
                votes: clipped(&response.votes),
                ..row(&item.question, answer, seconds)
            },
        };
        rows.push(row);
        tick();
    }
    Ok(report(&technique.name, k, items, rows))
}

/// `votes` with each answer clipped as a row's answer is.
fn clipped(votes: &[Vote]) -> Vec<Vote> {
    votes
        .iter()
        .map(|v| Vote {
            answer: v.answer.chars().take(ANSWER_CHARS).collect(),
            count: v.count,
        })
        .collect()
}

/// The draft an answer check withdrew after the model wrote it.
fn withdrawn(response: &AskResponse) -> Option<&str> {
    match response.abstained_because? {
        Abstention::Unsourced => response.unsourced.as_ref().map(|u| u.draft.as_str()),
        Abstention::Reflection => response.reflection.as_ref().map(|r| r.draft.as_str()),
        _ => None,
    }
}

fn row(question: &str, answer: String, seconds: f64) -> QaRow {
    QaRow {
        question: question.to_string(),
        kind: String::new(),
        follow_up: false,
        standalone_question: None,
        answer,
        abstained: false,
        abstained_because: None,
        fact: false,
        withdrawn_fact: None,
        cited: false,
        retrieved: false,
        fact_given: false,
        support: None,
        votes: Vec::new(),
        sampled_fact: None,
        seconds,
    }
}

fn report(technique: &str, k: usize, items: &[QaItem], rows: Vec<QaRow>) -> QaReport {
    let with_source: Vec<&QaRow> = items
        .iter()
        .zip(&rows)
        .filter(|(item, _)| {
            matches!(
                &item.expect,
                Expect::Fact {
                    source: Some(_),
                    ..
                }
            )
        })
        .map(|(_, row)| row)
        .collect();
    let sourced = |hit: &dyn Fn(&QaRow) -> bool| {
        with_source.iter().filter(|r| hit(r)).count() as f64 / with_source.len().max(1) as f64
    };
    let count = |kind: &str| rows.iter().filter(|r| r.kind == kind).count();
    let follow_ups: Vec<&QaRow> = rows.iter().filter(|r| r.follow_up).collect();
    let mut seconds: Vec<f64> = rows.iter().map(|r| r.seconds).collect();
    seconds.sort_by(f64::total_cmp);
    QaReport {
        technique: technique.to_string(),
        k,
        answerable: count("answerable"),
        fact: share(&rows, "answerable", &|r| r.fact),
        cited: sourced(&|r| r.cited),
        retrieved: sourced(&|r| r.retrieved),
        fact_given: share(&rows, "answerable", &|r| r.fact_given),
        wrongly_abstained: share(&rows, "answerable", &|r| r.abstained),
        withdrawn: rows.iter().filter(|r| r.withdrawn_fact.is_some()).count(),
        withdrawn_right: rows
            .iter()
            .filter(|r| r.withdrawn_fact == Some(true))
            .count(),
        follow_ups: rows.iter().filter(|r| r.follow_up).count(),
        follow_up_fact: follow_ups.iter().filter(|r| r.fact).count() as f64
            / follow_ups.len().max(1) as f64,
        sampled_fact: rows
            .iter()
            .any(|r| r.sampled_fact.is_some())
            .then(|| share(&rows, "answerable", &|r| r.sampled_fact == Some(true))),
        far: count("far"),
        far_abstained: share(&rows, "far", &|r| r.abstained),
        near: count("near"),
        near_abstained: share(&rows, "near", &|r| r.abstained),
        median_seconds: seconds.get(seconds.len() / 2).copied().unwrap_or(0.0),
        calibration: calibration(&rows),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_whole_words_in_any_case_and_punctuation() {
        let spellings = vec!["28 working days".to_string(), "twenty-eight days".into()];
        assert!(states("Employees get 28 Working Days [1].", &spellings));
        assert!(states("Twenty eight days.", &spellings));
        assert!(!states("They get 128 working days.", &spellings));
        assert!(!states("They get 28 days.", &spellings));
    }

    #[test]
    fn answers_withdrawn_after_the_model_are_counted_with_the_right_ones() {
        let item = QaItem {
            question: "How many days?".into(),
            after: Vec::new(),
            expect: Expect::Fact {
                spellings: vec!["28".into()],
                source: None,
            },
        };
        let answerable = |because: Option<Abstention>, withdrawn_fact: Option<bool>| QaRow {
            kind: "answerable".into(),
            abstained: because.is_some(),
            abstained_because: because,
            withdrawn_fact,
            ..row("How many days?", String::new(), 1.0)
        };
        let rows = vec![
            answerable(Some(Abstention::Unsourced), Some(true)),
            answerable(Some(Abstention::Reflection), Some(false)),
            answerable(Some(Abstention::Unsupported), None),
            answerable(None, None),
        ];
        let report = report("plain", 3, &vec![item; rows.len()], rows);
        assert_eq!((report.withdrawn, report.withdrawn_right), (2, 1));
        assert_eq!(report.wrongly_abstained, 0.75);
    }

    #[test]
    fn lines_are_facts_or_questions_to_abstain_on_and_bad_ones_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("qa.jsonl");
        std::fs::write(
            &file,
            concat!(
                r#"{"question": "How many days?", "answer": ["28 days", "28"], "source": "hr/vacation.md"}"#,
                "\n\n",
                r#"{"question": "What is the capital of Peru?"}"#,
                "\n",
                r#"{"question": "Which cargo command vendors crates?", "near": true}"#,
                "\n",
                r#"{"question": "And how many carry over?", "after": ["How many days?"], "answer": "5"}"#,
                "\n",
            ),
        )
        .unwrap();
        let items = load_qa(std::slice::from_ref(&file), None).unwrap();
        assert_eq!(items.len(), 4);
        assert!(items[..3].iter().all(|i| i.after.is_empty()));
        assert_eq!(items[3].after, ["How many days?"]);
        assert!(
            matches!(&items[0].expect, Expect::Fact { spellings, source: Some(s) } if spellings.len() == 2 && s == "hr/vacation.md")
        );
        assert!(matches!(items[1].expect, Expect::Abstain { near: false }));
        assert!(matches!(items[2].expect, Expect::Abstain { near: true }));
        assert_eq!(
            load_qa(std::slice::from_ref(&file), Some(1)).unwrap().len(),
            1
        );
        for (bad, why) in [
            (
                r#"{"question": "x", "source": "a.md"}"#,
                "a source without an answer",
            ),
            (r#"{"question": " "}"#, "an empty question"),
            (
                r#"{"question": "x", "answer": "?!"}"#,
                "an answer with no words",
            ),
            (r#"{"question": "x", "anwser": "y"}"#, "unknown field"),
            (r#"{"question": "x", "after": [""]}"#, "an empty question"),
            (
                r#"{"question": "x", "after": ["1","2","3","4","5","6","7","8","9"]}"#,
                "more than 8 earlier questions",
            ),
        ] {
            std::fs::write(&file, format!("{{\"question\": \"ok\"}}\n{bad}\n")).unwrap();
            let err = load_qa(std::slice::from_ref(&file), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains("qa.jsonl:2") && err.contains(why), "{err}");
        }
    }
}
