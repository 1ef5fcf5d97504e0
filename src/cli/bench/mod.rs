//! `lore bench`: every benchmark, each against a baseline measured in the
//! same run. `report` renders the library's reports (all, scale, rows,
//! index); `micro` runs the single-stage ones (embed, generate,
//! constrained, samples, search, filter).

mod micro;
mod report;

use std::path::PathBuf;

use clap::Subcommand;

use super::{Global, config};
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Everything at once, on real inputs: chunking, embedding (against
    /// candle's stock BERT), ingest cold and unchanged, dense / BM25 /
    /// hybrid search, the graph against exact search, both generators,
    /// memory and disk. Prints a table; --json FILE writes the report.
    All {
        /// Folder of documents to chunk, embed and ingest.
        #[arg(long, default_value = "corpora")]
        corpus: PathBuf,
        /// BEIR folder: its first --beir-docs documents are ingested too,
        /// its queries searched (default: ../shared/eval/scifact-dev, or
        /// corpora/pubmedqa where there is no ../shared).
        #[arg(long)]
        beir: Option<PathBuf>,
        /// Documents of the BEIR corpus to ingest.
        #[arg(long, default_value_t = 500)]
        beir_docs: usize,
        /// Queries to search.
        #[arg(long, default_value_t = 300)]
        queries: usize,
        /// Vectors in the synthetic graph for recall at the configured ef
        /// (0: none).
        #[arg(long, default_value_t = 50_000)]
        graph_vectors: usize,
        /// Generators: `default`, `light` or GGUF paths, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "light,default")]
        generators: Vec<String>,
        /// Two-turn conversations per generator (a BEIR query, then a
        /// follow-up that needs it): the rewrite's cost next to the answer.
        #[arg(long, default_value_t = 5)]
        conversations: usize,
        /// QA sets about --corpus, asked of each generator (`lore eval
        /// --qa` files, comma-separated; none: "").
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "corpora/handbook/questions.jsonl,corpora/handbook/out-of-corpus.jsonl"
        )]
        qa: Vec<PathBuf>,
        /// Questions of each QA file (default: all).
        #[arg(long, value_name = "N")]
        qa_limit: Option<usize>,
        /// Write the JSON report to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Scale runs at one size: N synthetic chunks derived from this
    /// index's chunks (text and vectors), imported into a fresh index under
    /// --work, then measured: import, open, memory, searches with and
    /// without a filter, recall@10, and ingesting 100 changed documents.
    /// Each phase runs in its own process, so its peak memory is its own.
    Scale {
        /// Chunks in the synthetic collection.
        #[arg(long)]
        chunks: usize,
        /// Scratch folder for the rows and the index (replaced).
        #[arg(long, value_name = "DIR")]
        work: PathBuf,
        /// Queries: BEIR queries.jsonl, JSON lines with "question", or plain lines.
        #[arg(long, default_value = "../shared/eval/scifact-dev/queries.jsonl")]
        queries: PathBuf,
        /// At most this many queries.
        #[arg(long, default_value_t = 200)]
        limit: usize,
        /// Write the JSON report to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Writes N synthetic chunks in the import format (`lore import`),
    /// derived from this index's chunks: the first phase of `bench scale`.
    Rows {
        /// Chunks to write.
        #[arg(long)]
        chunks: usize,
        /// Output file (`-`: standard output).
        #[arg(long, value_name = "FILE", default_value = "-")]
        out: PathBuf,
    },
    /// Measures this index where it lies: open time, memory at rest and
    /// under search, dense / BM25 / hybrid with and without the synthetic
    /// rows' filter, recall@10 against an exact scan, disk.
    Index {
        /// Queries: BEIR queries.jsonl, JSON lines with "question", or plain lines.
        #[arg(long, default_value = "../shared/eval/scifact-dev/queries.jsonl")]
        queries: PathBuf,
        /// At most this many queries.
        #[arg(long, default_value_t = 200)]
        limit: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Embedding throughput (chunks/s, tokens/s) of full-size chunks, lore's
    /// encoder against candle's stock BERT on the same chunks.
    Embed {
        /// Folder or file whose documents supply the chunks.
        #[arg(long, default_value = "corpora/handbook/docs")]
        corpus: PathBuf,
        /// Number of chunks.
        #[arg(long, default_value_t = 128)]
        chunks: usize,
        /// Skip the baseline.
        #[arg(long)]
        no_baseline: bool,
        /// Write the chunks (JSON list) for an external baseline
        /// (scripts/bench_sentence_transformers.py).
        #[arg(long, value_name = "FILE")]
        dump_chunks: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Constrained decoding: N generations under a JSON Schema (an enum,
    /// an integer range, a bounded string) at a temperature, each checked,
    /// and decode speed against unconstrained decoding in the same run.
    Constrained {
        /// `default`, `light`, `large`, `gemma`, or a GGUF path (default: config or `default`).
        #[arg(long)]
        generator: Option<String>,
        /// Generations.
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// Sampling temperature.
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Self-consistency's cost: N samples from one prompt against one
    /// answer (prompt and decode time).
    Samples {
        /// `default`, `light`, `large`, `gemma`, or a GGUF path (default: config or `default`).
        #[arg(long)]
        generator: Option<String>,
        /// Prompt length in tokens.
        #[arg(long, default_value_t = 600)]
        prompt_tokens: usize,
        /// Samples.
        #[arg(long, default_value_t = 5)]
        samples: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Prompt-processing and generation speed of a GGUF generator, and time
    /// to first token.
    Generate {
        /// `default`, `light`, `large`, `gemma`, or a GGUF path (default: config or `default`).
        #[arg(long)]
        generator: Option<String>,
        /// Prompt length in tokens.
        #[arg(long, default_value_t = 1000)]
        prompt_tokens: usize,
        /// Tokens to generate.
        #[arg(long, default_value_t = 64)]
        gen_tokens: usize,
        /// Also run llama.cpp on the same GGUF, threads and text, with this
        /// Python (it must have llama-cpp-python), and print both.
        #[arg(long, value_name = "PYTHON")]
        llama_cpp: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Filtered against unfiltered hybrid search on a synthetic collection
    /// of N chunks derived from this index's own (text and vectors): a
    /// metadata filter and an access list each let 10% of the chunks through.
    Filter {
        /// Queries: BEIR queries.jsonl, JSON lines with "question", or plain lines.
        #[arg(long, default_value = "corpora/handbook/questions.jsonl")]
        queries: PathBuf,
        /// At most this many queries.
        #[arg(long, default_value_t = 200)]
        limit: usize,
        /// Chunks in the synthetic collection.
        #[arg(long, default_value_t = 100_000)]
        chunks: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Search latency (p50/p99, queries/s) on the index, and the HNSW graph
    /// against exact brute force: latency and recall@10. --scale N adds a
    /// synthetic graph of N vectors built from the index's own.
    Search {
        /// Queries: BEIR queries.jsonl, JSON lines with "question", or plain lines.
        #[arg(long, default_value = "corpora/handbook/questions.jsonl")]
        queries: PathBuf,
        /// At most this many queries.
        #[arg(long, default_value_t = 500)]
        limit: usize,
        /// Vectors in the synthetic graph (0: none).
        #[arg(long, default_value_t = 0)]
        scale: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(global: &Global, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::All {
            corpus,
            beir,
            beir_docs,
            queries,
            graph_vectors,
            generators,
            conversations,
            qa,
            qa_limit,
            json,
        } => {
            let beir = beir.unwrap_or_else(|| {
                let shared = PathBuf::from("../shared/eval/scifact-dev");
                if shared.is_dir() {
                    shared
                } else {
                    eprintln!(
                        "lore: bench: no {}; using corpora/pubmedqa",
                        shared.display()
                    );
                    PathBuf::from("corpora/pubmedqa")
                }
            });
            let options = lore::bench::all::AllOptions {
                corpus,
                beir,
                beir_docs,
                queries,
                graph_vectors,
                generators: Vec::new(),
                conversations,
                qa: qa
                    .into_iter()
                    .filter(|f| !f.as_os_str().is_empty())
                    .collect(),
                qa_limit,
                work: std::env::temp_dir().join(format!("lore-bench-all-{}", std::process::id())),
            };
            report::all(
                &config(global, |_| {})?,
                options,
                &generators,
                json.as_deref(),
            )
        }
        BenchCommand::Scale {
            chunks,
            work,
            queries,
            limit,
            json,
        } => report::scale(
            &config(global, |_| {})?,
            chunks,
            &work,
            &queries,
            limit,
            json.as_deref(),
        ),
        BenchCommand::Rows { chunks, out } => report::rows(config(global, |_| {})?, chunks, &out),
        BenchCommand::Index {
            queries,
            limit,
            json,
        } => report::index(config(global, |_| {})?, &queries, limit, json),
        BenchCommand::Embed {
            corpus,
            chunks,
            no_baseline,
            dump_chunks,
            json,
        } => micro::embed(global, &corpus, chunks, !no_baseline, dump_chunks, json),
        BenchCommand::Generate {
            generator,
            prompt_tokens,
            gen_tokens,
            llama_cpp,
            json,
        } => micro::generate(
            global,
            generator,
            prompt_tokens,
            gen_tokens,
            llama_cpp,
            json,
        ),
        BenchCommand::Constrained {
            generator,
            runs,
            temperature,
            json,
        } => micro::constrained(global, generator, runs, temperature, json),
        BenchCommand::Samples {
            generator,
            prompt_tokens,
            samples,
            json,
        } => micro::samples(global, generator, prompt_tokens, samples, json),
        BenchCommand::Search {
            queries,
            limit,
            scale,
            json,
        } => micro::search(global, &queries, limit, scale, json),
        BenchCommand::Filter {
            queries,
            limit,
            chunks,
            json,
        } => micro::filter(global, &queries, limit, chunks, json),
    }
}
