//! Benchmarks behind `lore bench`: each measures lore's path and a baseline
//! in the same run and reports the ratio, because these machines are shared
//! and absolute numbers drift.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::chunk::{Chunker, embedding_input};
use crate::config::Config;
use crate::embed::Embedder;
use crate::embed::bert::{Backend, BertEmbedder};
use crate::error::{Error, Result};
use crate::ingest::{load, walk};

/// Throughput of one embedder on the benchmark chunks.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Which forward pass.
    pub backend: String,
    /// Chunks embedded.
    pub chunks: usize,
    /// Tokens embedded ([CLS]/[SEP] included).
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
    /// lore's encoder.
    pub lore: Throughput,
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
        let Ok(bytes) = std::fs::read(&file.path) else {
            continue;
        };
        let Ok(docs) = load::load(&file.path, &bytes) else {
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

/// Embeds `chunks` with lore's encoder and (when `baseline`) with the
/// reference one, and reports both.
pub fn embed(config: &Config, chunks: &[String], baseline: bool) -> Result<EmbedBench> {
    let dir = config.embedder_dir();
    let texts: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let (max, batch) = (config.embedder.max_tokens, config.embedder.batch_size);
    let fast = BertEmbedder::load_with(&dir, max, batch, Backend::Packed)?;
    let lore = measure("packed", &fast, &texts)?;
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
        baseline,
    })
}
