//! `lore ingest`: files and folders into the index, with progress; with
//! `--watch`, then follows them.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{
    CLI_ACTOR, Global, config, one_collection, open_backend, print_json, print_line, progress,
    watch,
};
#[derive(Args)]
pub struct IngestArgs {
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

pub fn run(global: &Global, args: IngestArgs) -> anyhow::Result<()> {
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
    let progress = progress::IngestProgress::new(args.json);
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
