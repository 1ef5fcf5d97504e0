//! `lore eval`: retrieval quality on a BEIR-layout folder (`corpus.jsonl`,
//! `queries.jsonl`, `qrels/<split>.tsv`). Every judged query is run, hits
//! are collapsed to documents, and the standard metrics are computed as
//! trec_eval/BEIR do: nDCG@10 with graded (linear) gains, Recall@10,
//! Recall@100 and MRR@10, averaged over queries.
//!
//! `lore eval --answers`: answer quality on a folder that also has
//! `answers.jsonl` (`{_id, question, answer, choices}`): every question is
//! asked with retrieval over the folder's corpus under each named
//! [`Technique`], and accuracy and macro-F1 over the choices are scored.
//!
//! `lore eval --qa FILE`: answer quality on a user's own questions, over
//! the user's own index ([`qa`]).

pub mod qa;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::{AskRequest, Engine, Techniques};
use crate::error::{Error, Result};
use crate::generate::{Constraint, Sampling};
use crate::search::{Mode, SearchRequest};

/// Judgements: query id → (document id → graded relevance).
pub type Qrels = HashMap<String, HashMap<String, u32>>;

/// Metrics of one retrieval mode, averaged over the judged queries.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvalResult {
    /// The mode evaluated.
    pub mode: Mode,
    /// Queries evaluated.
    pub queries: usize,
    /// nDCG@10.
    #[serde(rename = "ndcg@10")]
    pub ndcg_10: f64,
    /// Recall@10.
    #[serde(rename = "recall@10")]
    pub recall_10: f64,
    /// Recall@100.
    #[serde(rename = "recall@100")]
    pub recall_100: f64,
    /// MRR@10.
    #[serde(rename = "mrr@10")]
    pub mrr_10: f64,
}

/// A BEIR-layout dataset on disk.
pub struct Dataset {
    /// The corpus file to ingest.
    pub corpus: PathBuf,
    /// Query id → text, for the judged queries, in file order.
    pub queries: Vec<(String, String)>,
    /// Judgements of the split.
    pub qrels: Qrels,
}

impl Dataset {
    /// Reads `dir` for `split`; only queries judged in the split are kept.
    pub fn load(dir: &Path, split: &str) -> Result<Dataset> {
        let corpus = dir.join("corpus.jsonl");
        if !corpus.is_file() {
            return Err(Error::InvalidRequest(format!(
                "{} has no corpus.jsonl",
                dir.display()
            )));
        }
        let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
        let qrels = parse_qrels(&read(&qrels_path)?)?;
        let mut queries = Vec::new();
        for (n, line) in read(&dir.join("queries.jsonl"))?.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| Error::InvalidRequest(format!("queries.jsonl line {}: {e}", n + 1)))?;
            let id = match &value["_id"] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let Some(text) = value["text"].as_str().filter(|_| qrels.contains_key(&id)) {
                queries.push((id, text.to_string()));
            }
        }
        if queries.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "no judged queries for split '{split}' in {}",
                dir.display()
            )));
        }
        Ok(Dataset {
            corpus,
            queries,
            qrels,
        })
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Parses `query-id<TAB>corpus-id<TAB>score` lines (a header line is skipped).
pub fn parse_qrels(text: &str) -> Result<Qrels> {
    let mut qrels = Qrels::new();
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() < 3 || (n == 0 && fields[2].parse::<i64>().is_err()) {
            continue;
        }
        let score: i64 = fields[2].trim().parse().map_err(|_| {
            Error::InvalidRequest(format!("qrels line {}: bad score '{}'", n + 1, fields[2]))
        })?;
        qrels
            .entry(fields[0].to_string())
            .or_default()
            .insert(fields[1].to_string(), score.max(0) as u32);
    }
    Ok(qrels)
}

/// nDCG@k with linear gains (trec_eval's `ndcg_cut`).
pub fn ndcg_at(ranked: &[String], rels: &HashMap<String, u32>, k: usize) -> f64 {
    let discount = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| f64::from(*rels.get(d).unwrap_or(&0)) * discount(i))
        .sum();
    let mut ideal: Vec<u32> = rels.values().copied().filter(|r| *r > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, r)| f64::from(*r) * discount(i))
        .sum();
    if idcg == 0.0 { 0.0 } else { dcg / idcg }
}

