//! Benchmarks behind `lore bench`: each measures lore's path and a baseline
//! in the same run and reports the ratio, because these machines are shared
//! and absolute numbers drift.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::chunk::{Chunker, embedding_input};
use crate::config::Config;
use crate::embed::Embedder;
use crate::embed::bert::{Backend, BertEmbedder, Int8};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ingest::{load, walk};
use crate::search::{Mode, SearchRequest};
use crate::store::flat::FlatVectorIndex;
use crate::store::vectors::HnswVectorIndex;
use crate::store::{Owner, VectorIndex};
use crate::types::Slot;

pub mod all;
pub mod scale;

/// Throughput of one embedder on the benchmark chunks.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Which forward pass.
    pub backend: String,
    /// Chunks embedded.
    pub chunks: usize,
    /// Tokens embedded (`[CLS]`/`[SEP]` included).
    pub tokens: usize,
    /// Wall time.
    pub seconds: f64,
    /// Chunks per second.
    pub chunks_per_s: f64,
    /// Tokens per second.
    pub tokens_per_s: f64,
}

/// Result of `lore bench embed`.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedBench {
    /// Mean tokens per chunk.
    pub mean_tokens: f64,
    /// lore's encoder, documents in the configured precision.
    pub lore: Throughput,
    /// lore's encoder with documents in f32, when they are configured in
    /// int8 (the same chunks, the same run).
    pub f32: Option<Throughput>,
    /// candle-transformers' BertModel, padded batches (as in its example).
    pub baseline: Option<Throughput>,
    /// lore / baseline chunks per second.
    pub ratio: Option<f64>,
}

/// The `n` longest chunks of the documents under `corpus`, as the embedder
/// sees them (heading path included).
pub fn bench_chunks(
    config: &Config,
    corpus: &Path,
    n: usize,
    embedder: &dyn Embedder,
) -> Result<Vec<String>> {
    let found = walk::walk(&[corpus.to_path_buf()], &config.ingest, None)?;
    let chunker = Chunker::new(
        embedder.sizer()?,
        config.chunk.max_tokens,
        config.chunk.overlap_tokens,
    )?;
    let mut chunks = Vec::new();
    for file in &found.files {
        let max_bytes = config.ingest.max_file_bytes;
        let Ok(bytes) = load::read(&file.path, max_bytes) else {
            continue;
        };
        let Ok(docs) = load::load(&file.path, &bytes, max_bytes as usize) else {
            continue;
        };
        for doc in docs {
            chunks.extend(
                chunker
                    .chunk(&doc)
                    .into_iter()
                    .map(|c| embedding_input(&c.heading, &c.text)),
            );
        }
        if chunks.len() >= n * 8 {
            break;
        }
    }
    chunks.sort_by_key(|c| std::cmp::Reverse(c.len()));
    chunks.truncate(n);
    if chunks.is_empty() {
        return Err(Error::InvalidRequest(format!(
            "no chunks found under {}",
            corpus.display()
        )));
    }
    Ok(chunks)
}

fn measure(name: &str, embedder: &BertEmbedder, texts: &[&str]) -> Result<Throughput> {
    embedder.embed(&texts[..texts.len().min(4)])?;
    let start = Instant::now();
    embedder.embed(texts)?;
    let seconds = start.elapsed().as_secs_f64();
    let tokens = embedder.token_counts(texts)?.iter().sum();
    Ok(Throughput {
        backend: name.to_string(),
        chunks: texts.len(),
        tokens,
        seconds,
        chunks_per_s: texts.len() as f64 / seconds,
        tokens_per_s: tokens as f64 / seconds,
    })
}

/// Embeds `chunks` with lore's encoder as configured (and in f32 too when
/// documents are configured in int8) and, when `baseline`, with the
/// reference one, and reports them.
pub fn embed(config: &Config, chunks: &[String], baseline: bool) -> Result<EmbedBench> {
    let dir = config.embedder_dir();
    let texts: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let (max, batch) = (config.embedder.max_tokens, config.embedder.batch_size);
    let int8 = Int8 {
        queries: config.embedder.int8_queries,
        documents: config.embedder.int8_documents,
    };
    let fast = BertEmbedder::load_with(&dir, max, batch, Backend::Packed(int8))?;
    let lore = if int8.documents {
        measure("packed-int8", &fast, &texts)?
    } else {
        measure("packed", &fast, &texts)?
    };
    drop(fast);
    let f32 = if int8.documents {
        let exact = BertEmbedder::load_with(&dir, max, batch, Backend::Packed(Int8::OFF))?;
        Some(measure("packed", &exact, &texts)?)
    } else {
        None
    };
    let baseline = if baseline {
        let reference = BertEmbedder::load_with(&dir, max, batch, Backend::Reference)?;
        Some(measure("candle-bert-padded", &reference, &texts)?)
    } else {
        None
    };
    Ok(EmbedBench {
        mean_tokens: lore.tokens as f64 / lore.chunks as f64,
        ratio: baseline
            .as_ref()
            .map(|b| lore.chunks_per_s / b.chunks_per_s),
        lore,
        f32,
        baseline,
    })
}

