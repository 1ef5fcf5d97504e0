//! `lore status`: what the index holds and whether its stores agree.

use clap::Args;

use super::{CLI_ACTOR, Global, config, one_collection, open_backend, print_json};
#[derive(Args)]
pub struct StatusArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &Global, args: StatusArgs) -> anyhow::Result<()> {
    let StatusArgs { json } = args;
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
        "embedder     {} (dim {}, documents in {})",
        status.embedder.id, status.embedder.dim, status.embedder.documents
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
