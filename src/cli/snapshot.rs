//! `lore snapshot`: a consistent copy of the index in a new directory.

use std::path::PathBuf;

use clap::Args;
use lore::{Engine, Error};

use super::{Global, config, print_json};
#[derive(Args)]
pub struct SnapshotArgs {
    /// The new directory.
    pub dir: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &Global, args: SnapshotArgs) -> anyhow::Result<()> {
    let SnapshotArgs { dir, json } = args;
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
