//! `lore remove`: a file, a folder's files or a document id out of the
//! index.

use anyhow::Context;
use clap::Args;

use super::{CLI_ACTOR, Global, config, one_collection, open_backend, print_json};
#[derive(Args)]
pub struct RemoveArgs {
    /// Path of an ingested file or folder, or a document id.
    pub target: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &Global, args: RemoveArgs) -> anyhow::Result<()> {
    let RemoveArgs { target, json } = args;
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