/// Resident memory of this process (`/proc/self/status`; zeros where
/// there is none).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Memory {
    /// Resident now.
    pub rss_bytes: u64,
    /// The most resident so far.
    pub peak_bytes: u64,
    /// Resident now and not backed by a file (what the kernel cannot drop
    /// under pressure without swap).
    pub anon_bytes: u64,
}

impl Memory {
    /// Reads it now.
    pub fn now() -> Memory {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| kib_field(&status, name);
        Memory {
            rss_bytes: field("VmRSS:"),
            peak_bytes: field("VmHWM:"),
            anon_bytes: field("RssAnon:"),
        }
    }
}

/// The `NAME: 123 kB` line of a /proc file, in bytes (0 when absent).
fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Latency distribution of a repeated operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Operations per second, one at a time.
    pub qps: f64,
}

impl Latency {
    fn of(mut samples_ms: Vec<f64>) -> Latency {
        samples_ms.sort_by(f64::total_cmp);
        let n = samples_ms.len().max(1);
        let at = |q: f64| {
            samples_ms
                .get(((n as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0.0)
        };
        let mean = samples_ms.iter().sum::<f64>() / n as f64;
        Latency {
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            mean_ms: mean,
            qps: if mean > 0.0 { 1000.0 / mean } else { 0.0 },
        }
    }
}

/// The graph against exact search over the same vectors.
#[derive(Debug, Clone, Serialize)]
pub struct GraphBench {
    /// Vectors searched.
    pub vectors: u64,
    /// Seconds to build the graph (0 when it was loaded).
    pub build_seconds: f64,
    /// HNSW top-10 latency.
    pub hnsw: Latency,
    /// Brute-force top-10 latency (the baseline).
    pub exact: Latency,
    /// exact p50 / hnsw p50.
    pub speedup: f64,
    /// Mean share of the exact top 10 the graph returns.
    pub recall_at_10: f64,
}

/// Result of `lore bench search`.
#[derive(Debug, Clone, Serialize)]
pub struct SearchBench {
    /// Queries run.
    pub queries: usize,
    /// Warm end-to-end hybrid search (embed, both searches, fusion, fetch).
    pub search: Latency,
    /// Mean time per stage of those searches.
    pub stages: crate::search::Timings,
    /// The index's own graph.
    pub graph: GraphBench,
    /// A synthetic larger graph (`--scale`), when asked for.
    pub scaled: Option<GraphBench>,
}

/// Queries from a file: JSON lines with `text` (BEIR) or `question`, else
/// one query per line.
pub fn read_queries(path: &Path, limit: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let queries: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(
            |line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) => v["text"]
                    .as_str()
                    .or(v["question"].as_str())
                    .unwrap_or(line)
                    .to_string(),
                Err(_) => line.to_string(),
            },
        )
        .take(limit)
        .collect();
    if queries.is_empty() {
        return Err(Error::InvalidRequest(format!(
            "no queries in {}",
            path.display()
        )));
    }
    Ok(queries)
}

fn time_ms<T>(f: impl FnOnce() -> Result<T>) -> Result<(f64, T)> {
    let start = Instant::now();
    let value = f()?;
    Ok((start.elapsed().as_secs_f64() * 1000.0, value))
}

