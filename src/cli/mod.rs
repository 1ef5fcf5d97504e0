//! Command-line front end: flags (clap), configuration layering, logging
//! and rendering. What works on an index held by a running server goes
//! through [`lore::Lore`], chosen once in `open_backend`; the rest (serve,
//! import, snapshot, bench, eval) through [`lore::Engine`].

mod bench;
mod chat;
mod progress;
mod watch;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use lore::keys::{KeyStore, Role};
use lore::search::{Filter, Mode, Retriever, SearchRequest, SearchResponse};
use lore::{Config, Engine, Error, Local, Lore};

/// The audit trail's actor for writes made by this CLI on its own.
const CLI_ACTOR: &str = "cli";

/// Writes made by this CLI on its own: the machine's owner.
fn cli_scope() -> lore::engine::WriteScope {
    lore::engine::WriteScope::owner(CLI_ACTOR)
}

/// lore: ask questions of your documents, offline.
///
/// Ingest a folder into a local index, then search it. Settings come from
/// built-in defaults, then `lore.toml` (or --config), then LORE_* environment
/// variables, then flags.
///
/// Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration,
/// 3 done but some input lines skipped (`embed`).
#[derive(Parser)]
#[command(name = "lore", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Config file (default: ./lore.toml when present).
    #[arg(long, global = true, env = "LORE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Index directory (default ./index; env LORE_INDEX).
    #[arg(long, global = true, value_name = "DIR")]
    index: Option<PathBuf>,
    /// Collection to work on (default `default`; env LORE_COLLECTION);
    /// search, ask and eval take several, comma-separated, fused.
    #[arg(long, global = true, value_name = "NAME[,NAME..]")]
    collection: Option<String>,
    /// Worker threads (default: all cores; env LORE_THREADS).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// More log output (-v info, -vv debug). Env LORE_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log lines as JSON (for log collectors).
    #[arg(long, global = true)]
    log_json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Index files and folders (incremental: unchanged files are skipped,
    /// vanished files removed).
    Ingest(IngestArgs),
    /// Import chunks embedded elsewhere: JSON lines, one chunk per line
    /// ({"path", "text", "vector", optional "chunk_id", "doc_id",
    /// "byte_range", "heading", "title", "metadata"}), a document's rows
    /// consecutive. Every row is checked first; a bad one fails the import
    /// with its line number and nothing is written. Unchanged documents
    /// are skipped.
    Import {
        /// JSONL files (`-`: standard input, spooled to a temporary file
        /// in the index directory, as rows are read twice).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The rows are everything imported: remove imported documents
        /// they no longer hold (ingested documents are never touched).
        /// Needs a single input.
        #[arg(long)]
        prune: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Chunk and embed documents exactly as `ingest` would, without an
    /// index: JSON lines on standard input ({"path", "text", optional "id",
    /// "metadata"}; `path` as ingest names the file, for the same ids),
    /// `import` rows on standard output. The worker of distributed ingest
    /// (scripts/spark/). A bad line is reported on stderr with its number
    /// and skipped; the exit code is then 3.
    Embed,
    /// Remove a file, a folder or a document id from the index.
    Remove {
        /// Path of an ingested file or folder, or a document id.
        target: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Search the index.
    Search(SearchArgs),
    /// Answer a question from the documents, citing them as [n].
    Ask(AskArgs),
    /// Retrieval quality on a BEIR-layout folder (corpus.jsonl, queries.jsonl,
    /// qrels/<split>.tsv): nDCG@10, Recall@10, Recall@100, MRR@10. The corpus
    /// is ingested into a cached index (~/.cache/lore/eval/...) unless --index
    /// is given; reruns reuse it.
    Eval(EvalArgs),
    /// Measure speed against a baseline run side by side.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Serve the HTTP API (search, ask, documents, OpenAI-compatible chat,
    /// models and embeddings) until SIGINT/SIGTERM.
    Serve {
        /// Address to bind (config `server.addr`; default 127.0.0.1:8080).
        /// A non-loopback address needs API keys (LORE_API_KEYS).
        #[arg(long)]
        addr: Option<String>,
        /// `default`, `light`, `gemma`, or a GGUF path (env LORE_GENERATOR).
        #[arg(long)]
        generator: Option<String>,
        /// Folders `POST /v1/ingest` may read (repeatable; config
        /// `server.ingest_roots`).
        #[arg(long = "ingest-root", value_name = "DIR")]
        ingest_roots: Vec<std::path::PathBuf>,
        /// Make FILE this index's audit file: every write to the index,
        /// by this server or any other lore process (key changes,
        /// ingests, imports), is appended to it as one JSON line (time,
        /// pid, key id, collection, action, counts, ids), from now on.
        /// Recorded in `<index>/audit-log.path`; delete that to stop.
        #[arg(long, value_name = "FILE")]
        audit_log: Option<PathBuf>,
        /// Serve reads only (a replica of a snapshot): writes get a 403
        /// `read_only` (config `server.read_only`).
        #[arg(long)]
        read_only: bool,
        /// Publish a snapshot of the index into DIR at start and every
        /// --snapshot-every seconds (`DIR/current` links the newest, three
        /// are kept), for read replicas to copy.
        #[arg(long, value_name = "DIR")]
        snapshot_dir: Option<PathBuf>,
        /// Seconds between snapshots (config `server.snapshot_every_s`).
        #[arg(long, value_name = "SECS")]
        snapshot_every: Option<u64>,
        /// Follow this folder (inside an --ingest-root) and ingest its
        /// changes as they happen, into --collection (repeatable; config
        /// `server.watch`; timing `[watch]`). `/metrics` reports the lag.
        #[arg(long, value_name = "DIR")]
        watch: Vec<PathBuf>,
    },
    /// Talk with the documents: an interactive session where follow-up
    /// questions ("and for SEV2?") are understood from the earlier turns.
    /// Type /sources for the last answer's retrieved chunks, /reset to
    /// start over, /quit (or Ctrl-D) to leave.
    Chat(ChatArgs),
    /// Write a consistent, self-contained copy of the index (every
    /// collection, the key store) to a new directory. Writes wait while it
    /// is copied. When a server holds the index, use `lore serve
    /// --snapshot-dir` instead.
    Snapshot {
        /// The new directory.
        dir: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage API keys (kept hashed in the index directory's keys.json).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage the collections of the index (each with its own documents,
    /// vectors, keyword index and embedder).
    #[command(subcommand)]
    Collection(CollectionCommand),
    /// Show what the index holds and whether its stores agree.
    Status {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CollectionCommand {
    /// Create an empty collection.
    Create {
        /// Its name: letters, digits, '-', '_', '.'.
        name: String,
        /// The embedder's model directory (default: the configured embedder).
        #[arg(long, value_name = "DIR")]
        embedder: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the collections with their sizes and embedders.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drop a collection and everything in it.
    Drop {
        /// Its name.
        name: String,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key and print its secret (shown this once only).
    Create {
        /// What it may do.
        #[arg(long, value_enum)]
        role: Role,
        /// Collections it may use, comma-separated, or `*` for all.
        #[arg(long, value_delimiter = ',', default_value = "*")]
        collections: Vec<String>,
        /// Groups it belongs to (documents with an access list), comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Print the key (secret included) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (ids, roles, collections, groups; never secrets).
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id; a running server stops accepting it at once.
    Revoke {
        /// The key id (from `lore key list`).
        id: String,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
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
        /// `default`, `light`, `gemma`, or a GGUF path (default: config or `default`).
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
        /// `default`, `light`, `gemma`, or a GGUF path (default: config or `default`).
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
        /// `default`, `light`, `gemma`, or a GGUF path (default: config or `default`).
        #[arg(long)]
        generator: Option<String>,
        /// Prompt length in tokens.
        #[arg(long, default_value_t = 1000)]
        prompt_tokens: usize,
        /// Tokens to generate.
        #[arg(long, default_value_t = 64)]
        gen_tokens: usize,
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

#[derive(Args)]
struct IngestArgs {
    /// Files or folders to ingest.
    #[arg(required_unless_present = "watch")]
    paths: Vec<PathBuf>,
    /// After ingesting, follow this folder's changes and apply them as
    /// they happen, until Ctrl-C (repeatable; ingested first too). Timing:
    /// config `[watch]`.
    #[arg(long, value_name = "DIR")]
    watch: Vec<PathBuf>,
    /// Only ingest files matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Leave out files matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Skip files larger than this many bytes.
    #[arg(long, value_name = "BYTES")]
    max_file_bytes: Option<u64>,
    /// Largest chunk, in embedder tokens.
    #[arg(long)]
    chunk_tokens: Option<usize>,
    /// Tokens shared between neighbouring chunks.
    #[arg(long)]
    chunk_overlap: Option<usize>,
    /// Print one JSON summary instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SearchArgs {
    /// The query.
    query: String,
    /// Number of hits.
    #[arg(short, default_value_t = 5)]
    k: usize,
    /// Retriever.
    #[arg(long, value_enum, default_value_t = ModeArg::Hybrid)]
    mode: ModeArg,
    /// Only documents matching KEY=VALUE (repeatable, all must match):
    /// path=PREFIX|GLOB, type=KIND|EXT, or any metadata key (tags=ops).
    #[arg(long, value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// At most one hit per document.
    #[arg(long)]
    collapse: bool,
    /// Print hits and timings as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct AskArgs {
    /// The question.
    question: String,
    /// Chunks given to the model (more context, slower prompt processing).
    #[arg(short, default_value_t = 3)]
    k: usize,
    /// Only documents matching KEY=VALUE (as for search).
    #[arg(long, value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// `default`, `light`, `gemma`, or a GGUF path (env LORE_GENERATOR).
    #[arg(long)]
    generator: Option<String>,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    temperature: Option<f64>,
    /// Nucleus sampling mass.
    #[arg(long)]
    top_p: Option<f64>,
    /// Random seed: the same seed and question give the same answer.
    #[arg(long)]
    seed: Option<u64>,
    /// Longest answer in tokens.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Print the answer once it is complete instead of streaming it.
    #[arg(long)]
    no_stream: bool,
    /// Print the answer, citations, retrieved chunks and timings as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    constraint: ConstraintArgs,
    #[command(flatten)]
    techniques: TechniqueArgs,
}

#[derive(Args)]
struct ChatArgs {
    /// Chunks given to the model for each answer.
    #[arg(short, default_value_t = 3)]
    k: usize,
    /// `default`, `light`, `gemma`, or a GGUF path (env LORE_GENERATOR).
    #[arg(long)]
    generator: Option<String>,
    /// Longest answer in tokens.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Keep the typed lines here between sessions (default
    /// ~/.cache/lore/chat-history; `-` keeps none).
    #[arg(long, value_name = "FILE")]
    history_file: Option<PathBuf>,
}

/// What the answer must match (at most one; decoded under it, so the
/// output matches every time).
#[derive(Args)]
struct ConstraintArgs {
    /// Answer as JSON valid against the JSON Schema in FILE; `cited` for
    /// the built-in {"answer", "citations"} schema.
    #[arg(long, value_name = "FILE|cited", help_heading = "Constrained output")]
    schema: Option<String>,
    /// Answer with exactly one of these (comma-separated).
    #[arg(long, value_delimiter = ',', num_args = 1.., value_name = "A,B,..", help_heading = "Constrained output")]
    choices: Option<Vec<String>>,
    /// Answer matching this regular expression, whole.
    #[arg(long, value_name = "REGEX", help_heading = "Constrained output")]
    regex: Option<String>,
    /// Answer following the Lark grammar in FILE (llguidance's dialect).
    #[arg(long, value_name = "FILE", help_heading = "Constrained output")]
    grammar: Option<PathBuf>,
}

/// The prompting techniques of the "State of GPT" talk.
#[derive(Args)]
struct TechniqueArgs {
    /// cot: reason step by step first (shown apart with --json);
    /// few-shot: worked examples from the config before the sources;
    /// expert: the system prompt of a careful expert; quote: verbatim
    /// quotes of the sources first, each checked by the grammar against
    /// its source (shown after the answer). Repeatable.
    #[arg(long, value_enum, help_heading = "Techniques")]
    technique: Vec<TechniqueArg>,
    /// Self-consistency: sample N answers (seeds from --seed) and return
    /// the majority; the prompt is processed once.
    #[arg(long, value_name = "N", help_heading = "Techniques", value_parser = clap::value_parser!(u16).range(1..=lore::MAX_SAMPLES as i64))]
    samples: Option<u16>,
    /// Reflection: check the answer against the sources, then keep,
    /// revise or abstain (the verdict is reported).
    #[arg(long, help_heading = "Techniques")]
    reflect: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TechniqueArg {
    Cot,
    FewShot,
    Expert,
    Quote,
}

impl TechniqueArgs {
    fn techniques(&self) -> lore::Techniques {
        lore::Techniques {
            cot: self.technique.contains(&TechniqueArg::Cot),
            samples: self.samples.map_or(0, usize::from),
            reflect: self.reflect,
            few_shot: self.technique.contains(&TechniqueArg::FewShot),
            expert: self.technique.contains(&TechniqueArg::Expert),
            quote: self.technique.contains(&TechniqueArg::Quote),
        }
    }
}

impl ConstraintArgs {
    fn options(&self) -> anyhow::Result<lore::ConstraintOptions> {
        // A file that cannot be read is a usage error (exit code 2).
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map_err(|e| Error::InvalidRequest(format!("cannot read {}: {e}", path.display())))
        };
        let schema = match self.schema.as_deref() {
            None => None,
            Some("cited") => Some(serde_json::Value::String("cited".into())),
            Some(path) => {
                let text = read(std::path::Path::new(path))?;
                Some(
                    serde_json::from_str(&text)
                        .map_err(|e| Error::InvalidRequest(format!("{path} is not JSON: {e}")))?,
                )
            }
        };
        Ok(lore::ConstraintOptions {
            schema,
            choices: self.choices.clone(),
            regex: self.regex.clone(),
            grammar: self.grammar.as_deref().map(read).transpose()?,
        })
    }
}

#[derive(Args)]
struct EvalArgs {
    /// The dataset folder (BEIR layout; not with --qa).
    #[arg(required_unless_present = "qa", conflicts_with = "qa")]
    dir: Option<PathBuf>,
    /// Answer quality on your own questions, over this index: a JSON-lines
    /// file of {question, answer, source} (answer: the fact, or a list of
    /// accepted spellings; source: the end of the path that holds it) and
    /// {question} alone (optionally "near": true) for questions the
    /// documents do not answer. Repeatable. Prints fact, cited, retrieved
    /// (gold source among the chunks given), abstained and seconds.
    #[arg(long, value_name = "FILE")]
    qa: Vec<PathBuf>,
    /// Which qrels split to use.
    #[arg(long, default_value = "test")]
    split: String,
    /// Retriever, or all three.
    #[arg(long, value_enum, default_value_t = EvalMode::Hybrid)]
    mode: EvalMode,
    /// Documents retrieved per query (at least 100 for Recall@100).
    #[arg(short, default_value_t = 100)]
    k: usize,
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
    /// With --answers or --qa: `default`, `light`, `gemma`, or a GGUF path.
    #[arg(long)]
    generator: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum EvalMode {
    Hybrid,
    Dense,
    Bm25,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Hybrid,
    Dense,
    Bm25,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Mode {
        match mode {
            ModeArg::Hybrid => Mode::Hybrid,
            ModeArg::Dense => Mode::Dense,
            ModeArg::Bm25 => Mode::Bm25,
        }
    }
}

/// Parses the command line, runs it and maps the outcome to an exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose, cli.global.log_json);
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lore: error: {err:#}");
            exit_code(&err)
        }
    }
}

/// Some input lines were skipped (each reported), the rest done: exit 3.
#[derive(Debug)]
struct SomeSkipped(u64);

impl std::fmt::Display for SomeSkipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} input lines were skipped", self.0)
    }
}

impl std::error::Error for SomeSkipped {}

/// 3 when some input was skipped, 2 for problems the user fixes in flags
/// or config, 1 for the rest.
fn exit_code(err: &anyhow::Error) -> ExitCode {
    if err.downcast_ref::<SomeSkipped>().is_some() {
        return ExitCode::from(3);
    }
    match err.downcast_ref::<Error>() {
        Some(
            Error::Config(_)
            | Error::InvalidRequest(_)
            | Error::Conflict(_)
            | Error::Forbidden(_)
            | Error::EmbedderMismatch { .. },
        ) => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

/// Logs to stderr (filtered by -v / `LORE_LOG`; audit events always).
fn init_logging(verbose: u8, json: bool) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LORE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{default},{}=info,hnsw_rs=warn,tantivy=warn",
            lore::audit::TARGET
        ))
    });
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let stderr = if json {
        stderr.json().with_filter(filter).boxed()
    } else {
        stderr.with_filter(filter).boxed()
    };
    tracing_subscriber::registry().with(stderr).init();
}

/// Layers flags over file and environment, validates, and sets the thread
/// budget before any pool starts.
fn config(global: &Global, edit: impl FnOnce(&mut Config)) -> anyhow::Result<Config> {
    let mut config = Config::load(global.config.as_deref())?;
    if let Some(index) = &global.index {
        config.index = index.clone();
    }
    if let Some(collection) = &global.collection {
        config.collection = collection.clone();
    }
    if let Some(threads) = global.threads {
        config.threads = Some(threads);
    }
    edit(&mut config);
    config.validate()?;
    if let Some(threads) = config.threads {
        // candle sizes its matmul parallelism from this variable; rayon's
        // global pool is sized to match so the two never oversubscribe.
        // SAFETY: set before any other thread of this process exists.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("while starting the worker pool")?;
    }
    Ok(config)
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    let global = &cli.global;
    match cli.command {
        Command::Ingest(args) => ingest(global, args),
        Command::Remove { target, json } => {
            let config = config(global, |_| {})?;
            let collection = one_collection(&config)?;
            let report = open_backend(config, true, CLI_ACTOR)?
                .remove(&collection, &target)
                .with_context(|| format!("while removing {target}"))?;
            if json {
                print_json(&report)
            } else {
                println!(
                    "removed {} file(s), {} document(s)",
                    report.files, report.documents
                );
                Ok(())
            }
        }
        Command::Search(args) => search(global, args),
        Command::Eval(args) => eval(global, args),
        Command::Ask(args) => ask(global, args),
        Command::Chat(args) => chat::run(global, args),
        Command::Bench(BenchCommand::All {
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
        }) => {
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
            bench::all(
                &config(global, |_| {})?,
                options,
                &generators,
                json.as_deref(),
            )
        }
        Command::Bench(BenchCommand::Scale {
            chunks,
            work,
            queries,
            limit,
            json,
        }) => bench::scale(
            &config(global, |_| {})?,
            chunks,
            &work,
            &queries,
            limit,
            json.as_deref(),
        ),
        Command::Bench(BenchCommand::Rows { chunks, out }) => {
            bench::rows(config(global, |_| {})?, chunks, &out)
        }
        Command::Bench(BenchCommand::Index {
            queries,
            limit,
            json,
        }) => bench::index(config(global, |_| {})?, &queries, limit, json),
        Command::Bench(BenchCommand::Embed {
            corpus,
            chunks,
            no_baseline,
            dump_chunks,
            json,
        }) => bench_embed(global, &corpus, chunks, !no_baseline, dump_chunks, json),
        Command::Bench(BenchCommand::Generate {
            generator,
            prompt_tokens,
            gen_tokens,
            json,
        }) => bench_generate(global, generator, prompt_tokens, gen_tokens, json),
        Command::Bench(BenchCommand::Constrained {
            generator,
            runs,
            temperature,
            json,
        }) => bench_constrained(global, generator, runs, temperature, json),
        Command::Bench(BenchCommand::Samples {
            generator,
            prompt_tokens,
            samples,
            json,
        }) => bench_samples(global, generator, prompt_tokens, samples, json),
        Command::Bench(BenchCommand::Search {
            queries,
            limit,
            scale,
            json,
        }) => bench_search(global, &queries, limit, scale, json),
        Command::Bench(BenchCommand::Filter {
            queries,
            limit,
            chunks,
            json,
        }) => bench_filter(global, &queries, limit, chunks, json),
        Command::Key(command) => key(global, command),
        Command::Collection(command) => collection(global, command),
        Command::Import { files, prune, json } => import(global, &files, prune, json),
        Command::Embed => embed(global),
        Command::Serve {
            addr,
            generator,
            ingest_roots,
            audit_log,
            read_only,
            snapshot_dir,
            snapshot_every,
            watch,
        } => {
            let config = config(global, |c| {
                if let Some(addr) = addr {
                    c.server.addr = addr;
                }
                c.server.read_only |= read_only;
                if snapshot_dir.is_some() {
                    c.server.snapshot_dir = snapshot_dir;
                }
                if let Some(every) = snapshot_every {
                    c.server.snapshot_every_s = every;
                }
                if let Some(generator) = generator {
                    c.generator.model = Some(generator);
                }
                c.server.ingest_roots.extend(ingest_roots);
                c.server.watch.extend(watch);
            })?;
            let server = config.server.clone();
            let engine = Engine::open(config)?;
            if let Some(file) = audit_log {
                if server.read_only {
                    anyhow::bail!("--audit-log: a read-only server writes nothing to audit");
                }
                let file = lore::audit::set_file(engine.dir(), &file)
                    .with_context(|| format!("cannot use the audit log {}", file.display()))?;
                tracing::info!(file = %file.display(), "audit file");
            }
            lore::server::serve(engine, &server)?;
            Ok(())
        }
        Command::Snapshot { dir, json } => {
            let engine = match Engine::open_existing(config(global, |_| {})?) {
                Err(Error::IndexLocked { index }) => {
                    return Err(Error::Conflict(format!(
                        "another lore process holds {}: a server publishes snapshots itself \
                         (lore serve --snapshot-dir DIR --snapshot-every SECS)",
                        index.display()
                    ))
                    .into());
                }
                opened => opened?,
            };
            let report = engine.snapshot(&dir)?;
            if json {
                return print_json(&report);
            }
            println!(
                "{}: {} files, {:.1} MB in {:.1}s",
                report.path.display(),
                report.files,
                report.bytes as f64 / 1e6,
                report.seconds
            );
            Ok(())
        }
        Command::Status { json } => {
            let config = config(global, |_| {})?;
            let collection = one_collection(&config)?;
            let status = open_backend(config, true, CLI_ACTOR)?.status(&collection)?;
            if json {
                return print_json(&status);
            }
            println!("index        {}", status.index.display());
            println!("collection   {}", status.collection);
            println!("documents    {}", status.documents);
            println!("chunks       {}", status.chunks);
            println!("vectors      {}", status.vectors);
            println!("keyword docs {}", status.keyword_docs);
            println!("tombstones   {}", status.tombstones);
            println!(
                "embedder     {} (dim {})",
                status.embedder.id, status.embedder.dim
            );
            println!("model        {}", status.embedder.path.display());
            println!(
                "size         {:.1} MiB",
                status.index_bytes as f64 / 1048576.0
            );
            println!(
                "consistent   {}",
                if status.consistent { "yes" } else { "NO" }
            );
            Ok(())
        }
    }
}

/// Opens the configured index, writing as `actor`; when a running server
/// holds it, goes through that server instead of failing on the lock.
fn open_backend(config: Config, existing: bool, actor: &str) -> anyhow::Result<Arc<dyn Lore>> {
    let index = config.index.clone();
    let opened = if existing {
        Engine::open_existing(config)
    } else {
        Engine::open(config)
    };
    match opened {
        Ok(engine) => Ok(Arc::new(Local::new(
            Arc::new(engine),
            lore::engine::WriteScope::owner(actor),
        ))),
        Err(err @ lore::Error::IndexLocked { .. }) => {
            match lore::client::Remote::discover(&index) {
                Some(remote) => {
                    eprintln!(
                        "lore: {} is held by a running `lore serve`; going through it",
                        index.display()
                    );
                    Ok(Arc::new(remote))
                }
                None => Err(err.into()),
            }
        }
        Err(err) => Err(err.into()),
    }
}

fn ingest(global: &Global, args: IngestArgs) -> anyhow::Result<()> {
    if !args.watch.is_empty() {
        watch::hold_stop_signals();
    }
    let config = config(global, |c| {
        c.ingest.include.extend(args.include.iter().cloned());
        c.ingest.exclude.extend(args.exclude.iter().cloned());
        if let Some(bytes) = args.max_file_bytes {
            c.ingest.max_file_bytes = bytes;
        }
        if let Some(tokens) = args.chunk_tokens {
            c.chunk.max_tokens = tokens;
        }
        if let Some(overlap) = args.chunk_overlap {
            c.chunk.overlap_tokens = overlap;
        }
    })?;
    let collection = one_collection(&config)?;
    let (index, watching) = (config.index.clone(), config.watch.clone());
    let paths = [&args.paths[..], &args.watch[..]].concat();
    // A watching process writes as the watcher, its first pass included.
    let actor = if args.watch.is_empty() {
        CLI_ACTOR
    } else {
        lore::watch::WATCH_ACTOR
    };
    let backend = open_backend(config, false, actor).context("while opening the index")?;
    let progress = progress::IngestProgress::new();
    let report = backend
        .ingest(&collection, &paths, &progress)
        .context("while ingesting")?;
    progress.finish();
    if args.watch.is_empty() {
        print_ingest(&report, args.json)?;
        return Ok(());
    }
    if args.json {
        print_line(&serde_json::json!({ "ingest": report }))?;
    } else {
        print_ingest(&report, false)?;
    }
    watch::follow(
        backend,
        collection,
        &args.watch,
        index,
        &watching,
        args.json,
    )
}

fn print_ingest(report: &lore::IngestReport, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    println!(
        "{} files: {} added, {} updated, {} unchanged, {} removed, {} skipped; {} chunks embedded in {:.1}s",
        report.files_seen,
        report.added,
        report.updated,
        report.unchanged,
        report.removed,
        report.skipped.len(),
        report.chunks_embedded,
        report.seconds
    );
    Ok(())
}

fn search(global: &Global, args: SearchArgs) -> anyhow::Result<()> {
    let config = config(global, |_| {})?;
    let collections = config.collections();
    let backend = open_backend(config, true, CLI_ACTOR)?;
    let request = SearchRequest {
        filter: Filter::parse(&args.filter)?,
        collapse: args.collapse,
        collections,
        ..SearchRequest::new(args.query, args.k, args.mode.into())
    };
    let response = backend.search(&request)?;
    if args.json {
        return print_json(&response);
    }
    print_hits(&response);
    Ok(())
}

/// The configuration with `--generator`, when given, as the model.
fn with_generator(global: &Global, generator: Option<&String>) -> anyhow::Result<Config> {
    config(global, |c| {
        if let Some(model) = generator {
            c.generator.model = Some(model.clone());
        }
    })
}

fn ask(global: &Global, args: AskArgs) -> anyhow::Result<()> {
    let config = with_generator(global, args.generator.as_ref())?;
    let collections = config.collections();
    let backend = open_backend(config, true, CLI_ACTOR)?;
    let defaults = lore::generate::Sampling::default();
    let mut request = lore::AskRequest {
        k: args.k,
        collections,
        filter: Filter::parse(&args.filter)?,
        sampling: lore::generate::Sampling {
            temperature: args.temperature.unwrap_or(defaults.temperature),
            top_p: args.top_p.unwrap_or(defaults.top_p),
            seed: args.seed.unwrap_or(defaults.seed),
            max_tokens: args.max_tokens.unwrap_or(defaults.max_tokens),
            ..defaults
        },
        techniques: args.techniques.techniques(),
        ..lore::AskRequest::new(args.question.clone())
    };
    args.constraint.options()?.apply(&mut request)?;
    let stream = !args.json && !args.no_stream;
    let mut out = std::io::stdout();
    let mut on_text = |text: &str| {
        if stream {
            // A closed stdout (a pipe into `head`) stops generation.
            return out
                .write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .is_ok();
        }
        true
    };
    let response = backend.ask(&request, &mut on_text)?;
    if args.json {
        return print_json(&response);
    }
    if !stream {
        print!("{}", response.answer);
    }
    println!();
    print_sources(&response);
    if response.abstained {
        println!("(not in the documents)");
    }
    print_techniques(&response);
    if !response.invalid_citations.is_empty() {
        eprintln!(
            "lore: dropped citations to missing sources: {:?}",
            response.invalid_citations
        );
    }
    Ok(())
}

/// The cited sources, after an answer.
fn print_sources(response: &lore::AskResponse) {
    if response.citations.is_empty() {
        return;
    }
    println!("\nSources:");
    for c in &response.citations {
        let heading = if c.heading.is_empty() {
            String::new()
        } else {
            format!(" › {}", c.heading.join(" › "))
        };
        println!(
            "  [{}] {}{heading} [{}..{}]",
            c.n, c.path, c.byte_range.start, c.byte_range.end
        );
    }
}

/// What the techniques report, after the answer: quotes, reasoning, the
/// vote, reflection's verdict.
fn print_techniques(response: &lore::AskResponse) {
    if !response.quotes.is_empty() {
        println!("\nQuotes:");
        for q in &response.quotes {
            println!(
                "  [{}] \"{}\" ({} bytes {}..{})",
                q.n, q.text, q.path, q.range.start, q.range.end
            );
        }
    }
    if let Some(reasoning) = &response.reasoning {
        println!("\nReasoning:\n  {}", reasoning.replace('\n', "\n  "));
    }
    if !response.votes.is_empty() {
        println!("\nVotes:");
        for vote in &response.votes {
            println!("  {}× {}", vote.count, vote.answer.replace('\n', " "));
        }
    }
    if let Some(reflection) = &response.reflection {
        let verdict = match reflection.verdict {
            lore::engine::Verdict::Keep => "kept the draft",
            lore::engine::Verdict::Revise => "revised the draft",
            lore::engine::Verdict::Abstain => "found no answer in the sources",
        };
        println!("\nReflection {verdict}.");
        if reflection.verdict != lore::engine::Verdict::Keep {
            println!("  Draft: {}", reflection.draft.replace('\n', " "));
        }
    }
}

fn eval(global: &Global, args: EvalArgs) -> anyhow::Result<()> {
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
            c.index = eval_index_dir(&dir);
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
        results.push(lore::eval::evaluate(&engine, &data, mode, args.k.max(100))?);
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
fn questions_bar(len: usize, technique: &str) -> indicatif::ProgressBar {
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
fn eval_qa(global: &Global, args: &EvalArgs) -> anyhow::Result<()> {
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
        let report =
            lore::eval::qa::evaluate_qa(&engine, &items, technique, args.max_tokens, tick)?;
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

fn print_qa_row(row: &lore::eval::qa::QaRow) {
    let mark = |on: bool, c: char| if on { c } else { '-' };
    let marks: String = match row.kind.as_str() {
        "answerable" => [
            mark(row.fact, 'F'),
            mark(row.cited, 'C'),
            mark(row.retrieved, 'R'),
        ]
        .iter()
        .collect(),
        _ => format!("{}  ", mark(row.abstained, 'A')),
    };
    let answer: String = row.answer.split_whitespace().collect::<Vec<_>>().join(" ");
    let answer: String = answer.chars().take(90).collect();
    let support = row.support.map_or("    ".into(), |s| format!("{s:.2}"));
    println!(
        "{marks} {support} {:<10} {:?} -> {answer:?}",
        row.kind, row.question
    );
}

fn print_qa_table(reports: &[lore::eval::qa::QaReport]) {
    println!(
        "\n{:<14} {:>4} {:>6} {:>6} {:>9} {:>10} {:>4} {:>9} {:>4} {:>9} {:>8}",
        "technique",
        "n",
        "fact",
        "cited",
        "retrieved",
        "abst.wrong",
        "far",
        "abstained",
        "near",
        "abstained",
        "median s"
    );
    for r in reports {
        println!(
            "{:<14} {:>4} {:>5.0}% {:>5.0}% {:>8.0}% {:>9.0}% {:>4} {:>8.0}% {:>4} {:>8.0}% {:>8.1}",
            r.technique,
            r.answerable,
            r.fact * 100.0,
            r.cited * 100.0,
            r.retrieved * 100.0,
            r.wrongly_abstained * 100.0,
            r.far,
            r.far_abstained * 100.0,
            r.near,
            r.near_abstained * 100.0,
            r.median_seconds
        );
    }
    for r in reports {
        println!(
            "\n{}: withdrawing answers whose support is under a threshold\n{:>9} {:>10} {:>6} {:>9} {:>9} {:>9}",
            r.technique, "threshold", "abst.wrong", "fact", "far abst", "near abst", "precision"
        );
        for c in &r.calibration {
            println!(
                "{:>9.1} {:>9.0}% {:>5.0}% {:>8.0}% {:>8.0}% {:>8.0}%",
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

fn eval_answers(global: &Global, dir: &Path, args: EvalArgs) -> anyhow::Result<()> {
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
            c.index = eval_index_dir(dir);
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
fn eval_engine(config: Config, corpus: &[PathBuf]) -> anyhow::Result<Engine> {
    let collections = config.collections();
    let engine = Engine::open(config).context("while opening the evaluation index")?;
    for name in &collections {
        if !engine.has_collection(name) {
            engine.create_collection(name, None, &cli_scope())?;
        }
        let progress = progress::IngestProgress::new();
        engine
            .ingest(name, corpus, &cli_scope(), &progress)
            .context("while ingesting the corpus")?;
        progress.finish();
    }
    Ok(engine)
}

/// The one collection a command that changes or counts documents works on.
fn one_collection(config: &Config) -> anyhow::Result<String> {
    match config.collections().as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Error::InvalidRequest(format!(
            "this command works on one collection; --collection names {}",
            config.collection
        ))
        .into()),
    }
}

/// `lore import`: chunks with their vectors, file by file.
fn import(global: &Global, files: &[PathBuf], prune: bool, json: bool) -> anyhow::Result<()> {
    if prune && files.len() != 1 {
        return Err(Error::InvalidRequest(
            "--prune needs the rows in one input (concatenate the shards, or pipe them to `-`)"
                .into(),
        )
        .into());
    }
    let config = config(global, |_| {})?;
    let collection = one_collection(&config)?;
    let spool = config
        .index
        .join(format!("import-stdin-{}.jsonl", std::process::id()));
    let engine = Engine::open(config).context("while opening the index")?;
    let mut reports = Vec::new();
    for file in files {
        let _spooled = if file.as_os_str() == "-" {
            Some(Spool::stdin(&spool)?)
        } else {
            None
        };
        let file = if file.as_os_str() == "-" {
            &spool
        } else {
            file
        };
        let open = || -> lore::Result<Box<dyn std::io::BufRead>> {
            let opened = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
            Ok(Box::new(std::io::BufReader::new(opened)))
        };
        let progress = progress::IngestProgress::new();
        let report = engine
            .import(&collection, &open, prune, &cli_scope(), &progress)
            .with_context(|| format!("while importing {}", file.display()))?;
        progress.finish();
        if !json {
            println!(
                "{}: {} rows: {} documents added, {} updated, {} unchanged, {} removed; {} chunks written in {:.1}s",
                file.display(),
                report.rows,
                report.added,
                report.updated,
                report.unchanged,
                report.removed,
                report.chunks_written,
                report.seconds
            );
        }
        reports.push(report);
    }
    if json {
        return print_json(&reports);
    }
    Ok(())
}

fn embed(global: &Global) -> anyhow::Result<()> {
    let config = config(global, |_| {})?;
    let embedder = lore::embed::bert::BertEmbedder::load(
        &config.embedder_dir(),
        config.embedder.max_tokens,
        config.embedder.batch_size,
    )
    .context("while loading the embedder")?;
    let chunker = lore::chunk::Chunker::new(
        lore::embed::Embedder::sizer(&embedder)?,
        config.chunk.max_tokens,
        config.chunk.overlap_tokens,
    )?;
    let mut input = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let report = lore::engine::embed_documents(
        &embedder,
        &chunker,
        config.ingest.max_file_bytes as usize,
        &mut input,
        &mut out,
        &mut |line, reason| eprintln!("lore: embed: line {line}: {reason}"),
    )?;
    eprintln!(
        "lore: embed: {} documents, {} chunks in {:.1}s; {} lines skipped",
        report.documents, report.chunks, report.seconds, report.skipped
    );
    if report.skipped > 0 {
        return Err(SomeSkipped(report.skipped).into());
    }
    Ok(())
}

/// Standard input copied to a file, removed when dropped.
struct Spool(PathBuf);

impl Spool {
    fn stdin(path: &Path) -> anyhow::Result<Spool> {
        let mut file = std::fs::File::create(path)
            .with_context(|| format!("while spooling standard input to {}", path.display()))?;
        let spool = Spool(path.to_path_buf());
        std::io::copy(&mut std::io::stdin().lock(), &mut file)
            .context("while reading standard input")?;
        Ok(spool)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `lore collection`: create, list and drop the index's collections
/// (through a running server when one holds the index).
fn collection(global: &Global, command: CollectionCommand) -> anyhow::Result<()> {
    // Creating a collection may create the index; listing and dropping
    // need one.
    let existing = !matches!(command, CollectionCommand::Create { .. });
    let backend = open_backend(config(global, |_| {})?, existing, CLI_ACTOR)
        .context("while opening the index")?;
    match command {
        CollectionCommand::Create {
            name,
            embedder,
            json,
        } => {
            let embedder = embedder
                .map(|dir| {
                    dir.canonicalize()
                        .with_context(|| format!("embedder {}", dir.display()))
                })
                .transpose()?;
            let info = backend.create_collection(&name, embedder.as_deref())?;
            if json {
                return print_json(&info);
            }
            println!(
                "created collection {} ({}, dim {})",
                info.name, info.embedder, info.dim
            );
            Ok(())
        }
        CollectionCommand::List { json } => {
            let all = backend.collections()?;
            if json {
                return print_json(&all);
            }
            for c in all {
                println!(
                    "{:<24} {:>9} chunks  {} (dim {})",
                    c.name, c.chunks, c.embedder, c.dim
                );
            }
            Ok(())
        }
        CollectionCommand::Drop { name } => {
            let chunks = backend.drop_collection(&name)?;
            println!("dropped collection {name} ({chunks} chunks)");
            Ok(())
        }
    }
}

/// A per-dataset index in the user's cache, so `lore eval` never writes
/// into the dataset folder and reruns reuse the index.
fn eval_index_dir(dataset: &std::path::Path) -> PathBuf {
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
    cache.join("eval").join(format!("{name}-{}", &hash[..8]))
}

fn load_generator(
    global: &Global,
    generator: Option<String>,
) -> anyhow::Result<lore::generate::gguf::GgufGenerator> {
    let config = config(global, |c| {
        if generator.is_some() {
            c.generator.model = generator.clone();
        }
    })?;
    Ok(lore::generate::gguf::GgufGenerator::load(
        &config.generator_path(),
    )?)
}

/// The handbook's on-call pages, as benchmark text.
fn bench_text() -> anyhow::Result<String> {
    let mut text = String::new();
    for entry in std::fs::read_dir("corpora/handbook/docs/oncall")
        .context("while reading corpora/handbook")?
    {
        text.push_str(&std::fs::read_to_string(entry?.path()).unwrap_or_default());
    }
    Ok(text.repeat(4))
}

fn bench_constrained(
    global: &Global,
    generator: Option<String>,
    runs: usize,
    temperature: f64,
    json: bool,
) -> anyhow::Result<()> {
    let model = load_generator(global, generator)?;
    let result = lore::bench::constrained(&model, runs, temperature)?;
    if json {
        print_json(&result)?;
    } else {
        println!("{}", result.model);
        println!(
            "valid    {}/{} at temperature {}",
            result.valid, result.runs, result.temperature
        );
        for why in &result.invalid {
            println!("  invalid: {why}");
        }
        println!(
            "decode   {:.1} tokens/s constrained, {:.1} free: {:.2}×",
            result.constrained_tokens_per_s, result.free_tokens_per_s, result.ratio
        );
    }
    if result.valid < result.runs {
        anyhow::bail!(
            "{} outputs did not match the schema",
            result.runs - result.valid
        );
    }
    Ok(())
}

fn bench_samples(
    global: &Global,
    generator: Option<String>,
    prompt_tokens: usize,
    samples: usize,
    json: bool,
) -> anyhow::Result<()> {
    let model = load_generator(global, generator)?;
    let result = lore::bench::samples(&model, &bench_text()?, prompt_tokens, samples.max(1))?;
    if json {
        return print_json(&result);
    }
    println!("{} · {} prompt tokens", result.model, result.prompt_tokens);
    println!(
        "one answer   prompt {:>7.0} ms  decode {:>7.0} ms ({} tokens)",
        result.one_prompt_ms, result.one_decode_ms, result.one_tokens
    );
    println!(
        "{} samples    prompt {:>7.0} ms  decode {:>7.0} ms ({} tokens)",
        result.samples, result.many_prompt_ms, result.many_decode_ms, result.many_tokens
    );
    println!(
        "ratio        prompt {:.2}×  decode {:.2}×",
        result.prompt_ratio, result.decode_ratio
    );
    Ok(())
}

fn bench_generate(
    global: &Global,
    generator: Option<String>,
    prompt_tokens: usize,
    gen_tokens: usize,
    json: bool,
) -> anyhow::Result<()> {
    let model = load_generator(global, generator)?;
    let result = lore::bench::generate(&model, &bench_text()?, prompt_tokens, gen_tokens)?;
    if json {
        return print_json(&result);
    }
    println!("{}", result.model);
    println!(
        "prompt   {:>5} tokens {:>8.1} tokens/s",
        result.prompt_tokens, result.prompt_tokens_per_s
    );
    println!(
        "generate {:>5} tokens {:>8.1} tokens/s",
        result.gen_tokens, result.gen_tokens_per_s
    );
    println!(
        "time to first token {:.0} ms",
        result.time_to_first_token_ms
    );
    Ok(())
}

fn bench_search(
    global: &Global,
    queries: &std::path::Path,
    limit: usize,
    scale: usize,
    json: bool,
) -> anyhow::Result<()> {
    let engine = Engine::open_existing(config(global, |_| {})?)?;
    let queries = lore::bench::read_queries(queries, limit)?;
    let result = lore::bench::search(&engine, &queries, scale)?;
    if json {
        return print_json(&result);
    }
    let l = |name: &str, l: &lore::bench::Latency| {
        println!(
            "{name:<28} p50 {:>8.3} ms  p99 {:>8.3} ms  {:>9.1} queries/s",
            l.p50_ms, l.p99_ms, l.qps
        )
    };
    println!("{} queries", result.queries);
    l("search (hybrid, warm)", &result.search);
    let t = &result.stages;
    println!(
        "  mean per stage: embed {:.3} ms, dense {:.3} ms, bm25 {:.3} ms, total {:.3} ms",
        t.embed_ms, t.dense_ms, t.bm25_ms, t.total_ms
    );
    for (name, g) in std::iter::once(("index", &result.graph))
        .chain(result.scaled.as_ref().map(|g| ("synthetic", g)))
    {
        println!(
            "{name} graph: {} vectors, recall@10 {:.4} vs exact, {:.1}x faster (built in {:.1}s)",
            g.vectors, g.recall_at_10, g.speedup, g.build_seconds
        );
        l("  hnsw top-10", &g.hnsw);
        l("  exact top-10 (baseline)", &g.exact);
    }
    Ok(())
}

fn bench_filter(
    global: &Global,
    queries: &std::path::Path,
    limit: usize,
    chunks: usize,
    json: bool,
) -> anyhow::Result<()> {
    let engine = Engine::open_existing(config(global, |_| {})?)?;
    let queries = lore::bench::read_queries(queries, limit)?;
    let result = lore::bench::filter(&engine, chunks, &queries)?;
    if json {
        return print_json(&result);
    }
    println!(
        "{} chunks in {} documents from {} real chunks, built in {:.1}s; {} queries, hybrid, k = 10",
        result.chunks, result.documents, result.base_chunks, result.build_seconds, result.queries
    );
    for case in &result.cases {
        let l = &case.latency;
        let t = &case.stages;
        println!(
            "{:<28} p50 {:>8.3} ms  p99 {:>8.3} ms  {:>5.2}x unfiltered  {:.1} hits  \
             (mean: filter {:.1}, embed {:.1}, dense {:.1}, bm25 {:.1}, total {:.1} ms)",
            case.name,
            l.p50_ms,
            l.p99_ms,
            case.ratio,
            case.mean_hits,
            t.filter_ms,
            t.embed_ms,
            t.dense_ms,
            t.bm25_ms,
            t.total_ms
        );
    }
    println!(
        "a filtered search right after a write: {:.1} ms (median)",
        result.after_write_ms
    );
    Ok(())
}

fn bench_embed(
    global: &Global,
    corpus: &std::path::Path,
    n: usize,
    baseline: bool,
    dump: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let config = config(global, |_| {})?;
    let sizer_model = lore::embed::bert::BertEmbedder::load(
        &config.embedder_dir(),
        config.embedder.max_tokens,
        1,
    )?;
    let chunks = lore::bench::bench_chunks(&config, corpus, n, &sizer_model)?;
    drop(sizer_model);
    if let Some(path) = dump {
        std::fs::write(&path, serde_json::to_vec(&chunks)?)
            .with_context(|| format!("while writing {}", path.display()))?;
    }
    let result = lore::bench::embed(&config, &chunks, baseline)?;
    if json {
        return print_json(&result);
    }
    let line = |t: &lore::bench::Throughput| {
        println!(
            "{:<20} {:>5} chunks {:>7} tokens {:>7.2} s {:>8.2} chunks/s {:>9.1} tokens/s",
            t.backend, t.chunks, t.tokens, t.seconds, t.chunks_per_s, t.tokens_per_s
        )
    };
    println!("mean tokens per chunk: {:.1}", result.mean_tokens);
    line(&result.lore);
    if let Some(b) = &result.baseline {
        line(b);
    }
    if let Some(ratio) = result.ratio {
        println!("ratio lore/baseline: {ratio:.2}x");
    }
    Ok(())
}

fn print_hits(response: &SearchResponse) {
    if response.hits.is_empty() {
        println!("no hits");
    }
    for hit in &response.hits {
        let heading = if hit.heading.is_empty() {
            String::new()
        } else {
            format!(" › {}", hit.heading.join(" › "))
        };
        let found_by: Vec<&str> = hit
            .found_by
            .iter()
            .map(|r| match r {
                Retriever::Dense => "dense",
                Retriever::Bm25 => "bm25",
            })
            .collect();
        println!(
            "{}. {}{} [{}..{}] score {:.4} ({})",
            hit.rank,
            hit.path,
            heading,
            hit.byte_range.start,
            hit.byte_range.end,
            hit.score,
            found_by.join("+")
        );
        let snippet: String = hit.text.split_whitespace().collect::<Vec<_>>().join(" ");
        let snippet: String = snippet.chars().take(200).collect();
        println!("   {snippet}");
    }
    println!("({:.1} ms)", response.timings.total_ms);
}

/// `lore key`: the key store of the index directory (no index lock
/// needed, so it works while a server runs; the server sees changes at once).
fn key(global: &Global, command: KeyCommand) -> anyhow::Result<()> {
    let config = config(global, |_| {})?;
    let store = KeyStore::open(&config.index);
    match command {
        KeyCommand::Create {
            role,
            collections,
            groups,
            json,
        } => {
            let (key, secret) = store.create(CLI_ACTOR, role, collections, groups)?;
            if json {
                return print_json(&serde_json::json!({ "key": key, "secret": secret }));
            }
            println!("{secret}");
            eprintln!(
                "lore: created key {}: {}. The secret above is shown only this once.",
                key.id,
                key_summary(&key)
            );
            Ok(())
        }
        KeyCommand::List { json } => {
            let keys = store.list()?;
            if json {
                return print_json(&keys);
            }
            if keys.is_empty() {
                println!("no keys (LORE_API_KEYS may still configure some)");
            }
            for key in keys {
                println!("{}  {}", key.id, key_summary(&key));
            }
            Ok(())
        }
        KeyCommand::Revoke { id } => {
            let key = store.revoke(CLI_ACTOR, &id)?;
            println!("revoked key {} ({})", key.id, key.role);
            Ok(())
        }
    }
}

/// "write, collections a,b, groups sre" (groups "-" when none).
fn key_summary(key: &lore::keys::KeyRecord) -> String {
    let groups = if key.groups.is_empty() {
        "-".to_string()
    } else {
        key.groups.join(",")
    };
    format!(
        "{}, collections {}, groups {groups}",
        key.role,
        key.collections.join(",")
    )
}

/// One compact JSON line (a stream of events, `--watch --json`), flushed.
fn print_line<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}
