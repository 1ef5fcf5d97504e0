//! `lore ingest --watch`: after the first ingest, follow the folders and
//! apply each batch of changes (locally, or through the running server
//! that holds the index) until SIGINT or SIGTERM, then stop cleanly.

use std::path::PathBuf;
use std::sync::Arc;

use lore::Lore;
use lore::config::WatchConfig;
use lore::watch::{Batch, Watcher};

use super::print_line;

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts
/// from now on, so that [`wait_for_stop`] receives them instead of the
/// process dying mid-batch. Call before any other thread is started.
pub fn hold_stop_signals() {
    // SAFETY: sigset operations on a local set, then pthread_sigmask on
    // the calling thread; no memory is shared.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGINT or SIGTERM (held by [`hold_stop_signals`]).
fn wait_for_stop() {
    // SAFETY: as above; sigwait only writes the signal number.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let mut signal = 0;
        libc::sigwait(&set, &mut signal);
    }
}

/// Watches `folders` into `collection` until stopped, printing each batch.
pub fn follow(
    backend: Arc<dyn Lore>,
    collection: String,
    folders: &[PathBuf],
    index: PathBuf,
    config: &WatchConfig,
    json: bool,
) -> anyhow::Result<()> {
    let name = collection.clone();
    let writer = backend.clone();
    let apply = move |roots: &[PathBuf]| writer.ingest(&name, roots, &lore::NoProgress);
    let on_batch = move |batch: &Batch| print_batch(batch, json);
    let watcher = Watcher::start(
        folders,
        Some(&index),
        false,
        config,
        Box::new(apply),
        Box::new(on_batch),
    )?;
    if !json {
        eprintln!(
            "lore: watching {} folder(s) into '{collection}'; Ctrl-C stops",
            folders.len()
        );
    }
    wait_for_stop();
    drop(watcher);
    backend.checkpoint()?;
    if !json {
        eprintln!("lore: stopped watching");
    }
    Ok(())
}

fn print_batch(batch: &Batch, json: bool) {
    if json {
        let _ = print_line(&serde_json::json!({ "watch": batch }));
        return;
    }
    match (&batch.report, &batch.error) {
        (Some(r), _) => {
            for skipped in &r.skipped {
                eprintln!("lore: skipped {}: {}", skipped.path, skipped.reason);
            }
            println!(
                "watch: {} added, {} updated, {} removed, {} skipped; {} chunks embedded (lag {:.2}s)",
                r.added,
                r.updated,
                r.removed,
                r.skipped.len(),
                r.chunks_embedded,
                batch.lag_s
            );
        }
        (None, Some(error)) => eprintln!("lore: watch: {error}"),
        (None, None) => {}
    }
}