/// Measures the graph against exact search on `items` for `queries`.
fn graph_vs_exact(
    graph: &dyn VectorIndex,
    items: &[(Slot, Vec<f32>)],
    queries: &[Vec<f32>],
    build_seconds: f64,
) -> Result<GraphBench> {
    let exact = FlatVectorIndex::new(queries.first().map_or(0, Vec::len));
    exact.insert(items)?;
    let (mut hnsw_ms, mut exact_ms, mut recall) = (Vec::new(), Vec::new(), 0.0);
    for query in queries {
        let (ms, approx) = time_ms(|| graph.search(query, 10, None))?;
        hnsw_ms.push(ms);
        let (ms, truth) = time_ms(|| exact.search(query, 10, None))?;
        exact_ms.push(ms);
        let truth: HashSet<Slot> = truth.iter().map(|(s, _)| *s).collect();
        let found = approx.iter().filter(|(s, _)| truth.contains(s)).count();
        recall += found as f64 / truth.len().max(1) as f64;
    }
    let (hnsw, exact) = (Latency::of(hnsw_ms), Latency::of(exact_ms));
    Ok(GraphBench {
        vectors: items.len() as u64,
        build_seconds,
        speedup: exact.p50_ms / hnsw.p50_ms.max(1e-9),
        hnsw,
        exact,
        recall_at_10: recall / queries.len().max(1) as f64,
    })
}

/// `n` vectors near the index's own: each a real vector plus uniform noise,
/// renormalised, so the set keeps the clusters of real data.
fn synthetic(base: &[(Slot, Vec<f32>)], n: usize) -> Vec<(Slot, Vec<f32>)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.06
    };
    (0..n)
        .map(|i| {
            let mut v: Vec<f32> = base[i % base.len()].1.iter().map(|x| x + noise()).collect();
            crate::embed::normalize(&mut v);
            (Slot(i as u64), v)
        })
        .collect()
}

/// Search latency and graph quality on `engine`'s index, plus (when
/// `scale` > 0) a synthetic graph of `scale` vectors.
pub fn search(engine: &Engine, queries: &[String], scale: usize) -> Result<SearchBench> {
    let collection = engine.collection(crate::types::DEFAULT_COLLECTION)?;
    let index = collection.index();
    let embedder = collection.embedder()?;
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let vectors = embedder.embed(&refs)?;
    for q in queries.iter().take(10) {
        engine.search(&SearchRequest::new(q.clone(), 10, Mode::Hybrid))?;
    }
    let mut samples = Vec::with_capacity(queries.len());
    let mut stages = crate::search::Timings::default();
    for q in queries {
        let request = SearchRequest::new(q.clone(), 10, Mode::Hybrid);
        let (ms, response) = time_ms(|| engine.search(&request))?;
        samples.push(ms);
        let t = response.timings;
        stages.embed_ms += t.embed_ms / queries.len() as f64;
        stages.dense_ms += t.dense_ms / queries.len() as f64;
        stages.bm25_ms += t.bm25_ms / queries.len() as f64;
        stages.total_ms += t.total_ms / queries.len() as f64;
    }
    let items = index.docs().vectors_from(Slot(0))?;
    let graph = graph_vs_exact(index.vectors(), &items, &vectors, 0.0)?;
    let scaled = (scale > 0 && !items.is_empty())
        .then(|| scaled_graph(engine, &items, &vectors, scale))
        .transpose()?;
    Ok(SearchBench {
        queries: queries.len(),
        search: Latency::of(samples),
        stages,
        graph,
        scaled,
    })
}

/// A synthetic graph of `n` vectors near `items` (built in a scratch
/// directory, then removed) against exact search for `queries`.
fn scaled_graph(
    engine: &Engine,
    items: &[(Slot, Vec<f32>)],
    queries: &[Vec<f32>],
    n: usize,
) -> Result<GraphBench> {
    let dir = tempfile_dir()?;
    let big = synthetic(items, n);
    let scratch = Owner {
        id: "bench".into(),
        adopt_unowned: false,
    };
    let dim = queries.first().map_or(0, Vec::len);
    let source = std::sync::Arc::new(FlatVectorIndex::new(dim));
    source.insert(&big)?;
    let (graph, _) = HnswVectorIndex::open(&dir, dim, &engine.config().hnsw, &scratch, source)?;
    let start = Instant::now();
    graph.rebuild(&big)?;
    let built = start.elapsed().as_secs_f64();
    let result = graph_vs_exact(&graph, &big, queries, built);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Empties `dir` (created when missing).
fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// A fresh scratch directory under the system temp dir.
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("lore-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}

/// Result of `lore bench generate`.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateBench {
    /// The model.
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt processing, tokens per second.
    pub prompt_tokens_per_s: f64,
    /// Tokens generated.
    pub gen_tokens: usize,
    /// Decoding, tokens per second.
    pub gen_tokens_per_s: f64,
    /// Time to first token: prompt processing plus one decoding step, ms
    /// (a prompt nothing of which was cached).
    pub time_to_first_token_ms: f64,
    /// The same prompt again: time to first token, ms.
    #[serde(default)]
    pub repeat_ttft_ms: f64,
    /// Another question after the same text: time to first token, ms.
    #[serde(default)]
    pub new_question_ttft_ms: f64,
    /// Prompt tokens of that question's prompt taken from the cache.
    #[serde(default)]
    pub new_question_reused_tokens: usize,
    /// A prompt of three sources and a question, the sources new: time to
    /// first token, ms.
    #[serde(default)]
    pub sources_ttft_ms: f64,
    /// The same sources in another order before another question (sources
    /// seen before, at other places): time to first token, ms.
    #[serde(default)]
    pub sources_moved_ttft_ms: f64,
    /// Prompt tokens of that prompt taken from the caches.
    #[serde(default)]
    pub sources_moved_reused_tokens: usize,
}

/// llama.cpp's figures on the same GGUF, threads and text
/// (`scripts/bench_llama_cpp.py`, through llama-cpp-python).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LlamaCppBench {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt processing, tokens per second.
    pub prompt_tokens_per_s: f64,
    /// Decoding, tokens per second.
    pub gen_tokens_per_s: f64,
    /// Time to first token, ms.
    pub time_to_first_token_ms: f64,
}

