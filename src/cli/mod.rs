//! Command-line front end: flags (clap), configuration layering, logging
//! and rendering. What works on an index held by a running server goes
//! through [`lore::Lore`], chosen once in `open_backend`; the rest (serve,
//! import, snapshot, bench, eval) through [`lore::Engine`].

mod ask;
mod bench;
mod chat;
mod collection;
mod doctor;
mod embed;
mod eval;
mod import;
mod index;
mod ingest;
mod key;
mod mcp;
mod progress;
mod remove;
mod search;
mod serve;
mod snapshot;
mod status;
mod watch;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
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
    Ingest(ingest::IngestArgs),
    /// Import chunks embedded elsewhere: JSON lines, one chunk per line
    /// ({"path", "text", "vector", optional "chunk_id", "doc_id",
    /// "byte_range", "heading", "title", "metadata"}), a document's rows
    /// consecutive. Every row is checked first; a bad one fails the import
    /// with its line number and nothing is written. Unchanged documents
    /// are skipped.
    Import(import::ImportArgs),
    /// Chunk and embed documents exactly as `ingest` would, without an
    /// index: JSON lines on standard input ({"path", "text", optional "id",
    /// "metadata"}; `path` as ingest names the file, for the same ids),
    /// `import` rows on standard output. The worker of distributed ingest
    /// (scripts/spark/). A bad line is reported on stderr with its number
    /// and skipped; the exit code is then 3.
    Embed,
    /// Remove a file, a folder or a document id from the index.
    Remove(remove::RemoveArgs),
    /// Search the index.
    Search(search::SearchArgs),
    /// Answer a question from the documents, citing them as [n].
    Ask(ask::AskArgs),
    /// Summarize one document (a path or an id), whole: a long one is read
    /// part by part and the parts' summaries combined, every point cited.
    Summarize(ask::SummarizeArgs),
    /// Retrieval quality on a BEIR-layout folder (corpus.jsonl, queries.jsonl,
    /// qrels/<split>.tsv): nDCG@10, Recall@10, Recall@100, MRR@10. The corpus
    /// is ingested into a cached index (~/.cache/lore/eval/...) unless --index
    /// is given; reruns reuse it.
    Eval(eval::EvalArgs),
    /// Measure speed against a baseline run side by side.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Serve the HTTP API (search, ask, documents, OpenAI-compatible chat,
    /// models and embeddings) until SIGINT/SIGTERM.
    Serve(serve::ServeArgs),
    /// Serve lore's tools (search, ask, get_passage, get_document,
    /// list_collections) and documents to an assistant or IDE over the Model
    /// Context Protocol on stdin and stdout, as the local user. A running
    /// `lore serve` offers the same at POST /mcp, behind its keys.
    Mcp,
    /// Talk with the documents: an interactive session where follow-up
    /// questions ("and for SEV2?") are understood from the earlier turns.
    /// Type /sources for the last answer's retrieved chunks, /reset to
    /// start over, /quit (or Ctrl-D) to leave.
    Chat(chat::ChatArgs),
    /// Write a consistent, self-contained copy of the index (every
    /// collection, the key store) to a new directory. Writes wait while it
    /// is copied. When a server holds the index, use `lore serve
    /// --snapshot-dir` instead.
    Snapshot(snapshot::SnapshotArgs),
    /// Maintain the index of a collection (--collection).
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Manage API keys (kept hashed in the index directory's keys.json).
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Manage the collections of the index (each with its own documents,
    /// vectors, keyword index and embedder).
    #[command(subcommand)]
    Collection(collection::CollectionCommand),
    /// Show what the index holds and whether its stores agree.
    Status(status::StatusArgs),
    /// Check the models (pinned checksums), the index (each collection's
    /// stores agree), the configuration (each value and where it came
    /// from), the CPU features the kernels use and the server's address and
    /// keys; print what to fix. Exit 1 when something must be fixed.
    Doctor(doctor::DoctorArgs),
}

/// Parses the command line, runs it and maps the outcome to an exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // A server's log is its operators' record, audit events included; at a
    // terminal they belong in the audit file (and `-v`), not between a
    // progress bar and its summary.
    let audit = matches!(cli.command, Command::Serve(_));
    init_logging(cli.global.verbose, cli.global.log_json, audit);
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

/// Logs to stderr, filtered by -v / `LORE_LOG`; audit events also at the
/// default level when `audit`.
fn init_logging(verbose: u8, json: bool, audit: bool) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let audit = if audit {
        format!(",{}=info", lore::audit::TARGET)
    } else {
        String::new()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LORE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default}{audit},hnsw_rs=warn,tantivy=warn"))
    });
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let stderr = if json {
        stderr.json().with_filter(filter).boxed()
    } else {
        stderr.with_filter(filter).boxed()
    };
    let parts = progress::PartLines.with_filter(
        tracing_subscriber::filter::Targets::new()
            .with_target(lore::engine::PROGRESS_TARGET, tracing::Level::INFO),
    );
    tracing_subscriber::registry()
        .with(stderr)
        .with(parts)
        .init();
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
    }
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(threads) = config.threads {
        pool = pool.num_threads(threads);
    }
    pool.start_handler(|_| lore::sched::short_slice())
        .build_global()
        .context("while starting the worker pool")?;
    Ok(config)
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    let global = &cli.global;
    match cli.command {
        Command::Ingest(args) => ingest::run(global, args),
        Command::Import(args) => import::run(global, args),
        Command::Embed => embed::run(global),
        Command::Remove(args) => remove::run(global, args),
        Command::Search(args) => search::run(global, args),
        Command::Ask(args) => ask::run(global, args),
        Command::Summarize(args) => ask::summarize(global, args),
        Command::Chat(args) => chat::run(global, args),
        Command::Eval(args) => eval::run(global, args),
        Command::Bench(command) => bench::run(global, command),
        Command::Serve(args) => serve::run(global, args),
        Command::Mcp => mcp::run(global),
        Command::Snapshot(args) => snapshot::run(global, args),
        Command::Index(command) => index::run(global, command),
        Command::Key(command) => key::run(global, command),
        Command::Collection(command) => collection::run(global, command),
        Command::Status(args) => status::run(global, args),
        Command::Doctor(args) => doctor::run(global, args),
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
