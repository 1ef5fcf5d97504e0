//! `lore bench all`: one report over the whole product, on real inputs (a
//! corpus folder and a BEIR set): chunking, embedding against candle's
//! stock BERT, ingest cold and unchanged, dense / BM25 / hybrid search,
//! the graph against exact search, both generators, memory and disk. Each
//! figure comes with its same-run baseline where one exists.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::scale::{SearchCase, search_cases};
use super::{EmbedBench, GenerateBench, GraphBench, Memory};
use crate::chunk::Chunker;
use crate::config::Config;
use crate::embed::Embedder;
use crate::engine::{AskRequest, Engine, IngestReport, NoProgress, Turn};
use crate::error::{Error, Result};
use crate::generate::Generator;
use crate::generate::gguf::GgufGenerator;
use crate::ingest::{load, walk};
use crate::types::{DEFAULT_COLLECTION, Slot};

/// What `lore bench all` runs on.
#[derive(Debug, Clone)]
pub struct AllOptions {
    /// Folder of documents (chunking, embedding, ingest).
    pub corpus: PathBuf,
    /// BEIR folder: its first `beir_docs` documents are ingested too, its
    /// queries searched.
    pub beir: PathBuf,
    /// Documents of the BEIR corpus to ingest.
    pub beir_docs: usize,
    /// Queries to search.
    pub queries: usize,
    /// Vectors in the synthetic graph for recall at the configured `ef`.
    pub graph_vectors: usize,
    /// GGUF generators to measure.
    pub generators: Vec<PathBuf>,
    /// Two-turn conversations per generator (a question, then a follow-up
    /// that needs it), for the cost of the standalone rewrite.
    pub conversations: usize,
    /// QA sets about `corpus` (`lore eval --qa` files), asked of each
    /// generator.
    pub qa: Vec<PathBuf>,
    /// Questions of each QA file (all: `None`).
    pub qa_limit: Option<usize>,
    /// Scratch directory (replaced).
    pub work: PathBuf,
}

/// The machine the report was measured on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Cores this process may use.
    pub cores: usize,
    /// Memory, bytes.
    pub memory_bytes: u64,
}

impl Machine {
    fn here() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_default(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: super::kib_field(&meminfo, "MemTotal:"),
        }
    }
}

/// Splitting loaded documents into chunks (loading not counted).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkingBench {
    /// Documents chunked.
    pub documents: usize,
    /// Their text, bytes.
    pub bytes: u64,
    /// Chunks made.
    pub chunks: usize,
    /// Wall time.
    pub seconds: f64,
    /// Megabytes of text per second.
    pub mb_per_s: f64,
}

/// One ingest run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestRun {
    /// What it reported.
    pub report: IngestReport,
    /// Files per second.
    pub files_per_s: f64,
    /// Chunks embedded per second.
    pub chunks_per_s: f64,
}

impl IngestRun {
    fn of(report: IngestReport) -> IngestRun {
        let seconds = report.seconds.max(1e-9);
        IngestRun {
            files_per_s: report.files_seen as f64 / seconds,
            chunks_per_s: report.chunks_embedded as f64 / seconds,
            report,
        }
    }
}

/// Result of `lore bench all`.
#[derive(Debug, Clone, Serialize)]
pub struct AllBench {
    /// Where it ran.
    pub machine: Machine,
    /// Splitting documents into chunks.
    pub chunking: ChunkingBench,
    /// lore's encoder against candle's stock BERT.
    pub embedding: EmbedBench,
    /// Ingest into an empty index.
    pub ingest_cold: IngestRun,
    /// The same ingest again, nothing changed.
    pub ingest_unchanged: IngestRun,
    /// Chunks in the index searched.
    pub chunks: u64,
    /// Dense, BM25 and hybrid search, warm, query embedding included.
    pub search: Vec<SearchCase>,
    /// The index's own graph against exact search.
    pub graph: GraphBench,
    /// A synthetic graph of `graph_vectors` vectors near the index's own,
    /// against exact search: recall@10 at the configured `ef`.
    pub graph_scaled: Option<GraphBench>,
    /// Prompt and decode speed of each generator.
    pub generators: Vec<GenerateBench>,
    /// What rewriting a follow-up costs next to answering it, per generator.
    pub conversations: Vec<ConversationBench>,
    /// Answer quality on the QA sets, per generator.
    pub qa: Vec<QaBench>,
    /// Bytes on disk per 1,000 chunks.
    pub disk_bytes_per_1k_chunks: f64,
    /// Resident memory after the searches (before any generator loads).
    pub search_rss_bytes: u64,
    /// Peak resident memory of the whole run.
    pub peak_rss_bytes: u64,
    /// Wall time of the whole run.
    pub seconds: f64,
}