/// The reference script, carried by the binary.
const LLAMA_CPP_SCRIPT: &str = include_str!("../../scripts/bench_llama_cpp.py");

/// Runs llama.cpp on `model` with `python` (which must have
/// llama-cpp-python): about `prompt_tokens` of `text`, then `gen_tokens`,
/// on `threads` threads.
pub fn llama_cpp(
    python: &Path,
    model: &Path,
    text: &str,
    prompt_tokens: usize,
    gen_tokens: usize,
    threads: usize,
) -> Result<LlamaCppBench> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(python)
        .arg("-c")
        .arg(LLAMA_CPP_SCRIPT)
        .arg(model)
        .args([
            prompt_tokens.to_string(),
            gen_tokens.to_string(),
            threads.to_string(),
            "-".into(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(python, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| Error::io(python, e))?;
    }
    let output = child.wait_with_output().map_err(|e| Error::io(python, e))?;
    if !output.status.success() {
        return Err(Error::Config(format!(
            "llama.cpp reference failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let last = String::from_utf8_lossy(&output.stdout);
    let line = last.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .map_err(|e| Error::Config(format!("llama.cpp reference printed {line:?}: {e}")))
}

/// A one-message chat: about `prompt_tokens` tokens cut from `text`, then
/// `request`, rendered in `generator`'s template.
fn chat_prompt(
    generator: &dyn crate::generate::Generator,
    text: &str,
    prompt_tokens: usize,
    request: &str,
) -> Result<String> {
    use crate::generate::{Message, Role};
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut take = prompt_tokens.min(words.len());
    let mut body = words[..take].join(" ");
    while take > 1 && generator.count_tokens(&body)? > prompt_tokens {
        take = take * 9 / 10;
        body = words[..take].join(" ");
    }
    Ok(generator.render(&[Message {
        role: Role::User,
        content: format!("{body}\n\n{request}"),
    }]))
}

/// A question after three sources cut from `text` (about `prompt_tokens`
/// tokens in all), laid out as `prompt` lays out sources, in the order
/// `order` gives, rendered in `generator`'s template.
fn sources_prompt(
    generator: &dyn crate::generate::Generator,
    text: &str,
    prompt_tokens: usize,
    order: [usize; 3],
    question: &str,
) -> Result<String> {
    use crate::generate::{Message, Role};
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut take = prompt_tokens.min(words.len()) / 3;
    let parts = |take: usize| -> Vec<String> {
        words
            .chunks(take.max(1))
            .take(3)
            .map(|w| w.join(" "))
            .collect()
    };
    while take > 1 && generator.count_tokens(&parts(take).concat())? > prompt_tokens {
        take = take * 9 / 10;
    }
    let parts = parts(take);
    let sources: String = order
        .iter()
        .enumerate()
        .filter_map(|(n, &i)| Some((n, parts.get(i)?)))
        .map(|(n, part)| format!("[{}] bench/part-{}.md\n{part}\n\n", n + 1, order[n]))
        .collect();
    Ok(generator.render(&[
        Message {
            role: Role::System,
            content: "Answer from the numbered sources only; cite them as [n].".into(),
        },
        Message {
            role: Role::User,
            content: format!("Sources:\n\n{sources}Question: {question}"),
        },
    ]))
}

/// Prompt and decode speed of `generator` on a prompt of about
/// `prompt_tokens` tokens cut from `text`, generating `gen_tokens`.
pub fn generate(
    generator: &dyn crate::generate::Generator,
    text: &str,
    prompt_tokens: usize,
    gen_tokens: usize,
) -> Result<GenerateBench> {
    use crate::generate::Sampling;
    let prompt = chat_prompt(
        generator,
        text,
        prompt_tokens,
        "Summarise the text above in detail.",
    )?;
    let sampling = Sampling {
        max_tokens: gen_tokens,
        ..Sampling::default()
    };
    let result = generator.generate(&prompt, &sampling, None, &mut |_| true)?;
    let per_token_ms = result.gen_ms / result.gen_tokens.max(1) as f64;
    // Then what the model's cache saves: the same prompt, and another
    // question after the same text (the first token each).
    let first_token = |prompt: &str| {
        let one = Sampling {
            max_tokens: 1,
            ..Sampling::default()
        };
        generator.generate(prompt, &one, None, &mut |_| true)
    };
    let repeat = first_token(&prompt)?;
    let other = chat_prompt(
        generator,
        text,
        prompt_tokens,
        "List the three main points of the text above.",
    )?;
    let new_question = first_token(&other)?;
    // Sources: new, then the same in another order before another
    // question (what reuse of sources at any position saves).
    let ask = |order, question| {
        first_token(&sources_prompt(
            generator,
            text,
            prompt_tokens,
            order,
            question,
        )?)
    };
    let sources = ask([0, 1, 2], "What does the first source say?")?;
    let moved = ask([2, 0, 1], "Which steps come last?")?;
    Ok(GenerateBench {
        model: generator.id().to_string(),
        prompt_tokens: result.prompt_tokens,
        prompt_tokens_per_s: result.prompt_tokens as f64 / (result.prompt_ms / 1000.0),
        gen_tokens: result.gen_tokens,
        gen_tokens_per_s: result.gen_tokens as f64 / (result.gen_ms / 1000.0).max(1e-9),
        time_to_first_token_ms: result.prompt_ms + per_token_ms,
        repeat_ttft_ms: repeat.prompt_ms + repeat.gen_ms,
        new_question_ttft_ms: new_question.prompt_ms + new_question.gen_ms,
        new_question_reused_tokens: new_question.reused_tokens,
        sources_ttft_ms: sources.prompt_ms + sources.gen_ms,
        sources_moved_ttft_ms: moved.prompt_ms + moved.gen_ms,
        sources_moved_reused_tokens: moved.reused_tokens,
    })
}

/// The schema of `lore bench constrained`: an enum, an integer range and a
/// bounded string.
pub fn bench_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "category": {"enum": ["bug", "question", "feature", "other"]},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
            "summary": {"type": "string", "minLength": 5, "maxLength": 80}
        },
        "required": ["category", "priority", "summary"],
        "additionalProperties": false
    })
}

/// Why `text` does not match [`bench_schema`], if it does not.
pub fn check_bench_output(text: &str) -> std::result::Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let object = value.as_object().ok_or("not an object")?;
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["category", "priority", "summary"] {
        return Err(format!("keys {keys:?}"));
    }
    let category = object["category"].as_str().unwrap_or_default();
    if !["bug", "question", "feature", "other"].contains(&category) {
        return Err(format!("category {:?}", object["category"]));
    }
    match object["priority"].as_i64() {
        Some(1..=5) if object["priority"].is_i64() || object["priority"].is_u64() => {}
        _ => return Err(format!("priority {}", object["priority"])),
    }
    let summary = object["summary"]
        .as_str()
        .ok_or("summary is not a string")?;
    let chars = summary.chars().count();
    if !(5..=80).contains(&chars) {
        return Err(format!("summary of {chars} characters"));
    }
    Ok(())
}