/// Share of the relevant documents found in the top `k`.
pub fn recall_at(ranked: &[String], rels: &HashMap<String, u32>, k: usize) -> f64 {
    let relevant = rels.values().filter(|r| **r > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|d| rels.get(*d).is_some_and(|r| *r > 0))
        .count();
    found as f64 / relevant as f64
}

/// Reciprocal rank of the first relevant document in the top `k`.
pub fn mrr_at(ranked: &[String], rels: &HashMap<String, u32>, k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|d| rels.get(d).is_some_and(|r| *r > 0))
        .map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

/// The corpus record id of a hit's path (`…/corpus.jsonl#<id>`).
fn record_id(path: &str) -> &str {
    path.rsplit_once('#').map_or(path, |(_, id)| id)
}

/// Runs every judged query of `data` in `mode` against `engine` (which must
/// hold the ingested corpus), retrieving `depth` documents per query.
pub fn evaluate(engine: &Engine, data: &Dataset, mode: Mode, depth: usize) -> Result<EvalResult> {
    let (mut ndcg, mut r10, mut r100, mut mrr) = (0.0, 0.0, 0.0, 0.0);
    for (id, text) in &data.queries {
        let request = SearchRequest {
            collapse: true,
            collections: engine.config().collections(),
            ..SearchRequest::new(text.clone(), depth, mode)
        };
        let ranked: Vec<String> = engine
            .search(&request)?
            .hits
            .iter()
            .map(|h| record_id(&h.path).to_string())
            .collect();
        let rels = &data.qrels[id];
        ndcg += ndcg_at(&ranked, rels, 10);
        r10 += recall_at(&ranked, rels, 10);
        r100 += recall_at(&ranked, rels, 100);
        mrr += mrr_at(&ranked, rels, 10);
    }
    let n = data.queries.len() as f64;
    Ok(EvalResult {
        mode,
        queries: data.queries.len(),
        ndcg_10: ndcg / n,
        recall_10: r10 / n,
        recall_100: r100 / n,
        mrr_10: mrr / n,
    })
}

/// One question of `answers.jsonl`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AnswerItem {
    /// Its id.
    #[serde(rename = "_id")]
    pub id: String,
    /// The question.
    pub question: String,
    /// The gold answer, one of `choices`.
    pub answer: String,
    /// The possible answers.
    pub choices: Vec<String>,
}

/// Reads `dir/answers.jsonl`, the first `limit` questions.
pub fn load_answers(dir: &Path, limit: Option<usize>) -> Result<Vec<AnswerItem>> {
    let path = dir.join("answers.jsonl");
    let mut items = Vec::new();
    for (n, line) in read(&path)?.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            break;
        }
        let item: AnswerItem = serde_json::from_str(line).map_err(|e| {
            Error::InvalidRequest(format!("{} line {}: {e}", path.display(), n + 1))
        })?;
        if item.choices.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "{} line {}: no choices",
                path.display(),
                n + 1
            )));
        }
        items.push(item);
    }
    if items.is_empty() {
        return Err(Error::InvalidRequest(format!(
            "{} has no questions",
            path.display()
        )));
    }
    Ok(items)
}

/// A named combination of techniques: `plain`, or parts joined by `+`
/// among `choices` (answer constrained to the choices), `cot`, `scN`
/// (self-consistency over N samples), `reflect`, `fewshot`, `expert`,
/// `quote` (quote first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Technique {
    /// The name as given.
    pub name: String,
    /// Constrain the answer to the choices.
    pub choices: bool,
    /// The prompting techniques.
    pub techniques: Techniques,
}

impl std::str::FromStr for Technique {
    type Err = Error;

