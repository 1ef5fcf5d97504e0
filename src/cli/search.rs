//! `lore search`: ranked hits, the retriever that found each, timings.

use clap::Args;
use lore::search::{Filter, Mode, Retriever, SearchRequest, SearchResponse};

use super::{CLI_ACTOR, Global, config, open_backend, print_json};
#[derive(Args)]
pub struct SearchArgs {
    /// The query.
    query: String,
    /// Number of hits.
    #[arg(short, default_value_t = 5)]
    k: usize,
    /// Retriever.
    #[arg(long, value_enum, default_value_t = Mode::Hybrid)]
    mode: Mode,
    /// Only documents matching KEY=VALUE (repeatable, all must match):
    /// path=PREFIX|GLOB, type=KIND|EXT, or any metadata key (tags=ops).
    #[arg(long, value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// At most one hit per document.
    #[arg(long)]
    collapse: bool,
    /// Print hits and timings as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: SearchArgs) -> anyhow::Result<()> {
    let config = config(global, |_| {})?;
    let collections = config.collections();
    let backend = open_backend(config, true, CLI_ACTOR)?;
    let request = SearchRequest {
        filter: Filter::parse(&args.filter)?,
        collapse: args.collapse,
        collections,
        ..SearchRequest::new(args.query, args.k, args.mode)
    };
    let response = backend.search(&request)?;
    if args.json {
        return print_json(&response);
    }
    print_hits(&response);
    Ok(())
}

pub fn print_hits(response: &SearchResponse) {
    if response.hits.is_empty() {
        println!("no hits");
    }
    for hit in &response.hits {
        let heading = if hit.heading.is_empty() {
            String::new()
        } else {
            format!(" › {}", hit.heading.join(" › "))
        };
        let found_by: Vec<&str> = hit
            .found_by
            .iter()
            .map(|r| match r {
                Retriever::Dense => "dense",
                Retriever::Bm25 => "bm25",
            })
            .collect();
        println!(
            "{}. {}{} [{}..{}] score {:.4} ({})",
            hit.rank,
            hit.path,
            heading,
            hit.byte_range.start,
            hit.byte_range.end,
            hit.score,
            found_by.join("+")
        );
        let snippet: String = hit.text.split_whitespace().collect::<Vec<_>>().join(" ");
        let snippet: String = snippet.chars().take(200).collect();
        println!("   {snippet}");
    }
    println!("({:.1} ms)", response.timings.total_ms);
}