/// Result of `lore bench constrained`.
#[derive(Debug, Clone, Serialize)]
pub struct ConstrainedBench {
    /// The model.
    pub model: String,
    /// Constrained generations.
    pub runs: usize,
    /// How many matched the schema.
    pub valid: usize,
    /// The first few that did not, with the reason.
    pub invalid: Vec<String>,
    /// Sampling temperature.
    pub temperature: f64,
    /// Decoding under the schema, tokens per second.
    pub constrained_tokens_per_s: f64,
    /// Decoding of the same prompt without it (every fourth seed), tokens
    /// per second, measured in the same run.
    pub free_tokens_per_s: f64,
    /// constrained / free.
    pub ratio: f64,
}

/// `runs` generations under [`bench_schema`] at `temperature`, each
/// checked, with decode speed against unconstrained decoding of the same
/// prompt interleaved in the same run.
pub fn constrained(
    generator: &dyn crate::generate::Generator,
    runs: usize,
    temperature: f64,
) -> Result<ConstrainedBench> {
    use crate::generate::{Constraint, Message, Role, Sampling};
    let prompt = generator.render(&[Message {
        role: Role::User,
        content: "Triage this report as JSON with a category, a priority from 1 (low) to 5 \
                  (urgent) and a one-line summary: \"Since the last update the export button \
                  does nothing and the log shows a timeout after 30 seconds.\""
            .into(),
    }]);
    let constraint = Constraint::JsonSchema {
        schema: bench_schema(),
    };
    let (mut guided, mut free) = ((0usize, 0.0f64), (0usize, 0.0f64));
    let mut valid = 0;
    let mut invalid = Vec::new();
    for seed in 0..runs as u64 {
        let sampling = Sampling {
            temperature,
            seed,
            max_tokens: 128,
            ..Sampling::default()
        };
        let out = generator.generate(&prompt, &sampling, Some(&constraint), &mut |_| true)?;
        guided.0 += out.gen_tokens;
        guided.1 += out.gen_ms;
        match check_bench_output(&out.text) {
            Ok(()) => valid += 1,
            Err(why) if invalid.len() < 5 => invalid.push(format!("{why}: {}", out.text)),
            Err(_) => {}
        }
        if seed % 4 == 0 {
            let out = generator.generate(&prompt, &sampling, None, &mut |_| true)?;
            free.0 += out.gen_tokens;
            free.1 += out.gen_ms;
        }
    }
    let rate = |(tokens, ms): (usize, f64)| tokens as f64 / (ms / 1000.0).max(1e-9);
    Ok(ConstrainedBench {
        model: generator.id().to_string(),
        runs,
        valid,
        invalid,
        temperature,
        constrained_tokens_per_s: rate(guided),
        free_tokens_per_s: rate(free),
        ratio: rate(guided) / rate(free).max(1e-9),
    })
}