    fn from_str(name: &str) -> Result<Technique> {
        let mut technique = Technique {
            name: name.to_string(),
            choices: false,
            techniques: Techniques::default(),
        };
        for part in name.split('+') {
            let t = &mut technique.techniques;
            match part {
                "plain" => {}
                "choices" => technique.choices = true,
                sc if sc.starts_with("sc") => {
                    t.samples = sc[2..]
                        .parse()
                        .ok()
                        .filter(|n| (2..=crate::engine::MAX_SAMPLES).contains(n))
                        .ok_or_else(|| {
                            Error::InvalidRequest(format!("'{sc}': scN needs N in 2..=16"))
                        })?;
                }
                other => {
                    *t = t.clone().named(other).map_err(|_| {
                        Error::InvalidRequest(format!(
                            "unknown technique '{other}' (plain, choices, scN or {})",
                            crate::engine::technique::names()
                        ))
                    })?;
                }
            }
        }
        Ok(technique)
    }
}

/// The techniques the issue names, in order.
pub const DEFAULT_TECHNIQUES: [&str; 5] =
    ["plain", "choices", "cot+choices", "sc5+choices", "reflect"];

/// Answer quality of one technique.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AnswerResult {
    /// The technique's name.
    pub technique: String,
    /// Questions asked.
    pub n: usize,
    /// Share answered with the gold choice.
    pub accuracy: f64,
    /// F1 per choice, averaged over the choices.
    pub macro_f1: f64,
    /// Answers that named no choice.
    pub unanswered: usize,
    /// Wall time.
    pub seconds: f64,
}

/// The choice an answer names: the choice itself under a constraint, else
/// the first choice that appears as a word in the answer.
pub fn predicted(answer: &str, choices: &[String]) -> Option<String> {
    let lower = answer.trim().to_lowercase();
    if let Some(exact) = choices.iter().find(|c| c.to_lowercase() == lower) {
        return Some(exact.clone());
    }
    lower
        .split(|c: char| !c.is_alphanumeric())
        .find_map(|word| choices.iter().find(|c| c.to_lowercase() == word))
        .cloned()
}

/// The question as asked: the dataset's question and the choices.
fn question_with_choices(item: &AnswerItem) -> String {
    let choices = match item.choices.as_slice() {
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
        [] => String::new(),
    };
    format!("{} Answer {choices}.", item.question.trim())
}

