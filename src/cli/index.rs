//! `lore index rebuild`: refill a collection's derived stores from sled.

use clap::Subcommand;
use lore::{Engine, Error};

use super::{Global, config, print_json};
#[derive(Subcommand)]
pub enum IndexCommand {
    /// Refill the vector index (the embedded graph, or the collection's
    /// Milvus collection, made anew) and the keyword index of the
    /// collection (--collection) from its doc store, the truth. Writes
    /// wait meanwhile; stop a server that holds the index first.
    Rebuild {
        /// Print the collection's status after, as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(global: &Global, command: IndexCommand) -> anyhow::Result<()> {
    let IndexCommand::Rebuild { json } = command;
    let config = config(global, |_| {})?;
    let collection = config.collection.clone();
    let engine = match Engine::open_existing(config) {
        Err(Error::IndexLocked { index }) => {
            return Err(Error::Conflict(format!(
                "another lore process holds {}: stop it before rebuilding",
                index.display()
            ))
            .into());
        }
        opened => opened?,
    };
    let status = engine.rebuild(&collection)?;
    if json {
        return print_json(&status);
    }
    println!(
        "rebuilt collection {collection}: {} chunks, {} vectors, {} keyword entries; consistent: {}",
        status.chunks,
        status.vectors,
        status.keyword_docs,
        if status.consistent { "yes" } else { "no" }
    );
    Ok(())
}