/// Result of `lore bench samples`.
#[derive(Debug, Clone, Serialize)]
pub struct SamplesBench {
    /// The model.
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Samples drawn from one prompt.
    pub samples: usize,
    /// One answer: prompt processing, ms.
    pub one_prompt_ms: f64,
    /// One answer: decoding, ms.
    pub one_decode_ms: f64,
    /// `samples` answers: prompt processing, ms.
    pub many_prompt_ms: f64,
    /// `samples` answers: decoding, ms.
    pub many_decode_ms: f64,
    /// Tokens of the one answer.
    pub one_tokens: usize,
    /// Tokens of all `samples` answers.
    pub many_tokens: usize,
    /// many_prompt_ms / one_prompt_ms (the target is ≤ 1.3).
    pub prompt_ratio: f64,
    /// many_decode_ms / one_decode_ms (about `samples`).
    pub decode_ratio: f64,
}

/// Self-consistency's cost: one answer against `samples` answers drawn
/// from one prompt of about `prompt_tokens` cut from `text`.
pub fn samples(
    generator: &dyn crate::generate::Generator,
    text: &str,
    prompt_tokens: usize,
    samples: usize,
) -> Result<SamplesBench> {
    use crate::generate::Sampling;
    let prompt = chat_prompt(
        generator,
        text,
        prompt_tokens,
        "What is the text above about? Answer in one sentence.",
    )?;
    let samplings: Vec<Sampling> = (0..samples as u64)
        .map(|seed| Sampling {
            temperature: 0.7,
            seed,
            max_tokens: 48,
            ..Sampling::default()
        })
        .collect();
    let one = generator.generate(&prompt, &samplings[0], None, &mut |_| true)?;
    let many = generator.generate_each(&prompt, &samplings, None, &mut || true)?;
    let many_prompt_ms: f64 = many.iter().map(|g| g.prompt_ms).sum();
    let many_decode_ms: f64 = many.iter().map(|g| g.gen_ms).sum();
    Ok(SamplesBench {
        model: generator.id().to_string(),
        prompt_tokens: one.prompt_tokens,
        samples,
        one_prompt_ms: one.prompt_ms,
        one_decode_ms: one.gen_ms,
        many_prompt_ms,
        many_decode_ms,
        one_tokens: one.gen_tokens,
        many_tokens: many.iter().map(|g| g.gen_tokens).sum(),
        prompt_ratio: many_prompt_ms / one.prompt_ms.max(1e-9),
        decode_ratio: many_decode_ms / one.gen_ms.max(1e-9),
    })
}

