//! The smallest lore program: ingest a folder, ask one question, stream
//! the answer, list its sources.
//!
//! ```text
//! cargo run --release --example ask -- corpora/handbook/docs "How quickly must a SEV1 page be acknowledged?"
//! ```
//!
//! Settings come from `lore.toml` and `LORE_*` variables as for the CLI
//! (`LORE_GENERATOR=light` picks the small model); the index goes to a
//! temporary folder unless `LORE_INDEX` names one.

use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let folder = args.next().ok_or("usage: ask FOLDER QUESTION")?;
    let question = args.next().ok_or("usage: ask FOLDER QUESTION")?;

    let mut config = lore::Config::load(None)?;
    let scratch = std::env::temp_dir().join(format!("lore-example-ask-{}", std::process::id()));
    if std::env::var_os("LORE_INDEX").is_none() {
        config.index = scratch.clone();
    }
    let engine = lore::Engine::open(config)?;

    let report = engine.ingest(
        lore::DEFAULT_COLLECTION,
        &[folder.into()],
        &lore::WriteScope::owner("ask-example"),
        &lore::NoProgress,
    )?;
    eprintln!(
        "ingested {} files ({} chunks) in {:.1}s",
        report.added + report.updated + report.unchanged,
        report.chunks_embedded,
        report.seconds
    );

    let request = lore::AskRequest::new(question);
    let response = engine.ask(&request, &mut |text| {
        print!("{text}");
        std::io::stdout().flush().is_ok()
    })?;
    println!();
    for c in &response.citations {
        println!("[{}] {}", c.n, c.path);
    }

    drop(engine);
    let _ = std::fs::remove_dir_all(&scratch);
    if response.answer.trim().is_empty() {
        return Err("the model gave no answer".into());
    }
    Ok(())
}
