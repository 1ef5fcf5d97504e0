//! `lore collection create|list|drop`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::{CLI_ACTOR, Global, config, open_backend, print_json};
#[derive(Subcommand)]
pub enum CollectionCommand {
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

/// `lore collection`: create, list and drop the index's collections
/// (through a running server when one holds the index).
pub fn run(global: &Global, command: CollectionCommand) -> anyhow::Result<()> {
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