/// Search latency of one kind of request in `lore bench filter`.
#[derive(Debug, Clone, Serialize)]
pub struct FilterCase {
    /// What was searched.
    pub name: String,
    /// Share of the chunks it may return.
    pub visible: f64,
    /// Latency, query embedding included.
    pub latency: Latency,
    /// Its p50 over the unfiltered p50 measured in the same run.
    pub ratio: f64,
    /// Mean hits returned (k is 10).
    pub mean_hits: f64,
    /// Mean time per stage.
    pub stages: crate::search::Timings,
}

/// Result of `lore bench filter`.
#[derive(Debug, Clone, Serialize)]
pub struct FilterBench {
    /// Chunks in the synthetic collection.
    pub chunks: u64,
    /// Documents (ten chunks each).
    pub documents: u64,
    /// Real chunks its text and vectors were derived from.
    pub base_chunks: usize,
    /// Seconds to write and index the collection.
    pub build_seconds: f64,
    /// Queries, each run once per case, cases interleaved.
    pub queries: usize,
    /// Unfiltered first, then a metadata filter and an access list.
    pub cases: Vec<FilterCase>,
    /// A filtered search right after a write (one new document), which
    /// works out the documents' slots again: ms, median of the rounds.
    pub after_write_ms: f64,
}

/// Chunks per synthetic document.
const CHUNKS_PER_DOC: usize = 10;
/// Writes, each followed by one filtered search, in `lore bench filter`.
const AFTER_WRITE_ROUNDS: usize = 5;

