//! `lore embed`: documents in, `import` rows out, exactly as ingest would
//! chunk and embed them (the worker of distributed ingest).

use anyhow::Context;

use super::{Global, SomeSkipped, config};
pub fn run(global: &Global) -> anyhow::Result<()> {
    let config = config(global, |_| {})?;
    // Documents in the precision a new index would embed them in.
    let int8 = lore::embed::bert::Int8 {
        queries: false,
        documents: config.embedder.int8_documents,
    };
    let embedder = lore::embed::bert::BertEmbedder::load_with(
        &config.embedder_dir(),
        config.embedder.max_tokens,
        config.embedder.batch_size,
        lore::embed::bert::Backend::Packed(int8),
    )
    .context("while loading the embedder")?;
    let chunker = lore::chunk::Chunker::new(
        lore::embed::Embedder::sizer(&embedder)?,
        config.chunk.max_tokens,
        config.chunk.overlap_tokens,
    )?;
    let mut input = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let report = lore::engine::embed_documents(
        &embedder,
        &chunker,
        config.ingest.max_file_bytes as usize,
        &mut input,
        &mut out,
        &mut |line, reason| eprintln!("lore: embed: line {line}: {reason}"),
    )?;
    eprintln!(
        "lore: embed: {} documents, {} chunks in {:.1}s; {} lines skipped",
        report.documents, report.chunks, report.seconds, report.skipped
    );
    if report.skipped > 0 {
        return Err(SomeSkipped(report.skipped).into());
    }
    Ok(())
}
