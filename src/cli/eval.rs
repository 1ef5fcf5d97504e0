//! `lore eval`: retrieval quality on a BEIR folder, answer quality on
//! judged answers or on a user's own questions (`--qa`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use lore::search::Mode;
use lore::{Config, Engine};

use super::{Global, cli_scope, config, print_json, progress};
#[derive(Args)]
pub struct EvalArgs {
    /// The dataset folder (BEIR layout; not with --qa).
    #[arg(required_unless_present = "qa", conflicts_with = "qa")]
    dir: Option<PathBuf>,
    /// Answer quality on your own questions, over this index: a JSON-lines
    /// file of {question, answer, source} (answer: the fact, or a list of
    /// accepted spellings; source: the end of the path that holds it) and
    /// {question} alone (optionally "near": true) for questions the
    /// documents do not answer; "after": [earlier questions] makes a line
    /// a follow-up, asked with their answers as history. Repeatable. Prints fact, cited, retrieved
    /// (gold source among the chunks given), given (the fact itself in
    /// them), abstained and seconds.
    #[arg(long, value_name = "FILE")]
    qa: Vec<PathBuf>,
    /// Which qrels split to use.
    #[arg(long, default_value = "test")]
    split: String,
    /// Retriever, or all three.
    #[arg(long, value_enum, default_value_t = EvalMode::Hybrid)]
    mode: EvalMode,
    /// Documents retrieved per query: at least 100 for Recall@100; with
    /// --qa, the chunks given to the model (default 3, as `lore ask`).
    #[arg(short)]
    k: Option<usize>,
    /// Print the result as JSON (a list with --mode all; with --answers,
    /// one object per technique, one per line).
    #[arg(long)]
    json: bool,
    /// Answer quality instead of retrieval: ask every question of
    /// answers.jsonl ({_id, question, answer, choices}) and score accuracy
    /// and macro-F1 over the choices.
    #[arg(long)]
    answers: bool,
    /// With --answers or --qa: techniques to compare (repeatable): plain,
    /// or parts joined by + among choices, cot, scN, reflect, fewshot,
    /// expert. Default with --answers: plain, choices, cot+choices,
    /// sc5+choices, reflect; with --qa: plain.
    #[arg(long, value_name = "T")]
    technique: Vec<lore::eval::Technique>,
    /// With --answers or --qa: only the first N questions (of each file).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// With --answers or --qa: longest answer in tokens (reasoning gets as
    /// many).
    #[arg(long, default_value_t = 96)]
    max_tokens: usize,
    /// With --answers or --qa: `default`, `light`, `large`, `gemma`, or a GGUF path.
    #[arg(long)]
    generator: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum EvalMode {
    Hybrid,
    Dense,
    Bm25,
    All,
}

pub fn run(global: &Global, args: EvalArgs) -> anyhow::Result<()> {
    let Some(dir) = args.dir.clone() else {
        return eval_qa(global, &args);
    };
    if args.answers {
        return eval_answers(global, &dir, args);
    }
    let data = lore::eval::Dataset::load(&dir, &args.split)?;
    let explicit_index = global.index.is_some() || std::env::var_os("LORE_INDEX").is_some();
    let config = config(global, |c| {
        if !explicit_index {
            c.index = eval_index_dir(&dir, c);
        }
    })?;
    let engine = eval_engine(config, std::slice::from_ref(&data.corpus))?;
    let modes = match args.mode {
        EvalMode::Hybrid => vec![Mode::Hybrid],
        EvalMode::Dense => vec![Mode::Dense],
        EvalMode::Bm25 => vec![Mode::Bm25],
        EvalMode::All => vec![Mode::Bm25, Mode::Dense, Mode::Hybrid],
    };
    let mut results = Vec::new();
    for mode in modes {
        results.push(lore::eval::evaluate(
            &engine,
            &data,
            mode,
            args.k.unwrap_or(100).max(100),
        )?);
    }
    if args.json {
        return match results.as_slice() {
            [one] if !matches!(args.mode, EvalMode::All) => print_json(one),
            all => print_json(&all),
        };
    }
    println!(
        "{:<8} {:>7} {:>8} {:>9} {:>10} {:>7}",
        "mode", "queries", "nDCG@10", "Recall@10", "Recall@100", "MRR@10"
    );
    for r in &results {
        let mode = serde_json::to_value(r.mode)?
            .as_str()
            .unwrap_or_default()
            .to_string();
        println!(
            "{:<8} {:>7} {:>8.4} {:>9.4} {:>10.4} {:>7.4}",
            mode, r.queries, r.ndcg_10, r.recall_10, r.recall_100, r.mrr_10
        );
    }
    Ok(())
}

/// A progress bar over `len` questions, named after `technique`.
pub fn questions_bar(len: usize, technique: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} questions, {elapsed} (eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(technique.to_string());
    bar
}

/// `lore eval --qa`: the user's questions over the user's index.
pub fn eval_qa(global: &Global, args: &EvalArgs) -> anyhow::Result<()> {
    let items = lore::eval::qa::load_qa(&args.qa, args.limit)?;
    let techniques = if args.technique.is_empty() {
        vec!["plain".parse()?]
    } else {
        args.technique.clone()
    };
    let config = config(global, |c| {
        if args.generator.is_some() {
            c.generator.model = args.generator.clone();
        }
    })?;
    let engine = Engine::open_existing(config).context("while opening the index")?;
    let mut reports = Vec::new();
    for technique in &techniques {
        let bar = questions_bar(items.len(), &technique.name);
        let tick = &mut || bar.inc(1);
        let k = args.k.unwrap_or(lore::engine::AskRequest::DEFAULT_K);
        let report =
            lore::eval::qa::evaluate_qa(&engine, &items, technique, k, args.max_tokens, tick)?;
        bar.finish_and_clear();
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            for row in &report.rows {
                print_qa_row(row);
            }
        }
        reports.push(report);
    }
    if !args.json {
        print_qa_table(&reports);
    }
    Ok(())
}