/// Filtered against unfiltered hybrid search on a synthetic collection of
/// `chunks` chunks derived from the real chunks (text and vectors) of
/// `source`'s default collection: every tenth document carries the
/// metadata `team: blue`, and every document but those tenth ones an
/// access list `[red]`, so a metadata filter and a key without groups
/// each see 10 % of the chunks. Queries are embedded for real, every time.
pub fn filter(source: &Engine, chunks: usize, queries: &[String]) -> Result<FilterBench> {
    let base_collection = source.collection(crate::types::DEFAULT_COLLECTION)?;
    let base_index = base_collection.index();
    let base = base_index.docs().vectors_from(Slot(0))?;
    if base.is_empty() || queries.is_empty() {
        return Err(Error::InvalidRequest(
            "bench filter needs an index with chunks (lore ingest first) and queries".into(),
        ));
    }
    let mut texts = Vec::with_capacity(base.len());
    for (slot, _) in &base {
        texts.push(
            base_index
                .chunk_at(*slot)?
                .map(|c| c.text)
                .unwrap_or_default(),
        );
    }
    let dir = tempfile_dir()?.join("filter");
    let _ = std::fs::remove_dir_all(&dir);
    let config = Config {
        index: dir.clone(),
        ..source.config().clone()
    };
    let engine = Engine::open(config)?;
    let collection = engine.collection(crate::types::DEFAULT_COLLECTION)?;
    let start = Instant::now();
    let vectors = synthetic(&base, chunks);
    for batch in vectors.chunks(CHUNKS_PER_DOC * 500) {
        collection.index().apply(synthetic_docs(batch, &texts))?;
    }
    collection.index().checkpoint()?;
    let build_seconds = start.elapsed().as_secs_f64();
    let blue = crate::search::Filter {
        metadata: [("team".to_string(), "blue".to_string())].into(),
        ..crate::search::Filter::default()
    };
    let cases: [(&str, crate::search::Filter, crate::search::Readers); 3] = [
        (
            "unfiltered",
            Default::default(),
            crate::search::Readers::Everyone,
        ),
        (
            "metadata filter (10%)",
            blue,
            crate::search::Readers::Everyone,
        ),
        (
            "access list (10% visible)",
            Default::default(),
            crate::search::Readers::Groups(Vec::new()),
        ),
    ];
    let request =
        |q: &str, case: &(&str, crate::search::Filter, crate::search::Readers)| SearchRequest {
            filter: case.1.clone(),
            readers: case.2.clone(),
            ..SearchRequest::new(q, 10, Mode::Hybrid)
        };
    // Warm every path (the doc table is built on the first filtered search).
    for q in queries.iter().take(5) {
        for case in &cases {
            engine.search(&request(q, case))?;
        }
    }
    let mut samples = vec![Vec::with_capacity(queries.len()); cases.len()];
    let mut hits = vec![0usize; cases.len()];
    let mut stages = vec![crate::search::Timings::default(); cases.len()];
    let share = 1.0 / queries.len() as f64;
    for q in queries {
        for (n, case) in cases.iter().enumerate() {
            let (ms, found) = time_ms(|| engine.search(&request(q, case)))?;
            samples[n].push(ms);
            hits[n] += found.hits.len();
            let (t, s) = (&found.timings, &mut stages[n]);
            s.filter_ms += t.filter_ms * share;
            s.embed_ms += t.embed_ms * share;
            s.dense_ms += t.dense_ms * share;
            s.bm25_ms += t.bm25_ms * share;
            s.total_ms += t.total_ms * share;
        }
    }
    let latencies: Vec<Latency> = samples.into_iter().map(Latency::of).collect();
    let baseline = latencies[0].p50_ms.max(1e-9);
    let mut after_write = Vec::new();
    for (round, q) in queries.iter().take(AFTER_WRITE_ROUNDS).enumerate() {
        let slot = Slot((chunks + round * CHUNKS_PER_DOC) as u64);
        let one: Vec<(Slot, Vec<f32>)> = (0..CHUNKS_PER_DOC as u64)
            .map(|i| (Slot(slot.0 + i), base[round % base.len()].1.clone()))
            .collect();
        collection.index().apply(synthetic_docs(&one, &texts))?;
        after_write.push(time_ms(|| engine.search(&request(q, &cases[2])))?.0);
    }
    let results = cases
        .iter()
        .zip(latencies)
        .zip(hits)
        .zip(stages)
        .enumerate()
        .map(|(n, (((case, latency), hits), stages))| FilterCase {
            name: case.0.to_string(),
            visible: if n == 0 { 1.0 } else { 0.1 },
            ratio: latency.p50_ms / baseline,
            latency,
            mean_hits: hits as f64 / queries.len() as f64,
            stages,
        })
        .collect();
    drop(collection);
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(FilterBench {
        chunks: chunks as u64,
        documents: chunks.div_ceil(CHUNKS_PER_DOC) as u64,
        base_chunks: base.len(),
        build_seconds,
        queries: queries.len(),
        cases: results,
        after_write_ms: Latency::of(after_write).p50_ms,
    })
}

/// Documents of ten chunks each for `batch` (slots from the synthetic
/// vectors), text taken from the real chunks in turn.
fn synthetic_docs(batch: &[(Slot, Vec<f32>)], texts: &[String]) -> crate::store::Change {
    use crate::types::{Chunk, ChunkId, DocId, DocKind, DocRecord};
    let mut change = crate::store::Change::default();
    for group in batch.chunks(CHUNKS_PER_DOC) {
        let n = group[0].0.0 as usize / CHUNKS_PER_DOC;
        let path = format!("/synthetic/doc-{n:07}.md");
        let id = DocId::from_path(&path);
        let mut metadata = crate::types::Metadata::new();
        if n.is_multiple_of(10) {
            metadata.insert("team".into(), "blue".into());
        } else {
            metadata.insert(
                crate::search::filter::ACCESS_KEY.into(),
                serde_json::json!(["red"]),
            );
        }
        let chunks = group
            .iter()
            .map(|(slot, vector)| {
                let text = format!("Part {}. {}", slot.0, texts[slot.0 as usize % texts.len()]);
                let range = 0..text.len();
                let chunk = Chunk {
                    id: ChunkId::new(&id, &range, &text),
                    byte_range: range,
                    heading: Vec::new(),
                    text,
                };
                (chunk, Some(vector.clone()))
            })
            .collect();
        change.put_docs.push(crate::store::DocUpdate {
            record: DocRecord {
                id,
                path: path.clone(),
                file: path,
                title: Some(format!("Document {n}")),
                kind: DocKind::Markdown,
                metadata,
                hash: format!("synthetic-{n}"),
                chunks: Vec::new(),
            },
            chunks,
        });
    }
    change
}
