//! `lore serve`: the HTTP API until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use lore::Engine;

use super::{Global, config};
#[derive(Args)]
pub struct ServeArgs {
    /// Address to bind (config `server.addr`; default 127.0.0.1:8080).
    /// A non-loopback address needs API keys (LORE_API_KEYS).
    #[arg(long)]
    pub addr: Option<String>,
    /// `default`, `light`, `large`, `gemma`, or a GGUF path (env LORE_GENERATOR).
    #[arg(long)]
    pub generator: Option<String>,
    /// Folders `POST /v1/ingest` may read (repeatable; config
    /// `server.ingest_roots`).
    #[arg(long = "ingest-root", value_name = "DIR")]
    pub ingest_roots: Vec<std::path::PathBuf>,
    /// Make FILE this index's audit file: every write to the index,
    /// by this server or any other lore process (key changes,
    /// ingests, imports), is appended to it as one JSON line (time,
    /// pid, key id, collection, action, counts, ids), from now on.
    /// Recorded in `<index>/audit-log.path`; delete that to stop.
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Serve reads only (a replica of a snapshot): writes get a 403
    /// `read_only` (config `server.read_only`).
    #[arg(long)]
    pub read_only: bool,
    /// Publish a snapshot of the index into DIR at start and every
    /// --snapshot-every seconds (`DIR/current` links the newest, three
    /// are kept), for read replicas to copy.
    #[arg(long, value_name = "DIR")]
    pub snapshot_dir: Option<PathBuf>,
    /// Seconds between snapshots (config `server.snapshot_every_s`).
    #[arg(long, value_name = "SECS")]
    pub snapshot_every: Option<u64>,
    /// Follow this folder (inside an --ingest-root) and ingest its
    /// changes as they happen, into --collection (repeatable; config
    /// `server.watch`; timing `[watch]`). `/metrics` reports the lag.
    #[arg(long, value_name = "DIR")]
    pub watch: Vec<PathBuf>,
}

pub fn run(global: &Global, args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        addr,
        generator,
        ingest_roots,
        audit_log,
        read_only,
        snapshot_dir,
        snapshot_every,
        watch,
    } = args;
    let config = config(global, |c| {
        if let Some(addr) = addr {
            c.server.addr = addr;
        }
        c.server.read_only |= read_only;
        // A server goes on searching and writing while a merge builds.
        c.hnsw.background_merge = true;
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