pub fn print_qa_row(row: &lore::eval::qa::QaRow) {
    let mark = |on: bool, c: char| if on { c } else { '-' };
    let marks: String = match row.kind.as_str() {
        "answerable" => [
            mark(row.fact, 'F'),
            mark(row.cited, 'C'),
            mark(row.retrieved, 'R'),
            mark(row.fact_given, 'G'),
        ]
        .iter()
        .collect(),
        _ => format!("{}   ", mark(row.abstained, 'A')),
    };
    let answer: String = row.answer.split_whitespace().collect::<Vec<_>>().join(" ");
    let answer: String = answer.chars().take(90).collect();
    let support = row.support.map_or("    ".into(), |s| format!("{s:.2}"));
    let kind = if row.follow_up {
        "follow-up"
    } else {
        row.kind.as_str()
    };
    println!(
        "{marks} {support} {kind:<10} {:?} -> {answer:?}",
        row.question
    );
    if let Some(standalone) = &row.standalone_question {
        println!("{:15}(asked as {standalone:?})", "");
    }
    if let (Some(because), "answerable") = (row.abstained_because, row.kind.as_str()) {
        println!("{:15}(abstained: {})", "", because.name());
    }
}

pub fn print_qa_table(reports: &[lore::eval::qa::QaReport]) {
    println!(
        "\n{:<14} {:>4} {:>6} {:>6} {:>9} {:>6} {:>10} {:>4} {:>9} {:>4} {:>9} {:>8}",
        "technique",
        "n",
        "fact",
        "cited",
        "retrieved",
        "given",
        "abst.wrong",
        "far",
        "abstained",
        "near",
        "abstained",
        "median s"
    );
    for r in reports {
        println!(
            "{:<14} {:>4} {:>5.0}% {:>5.0}% {:>8.0}% {:>5.0}% {:>9.0}% {:>4} {:>8.0}% {:>4} {:>8.0}% {:>8.1}",
            r.technique,
            r.answerable,
            r.fact * 100.0,
            r.cited * 100.0,
            r.retrieved * 100.0,
            r.fact_given * 100.0,
            r.wrongly_abstained * 100.0,
            r.far,
            r.far_abstained * 100.0,
            r.near,
            r.near_abstained * 100.0,
            r.median_seconds
        );
    }
    for r in reports.iter().filter(|r| r.follow_ups > 0) {
        println!(
            "{}: {} of the answerable questions follow earlier ones; fact {:.0}%",
            r.technique,
            r.follow_ups,
            r.follow_up_fact * 100.0
        );
    }
    for r in reports {
        if let Some(sampled) = r.sampled_fact {
            println!(
                "{}: some sample stated the fact for {:.0}% of the answerable questions (the most a vote could reach)",
                r.technique,
                sampled * 100.0
            );
        }
    }
    for r in reports.iter().filter(|r| r.withdrawn > 0) {
        println!(
            "{}: the answer checks withdrew {} answers after the model wrote them; {} of them stated the fact",
            r.technique, r.withdrawn, r.withdrawn_right
        );
    }
    for r in reports {
        println!(
            "\n{}: withdrawing answers whose support is under a threshold\n{:>9} {:>10} {:>6} {:>9} {:>9} {:>9}",
            r.technique, "threshold", "abst.wrong", "fact", "far abst", "near abst", "precision"
        );
        for c in &r.calibration {
            println!(
                "{:>9.2} {:>9.0}% {:>5.0}% {:>8.0}% {:>8.0}% {:>8.0}%",
                c.threshold,
                c.wrongly_abstained * 100.0,
                c.fact * 100.0,
                c.far_abstained * 100.0,
                c.near_abstained * 100.0,
                c.precision * 100.0
            );
        }
    }
}

