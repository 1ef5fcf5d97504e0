//! [`embed_documents`], the worker behind `lore embed`: documents in as JSON
//! lines (`{"path", "text" or "base64", "id"?, "metadata"?}`; `base64`
//! carries a file's raw bytes, for PDFs and other binary formats), chunked
//! and embedded
//! exactly as `lore ingest` would, out as the rows [`Engine::import`]
//! reads. It needs no index, so any number of workers (a Spark job's
//! executors) can run it side by side.
//!
//! `path` is the document's path as ingest would name it (its absolute,
//! canonical path, for the same ids); the text is read by the loader of its
//! extension (front matter, HTML, corpus files), so what `lore ingest` makes
//! of a file, this makes of its text. `id` replaces the document id the
//! path gives; `metadata` is merged over the front matter's. A bad line is
//! reported with its number and skipped; the rest go on.
//!
//! [`Engine::import`]: super::Engine::import

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::import::ImportRow;
use super::lines::Line;
use crate::chunk::{Chunker, embedding_input};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::ingest::load;
use crate::types::{DocId, Document, Metadata};

/// Chunks embedded per forward pass (as ingest batches them).
const BATCH: usize = 64;
/// Room on a line beyond its document: path, id, metadata, JSON syntax.
const MAX_LINE_OVERHEAD: usize = 1 << 20;

/// One input line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    path: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    base64: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    metadata: Metadata,
}

/// What [`embed_documents`] did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EmbedReport {
    /// Input lines read (blank ones not counted).
    pub lines: u64,
    /// Documents chunked and embedded.
    pub documents: u64,
    /// Rows written (one per chunk).
    pub chunks: u64,
    /// Lines skipped, each reported.
    pub skipped: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Reads documents from `input`, writes one import row per chunk to `out`;
/// `bad` hears each skipped line's number and reason. Only failures to
/// read, embed or write are errors.
pub fn embed_documents(
    embedder: &dyn Embedder,
    chunker: &Chunker,
    max_bytes: usize,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    bad: &mut dyn FnMut(u64, &str),
) -> Result<EmbedReport> {
    let start = std::time::Instant::now();
    let mut report = EmbedReport::default();
    let mut pending: Vec<(Document, Vec<crate::types::Chunk>)> = Vec::new();
    let mut queued = 0;
    // A document may come as base64 (4 bytes per 3) or as escaped JSON
    // text, with its metadata.
    let max_line = max_bytes
        .saturating_mul(2)
        .saturating_add(MAX_LINE_OVERHEAD);
    let mut number = 0;
    while let Some(line) =
        super::lines::next_line(input, max_line).map_err(|e| Error::io(Path::new("<input>"), e))?
    {
        number += 1;
        let parsed = match line {
            Line::TooLong(bytes) => Err(format!(
                "the line is {bytes} bytes, over the limit of {max_line} \
                 (twice ingest.max_file_bytes, plus metadata)"
            )),
            Line::Whole(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Whole(bytes) => String::from_utf8(bytes)
                .map_err(|_| "the line is not UTF-8".to_string())
                .and_then(|line| documents(&line, max_bytes)),
        };
        report.lines += 1;
        match parsed {
            Ok(docs) => {
                for doc in docs {
                    let chunks = chunker.chunk(&doc);
                    queued += chunks.len();
                    pending.push((doc, chunks));
                }
            }
            Err(reason) => {
                report.skipped += 1;
                bad(number, &reason);
            }
        }
        if queued >= BATCH {
            write_rows(embedder, std::mem::take(&mut pending), out, &mut report)?;
            queued = 0;
        }
    }
    write_rows(embedder, pending, out, &mut report)?;
    out.flush()
        .map_err(|e| Error::io(Path::new("<output>"), e))?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// The documents of one input line, or why there are none.
fn documents(line: &str, max_bytes: usize) -> std::result::Result<Vec<Document>, String> {
    let input: Input = serde_json::from_str(line).map_err(|e| format!("not a document: {e}"))?;
    if input.path.trim().is_empty() {
        return Err("\"path\" is empty".into());
    }
    let bytes = match (input.text, input.base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => {
            use base64::Engine as _;
            if encoded.len() / 4 * 3 > max_bytes {
                return Err(format!("the file is over the limit of {max_bytes} bytes"));
            }
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| format!("\"base64\" is not base64: {e}"))?
        }
        _ => return Err("give the document as one of \"text\" or \"base64\"".into()),
    };
    if bytes.len() > max_bytes {
        return Err(format!(
            "the document is {} bytes, over the limit of {max_bytes}",
            bytes.len()
        ));
    }
    let mut docs = load::load(Path::new(&input.path), &bytes, max_bytes)
        .map_err(|reason| format!("{}: {reason}", input.path))?;
    for doc in &mut docs {
        if let Some(id) = &input.id {
            doc.id = DocId(id.clone());
        }
        doc.metadata.extend(input.metadata.clone());
        crate::types::check_access(&doc.metadata)
            .map_err(|e| format!("{}: metadata: {e}", input.path))?;
    }
    Ok(docs)
}

/// Embeds the chunks of `docs` in one pass and writes their rows.
fn write_rows(
    embedder: &dyn Embedder,
    docs: Vec<(Document, Vec<crate::types::Chunk>)>,
    out: &mut dyn Write,
    report: &mut EmbedReport,
) -> Result<()> {
    let texts: Vec<String> = docs
        .iter()
        .flat_map(|(_, chunks)| chunks.iter().map(|c| embedding_input(&c.heading, &c.text)))
        .collect();
    if texts.is_empty() {
        return Ok(());
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut vectors = embedder.embed(&refs)?.into_iter();
    let io = |e: std::io::Error| Error::io(Path::new("<output>"), e);
    for (doc, chunks) in docs {
        let metadata = super::ingest::record_metadata(&doc);
        for chunk in chunks {
            let vector = vectors
                .next()
                .ok_or_else(|| Error::store("embed", "the embedder returned too few vectors"))?;
            let row = ImportRow {
                path: doc.path.clone(),
                text: chunk.text,
                vector,
                chunk_id: Some(chunk.id.0),
                doc_id: Some(doc.id.0.clone()),
                byte_range: Some(chunk.byte_range),
                heading: chunk.heading,
                title: doc.title.clone(),
                metadata: metadata.clone(),
            };
            serde_json::to_writer(&mut *out, &row).map_err(|e| Error::store("embed", e))?;
            out.write_all(b"\n").map_err(io)?;
            report.chunks += 1;
        }
        report.documents += 1;
    }
    Ok(())
}