/// Runs every benchmark; `progress` hears each stage as it starts.
pub fn all(config: &Config, options: &AllOptions, progress: &dyn Fn(&str)) -> Result<AllBench> {
    let start = Instant::now();
    let work = &options.work;
    super::fresh_dir(work)?;
    let beir = beir_subset(&options.beir, options.beir_docs, work)?;
    let queries = super::read_queries(&options.beir.join("queries.jsonl"), options.queries)?;
    let roots = vec![options.corpus.clone(), beir];
    let engine = Engine::open(Config {
        index: work.join("index"),
        ..config.clone()
    })?;
    let collection = engine.collection(DEFAULT_COLLECTION)?;
    let embedder = collection.embedder()?;
    progress("chunking");
    let chunking = chunking(config, &roots, embedder.as_ref())?;
    progress("embedding (lore, then candle's stock BERT)");
    let texts = super::bench_chunks(config, &options.corpus, 128, embedder.as_ref())?;
    let embedding = super::embed(config, &texts, true)?;
    progress("ingest into an empty index");
    let bench = crate::engine::WriteScope::owner("bench");
    let ingest = || engine.ingest(DEFAULT_COLLECTION, &roots, &bench, &NoProgress);
    let ingest_cold = IngestRun::of(ingest()?);
    progress("ingest again, nothing changed");
    let ingest_unchanged = IngestRun::of(ingest()?);
    progress("search: dense, BM25, hybrid");
    let search = search_cases(&engine, &queries, None)?;
    let index = collection.index();
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let vectors = embedder.embed(&refs)?;
    let items = index.docs().vectors_from(Slot(0))?;
    let graph = super::graph_vs_exact(index.vectors(), &items, &vectors, 0.0)?;
    progress(&format!(
        "graph of {} vectors against exact search",
        options.graph_vectors
    ));
    let graph_scaled = (options.graph_vectors > 0)
        .then(|| super::scaled_graph(&engine, &items, &vectors, options.graph_vectors))
        .transpose()?;
    drop(items);
    let status = index.status()?;
    let search_rss_bytes = Memory::now().rss_bytes;
    // Closes the index: the conversations open it again with each model.
    drop(collection);
    drop(engine);
    let text = texts.join("\n\n");
    let mut generators = Vec::new();
    let mut conversations = Vec::new();
    let mut qa = Vec::new();
    let qa_items = match options.qa.as_slice() {
        [] => Vec::new(),
        files => crate::eval::qa::load_qa(files, options.qa_limit)?,
    };
    for path in &options.generators {
        progress(&format!("generator {}", path.display()));
        let model: Arc<dyn Generator> = Arc::new(GgufGenerator::load_with(
            path,
            crate::generate::gguf::Options::of(&config.generator),
        )?);
        generators.push(super::generate(model.as_ref(), &text, 512, 64)?);
        if options.conversations == 0 && qa_items.is_empty() {
            continue;
        }
        let engine = Engine::open(Config {
            index: work.join("index"),
            ..config.clone()
        })?
        .with_generator(model);
        if options.conversations > 0 {
            progress(&format!("conversations with {}", path.display()));
            let asked = &queries[..options.conversations.min(queries.len())];
            conversations.push(conversation(&engine, asked)?);
        }
        if !qa_items.is_empty() {
            progress(&format!(
                "{} QA questions with {}",
                qa_items.len(),
                path.display()
            ));
            let plain = "plain".parse()?;
            let report = crate::eval::qa::evaluate_qa(
                &engine,
                &qa_items,
                &plain,
                AskRequest::DEFAULT_K,
                96,
                &mut || {},
            )?;
            qa.push(QaBench {
                generator: generator_name(path),
                report,
            });
        }
    }
    let _ = std::fs::remove_dir_all(work);
    Ok(AllBench {
        machine: Machine::here(),
        chunking,
        embedding,
        ingest_cold,
        ingest_unchanged,
        chunks: status.chunks,
        search,
        graph,
        graph_scaled,
        generators,
        conversations,
        qa,
        disk_bytes_per_1k_chunks: status.index_bytes as f64 * 1000.0 / status.chunks.max(1) as f64,
        search_rss_bytes,
        peak_rss_bytes: Memory::now().peak_bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Answer quality of one generator on the QA sets (`lore eval --qa`).
#[derive(Debug, Clone, Serialize)]
pub struct QaBench {
    /// The model file's name.
    pub generator: String,
    /// Fact, cited, retrieved, abstained, seconds.
    pub report: crate::eval::qa::QaReport,
}

fn generator_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The cost of a conversation's rewrite on one generator.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationBench {
    /// The model.
    pub model: String,
    /// Conversations run.
    pub conversations: usize,
    /// Mean time of the rewrite, ms.
    pub rewrite_ms: f64,
    /// Mean prompt tokens of the rewrite.
    pub rewrite_prompt_tokens: f64,
    /// Mean time of answering the rewritten follow-up (retrieval, prompt,
    /// decoding), ms: the baseline the rewrite is added to.
    pub answer_ms: f64,
    /// `rewrite_ms / answer_ms`.
    pub ratio: f64,
    /// Follow-ups whose best hit is the first question's best document:
    /// the rewrite kept the topic.
    pub same_top_document: f64,
}

/// The follow-up every benchmark conversation asks: it means nothing
/// without the first question.
const FOLLOW_UP: &str = "Can you say more about that?";

/// Each question asked, then [`FOLLOW_UP`] with it as the history.
fn conversation(engine: &Engine, questions: &[String]) -> Result<ConversationBench> {
    let short = crate::generate::Sampling {
        max_tokens: 48,
        ..Default::default()
    };
    let (mut rewrite_ms, mut tokens, mut answer_ms, mut same) = (0.0, 0.0, 0.0, 0);
    for question in questions {
        let first = engine.ask(
            &AskRequest {
                sampling: short.clone(),
                ..AskRequest::new(question.clone())
            },
            &mut |_| true,
        )?;
        let history = vec![Turn::user(question.clone()), Turn::assistant(first.answer)];
        let follow = engine.ask(
            &AskRequest {
                sampling: short.clone(),
                history,
                ..AskRequest::new(FOLLOW_UP)
            },
            &mut |_| true,
        )?;
        let t = &follow.timings;
        rewrite_ms += t.rewrite_ms;
        tokens += t.rewrite_prompt_tokens as f64;
        answer_ms += t.retrieve_ms + t.prompt_ms + t.gen_ms;
        let top = |hits: &[crate::search::Hit]| hits.first().map(|h| h.doc_id.clone());
        if top(&first.retrieved).is_some() && top(&first.retrieved) == top(&follow.retrieved) {
            same += 1;
        }
    }
    let n = questions.len().max(1) as f64;
    Ok(ConversationBench {
        model: engine.generator()?.id().to_string(),
        conversations: questions.len(),
        rewrite_ms: rewrite_ms / n,
        rewrite_prompt_tokens: tokens / n,
        answer_ms: answer_ms / n,
        ratio: rewrite_ms / answer_ms.max(1e-9),
        same_top_document: same as f64 / n,
    })
}

/// The first `docs` records of `beir`'s corpus, as a corpus file in `work`.
fn beir_subset(beir: &Path, docs: usize, work: &Path) -> Result<PathBuf> {
    let source = beir.join("corpus.jsonl");
    let text = std::fs::read_to_string(&source).map_err(|e| Error::io(&source, e))?;
    let dir = work.join("beir");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let subset = dir.join("corpus.jsonl");
    let lines: Vec<&str> = text.lines().take(docs).collect();
    std::fs::write(&subset, lines.join("\n") + "\n").map_err(|e| Error::io(&subset, e))?;
    Ok(subset)
}

/// Loads every document under `roots`, then times chunking them.
fn chunking(config: &Config, roots: &[PathBuf], embedder: &dyn Embedder) -> Result<ChunkingBench> {
    let found = walk::walk(roots, &config.ingest, None)?;
    let max_bytes = config.ingest.max_file_bytes;
    let docs: Vec<crate::types::Document> = found
        .files
        .iter()
        .filter_map(|file| {
            let bytes = load::read(&file.path, max_bytes).ok()?;
            load::load(&file.path, &bytes, max_bytes as usize).ok()
        })
        .flatten()
        .collect();
    let chunker = Chunker::new(
        embedder.sizer()?,
        config.chunk.max_tokens,
        config.chunk.overlap_tokens,
    )?;
    let start = Instant::now();
    let chunks: usize = docs.iter().map(|d| chunker.chunk(d).len()).sum();
    let seconds = start.elapsed().as_secs_f64();
    let bytes: u64 = docs.iter().map(|d| d.text.len() as u64).sum();
    Ok(ChunkingBench {
        documents: docs.len(),
        bytes,
        chunks,
        seconds,
        mb_per_s: bytes as f64 / 1e6 / seconds.max(1e-9),
    })
}
