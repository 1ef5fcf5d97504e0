//! `lore import`: chunks embedded elsewhere, checked row by row, into the
//! index.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use lore::{Engine, Error};

use super::{Global, cli_scope, config, one_collection, print_json, progress};
#[derive(Args)]
pub struct ImportArgs {
    /// JSONL files (`-`: standard input, spooled to a temporary file
    /// in the index directory, as rows are read twice).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The rows are everything imported: remove imported documents
    /// they no longer hold (ingested documents are never touched).
    /// Needs a single input.
    #[arg(long)]
    pub prune: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `lore import`: chunks with their vectors, file by file.
pub fn run(global: &Global, args: ImportArgs) -> anyhow::Result<()> {
    let ImportArgs { files, prune, json } = args;
    let files = &files[..];
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
        let progress = progress::IngestProgress::new(json);
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

/// Standard input copied to a file, removed when dropped.
pub struct Spool(PathBuf);

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