pub fn eval_answers(global: &Global, dir: &Path, args: EvalArgs) -> anyhow::Result<()> {
    let items = lore::eval::load_answers(dir, args.limit)?;
    let techniques = if args.technique.is_empty() {
        lore::eval::DEFAULT_TECHNIQUES
            .iter()
            .map(|t| t.parse())
            .collect::<lore::Result<Vec<lore::eval::Technique>>>()?
    } else {
        args.technique.clone()
    };
    let explicit_index = global.index.is_some() || std::env::var_os("LORE_INDEX").is_some();
    let config = config(global, |c| {
        if !explicit_index {
            c.index = eval_index_dir(dir, c);
        }
        if args.generator.is_some() {
            c.generator.model = args.generator.clone();
        }
    })?;
    let engine = eval_engine(config, &[dir.join("corpus.jsonl")])?;
    let mut results = Vec::new();
    for technique in &techniques {
        let bar = questions_bar(items.len(), &technique.name);
        let result =
            lore::eval::evaluate_answers(&engine, &items, technique, args.max_tokens, &mut || {
                bar.inc(1)
            })?;
        bar.finish_and_clear();
        if args.json {
            println!("{}", serde_json::to_string(&result)?);
        } else {
            eprintln!(
                "{:<14} accuracy {:.3}  macro-F1 {:.3}  ({} questions, {:.0} s)",
                result.technique, result.accuracy, result.macro_f1, result.n, result.seconds
            );
        }
        results.push(result);
    }
    if !args.json {
        println!(
            "{:<14} {:>5} {:>9} {:>9} {:>11} {:>8}",
            "technique", "n", "accuracy", "macro-F1", "unanswered", "seconds"
        );
        for r in &results {
            println!(
                "{:<14} {:>5} {:>9.3} {:>9.3} {:>11} {:>8.0}",
                r.technique, r.n, r.accuracy, r.macro_f1, r.unanswered, r.seconds
            );
        }
    }
    Ok(())
}

/// The evaluation index with `corpus` ingested into each configured
/// collection (created when missing), so reruns reuse it.
pub fn eval_engine(config: Config, corpus: &[PathBuf]) -> anyhow::Result<Engine> {
    let collections = config.collections();
    let engine = Engine::open(config).context("while opening the evaluation index")?;
    for name in &collections {
        if !engine.has_collection(name) {
            engine.create_collection(name, None, &cli_scope())?;
        }
        let progress = progress::IngestProgress::new(false);
        engine
            .ingest(name, corpus, &cli_scope(), &progress)
            .context("while ingesting the corpus")?;
        progress.finish();
    }
    Ok(engine)
}

/// A per-dataset index in the user's cache, so `lore eval` never writes
/// into the dataset folder and reruns reuse the index; one per document
/// precision, since an index keeps the precision it was created with.
pub fn eval_index_dir(dataset: &std::path::Path, config: &lore::config::Config) -> PathBuf {
    let canonical = dataset
        .canonicalize()
        .unwrap_or_else(|_| dataset.to_path_buf());
    let name = canonical
        .file_name()
        .map_or_else(|| "dataset".into(), |n| n.to_string_lossy().into_owned());
    let hash = lore::types::content_hash(canonical.display().to_string().as_bytes());
    // $XDG_CACHE_HOME/lore, else ~/.cache/lore (where the models live by default).
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("lore");
    let precision = if config.embedder.int8_documents {
        ""
    } else {
        "-f32"
    };
    cache
        .join("eval")
        .join(format!("{name}-{}{precision}", &hash[..8]))
}