/// Asks every item under `technique` (answers of at most `max_tokens`),
/// calling `tick` after each, and scores the answers.
pub fn evaluate_answers(
    engine: &Engine,
    items: &[AnswerItem],
    technique: &Technique,
    max_tokens: usize,
    tick: &mut dyn FnMut(),
) -> Result<AnswerResult> {
    let start = std::time::Instant::now();
    let mut pairs = Vec::with_capacity(items.len());
    for item in items {
        let request = AskRequest {
            sampling: Sampling {
                max_tokens,
                ..Sampling::default()
            },
            constraint: technique.choices.then(|| Constraint::Choices {
                choices: item.choices.clone(),
            }),
            techniques: technique.techniques.clone(),
            collections: engine.config().collections(),
            ..AskRequest::new(question_with_choices(item))
        };
        let response = engine.ask(&request, &mut |_| true)?;
        pairs.push((
            item.answer.clone(),
            predicted(&response.answer, &item.choices),
        ));
        tick();
    }
    let labels: Vec<String> = {
        let mut all: Vec<String> = items.iter().flat_map(|i| i.choices.clone()).collect();
        all.sort();
        all.dedup();
        all
    };
    Ok(AnswerResult {
        technique: technique.name.clone(),
        n: pairs.len(),
        accuracy: pairs
            .iter()
            .filter(|(gold, got)| got.as_deref() == Some(gold.as_str()))
            .count() as f64
            / pairs.len().max(1) as f64,
        macro_f1: macro_f1(&pairs, &labels),
        unanswered: pairs.iter().filter(|(_, got)| got.is_none()).count(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// F1 of each label (a missing prediction counts against the gold label),
/// averaged over `labels`.
pub fn macro_f1(pairs: &[(String, Option<String>)], labels: &[String]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let f1s = labels.iter().map(|label| {
        let tp = pairs
            .iter()
            .filter(|(g, p)| g == label && p.as_ref() == Some(label))
            .count() as f64;
        let predicted = pairs
            .iter()
            .filter(|(_, p)| p.as_ref() == Some(label))
            .count() as f64;
        let gold = pairs.iter().filter(|(g, _)| g == label).count() as f64;
        if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (predicted + gold)
        }
    });
    f1s.sum::<f64>() / labels.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rels(pairs: &[(&str, u32)]) -> HashMap<String, u32> {
        pairs.iter().map(|(d, r)| (d.to_string(), *r)).collect()
    }

    fn ranked(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn metrics_match_a_hand_computed_example() {
        // Relevant: a (grade 2), b (grade 1), c (grade 1, not retrieved).
        let judged = rels(&[("a", 2), ("b", 1), ("c", 1), ("z", 0)]);
        let run = ranked(&["x", "a", "z", "b"]);
        // DCG = 2/log2(3) + 1/log2(5) = 1.261860 + 0.430677 = 1.692537
        // IDCG = 2/log2(2) + 1/log2(3) + 1/log2(4) = 2 + 0.630930 + 0.5 = 3.130930
        let expected = (2.0 / 3f64.log2() + 1.0 / 5f64.log2()) / (2.0 + 1.0 / 3f64.log2() + 0.5);
        assert!((ndcg_at(&run, &judged, 10) - expected).abs() < 1e-12);
        assert!((ndcg_at(&run, &judged, 10) - 0.540_585_77).abs() < 1e-7);
        assert!((recall_at(&run, &judged, 10) - 2.0 / 3.0).abs() < 1e-12);
        assert!((recall_at(&run, &judged, 2) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(mrr_at(&run, &judged, 10), 0.5);
        assert_eq!(mrr_at(&run, &judged, 1), 0.0);
    }

    #[test]
    fn perfect_run_scores_one() {
        let judged = rels(&[("a", 1), ("b", 1)]);
        let run = ranked(&["a", "b", "c"]);
        assert!((ndcg_at(&run, &judged, 10) - 1.0).abs() < 1e-12);
        assert_eq!(recall_at(&run, &judged, 10), 1.0);
        assert_eq!(mrr_at(&run, &judged, 10), 1.0);
    }

    #[test]
    fn techniques_parse_from_their_names() {
        let t: Technique = "sc5+choices".parse().unwrap();
        assert!(t.choices);
        assert_eq!(t.techniques.samples, 5);
        let t: Technique = "cot+choices".parse().unwrap();
        assert!(t.techniques.has(&crate::engine::technique::Cot) && t.choices);
        assert!("plain".parse::<Technique>().unwrap().techniques == Techniques::default());
        assert!("sc1".parse::<Technique>().is_err());
        assert!("magic".parse::<Technique>().is_err());
    }

    #[test]
    fn answers_name_their_choice() {
        let choices = ["yes".to_string(), "no".into(), "maybe".into()];
        assert_eq!(predicted("no", &choices).as_deref(), Some("no"));
        assert_eq!(
            predicted("Yes, according to [1] it does.", &choices).as_deref(),
            Some("yes")
        );
        assert_eq!(predicted("It is unclear [2].", &choices), None);
        assert_eq!(predicted("Not known", &choices), None, "'not' is not 'no'");
    }

    #[test]
    fn macro_f1_matches_a_hand_computed_example() {
        let s = |x: &str| x.to_string();
        let pairs = vec![
            (s("yes"), Some(s("yes"))),
            (s("yes"), Some(s("no"))),
            (s("no"), Some(s("no"))),
            (s("maybe"), None),
        ];
        let labels = [s("maybe"), s("no"), s("yes")];
        // yes: tp 1, predicted 1, gold 2 → 2/3; no: tp 1, predicted 2, gold 1 → 2/3; maybe: 0.
        let f1 = macro_f1(&pairs, &labels);
        assert!((f1 - (4.0 / 9.0)).abs() < 1e-9, "{f1}");
    }

    #[test]
    fn qrels_header_is_skipped() {
        let qrels = parse_qrels("query-id\tcorpus-id\tscore\n1\tdoc9\t2\n1\tdoc3\t1\n").unwrap();
        assert_eq!(qrels["1"]["doc9"], 2);
        assert_eq!(qrels["1"].len(), 2);
    }
}
