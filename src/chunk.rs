//! Documents into chunks with text-splitter, sized in tokens of the
//! embedder's own tokenizer. Markdown (and HTML, which is rendered to
//! Markdown-style text) splits on its structure, code on its syntax tree where
//! a grammar is built in, everything else on sentences and words. Every chunk
//! keeps its byte range in the source and, for Markdown, its heading path.

use std::sync::Arc;

use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};
use text_splitter::{ChunkConfig, ChunkSizer, CodeSplitter, MarkdownSplitter, TextSplitter};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::types::{Chunk, ChunkId, DocKind, Document};

/// How chunk length is measured.
pub enum Sizer {
    /// Tokens of a tokenizer (special tokens excluded).
    Tokens(Box<Tokenizer>),
    /// Unicode scalar values; for fake embedders in tests.
    Chars,
}

impl Sizer {
    /// A sizer from a tokenizer, with truncation and padding switched off so
    /// counts are the real lengths.
    pub fn from_tokenizer(mut tokenizer: Tokenizer) -> Result<Sizer> {
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::Config(format!("tokenizer: {e}")))?;
        tokenizer.with_padding(None);
        Ok(Sizer::Tokens(Box::new(tokenizer)))
    }
}

/// A chunk counts as at least one token per this many bytes, so chunks
/// are bounded in bytes too: text with no spaces (10 MB that tokenizes to
/// one unknown token) is still cut into pieces of at most
/// `max_tokens × 16` bytes. Real text runs 3–6 bytes a token, so this
/// never decides its chunks.
const BYTES_PER_TOKEN: usize = 16;
/// Pieces longer than this are sized by bytes alone, never tokenized
/// whole while the splitter looks for cut points.
const TOKENIZE_BYTES: usize = 64 * 1024;

impl ChunkSizer for Sizer {
    fn size(&self, chunk: &str) -> usize {
        let by_bytes = chunk.len().div_ceil(BYTES_PER_TOKEN);
        match self {
            Sizer::Tokens(_) if chunk.len() > TOKENIZE_BYTES => by_bytes,
            Sizer::Tokens(tokenizer) => tokenizer.size(chunk).max(by_bytes),
            Sizer::Chars => chunk.chars().count(),
        }
    }
}

/// Cuts documents into chunks of at most `max_tokens` with `overlap_tokens`.
pub struct Chunker {
    sizer: Arc<Sizer>,
    max_tokens: usize,
    overlap_tokens: usize,
}

impl Chunker {
    /// A chunker; `overlap_tokens` must be below `max_tokens`.
    pub fn new(sizer: Sizer, max_tokens: usize, overlap_tokens: usize) -> Result<Chunker> {
        let chunker = Chunker {
            sizer: Arc::new(sizer),
            max_tokens,
            overlap_tokens,
        };
        chunker.config()?;
        Ok(chunker)
    }

    fn config(&self) -> Result<ChunkConfig<Arc<Sizer>>> {
        ChunkConfig::new(self.max_tokens)
            .with_sizer(self.sizer.clone())
            .with_overlap(self.overlap_tokens)
            .map_err(|e| Error::Config(format!("chunking: {e}")))
    }

    /// The chunks of `doc`, in text order.
    pub fn chunk(&self, doc: &Document) -> Vec<Chunk> {
        let pieces = self.split(doc);
        let headings = match doc.kind {
            DocKind::Markdown | DocKind::Html => markdown_headings(&doc.text),
            _ => Vec::new(),
        };
        let title: Vec<String> = match doc.kind {
            DocKind::Record => doc.title.iter().cloned().collect(),
            _ => Vec::new(),
        };
        pieces
            .into_iter()
            .map(|(start, text)| {
                let heading = if headings.is_empty() {
                    title.clone()
                } else {
                    heading_path(&headings, start)
                };
                let byte_range = doc.text_offset + start..doc.text_offset + start + text.len();
                Chunk {
                    id: ChunkId::new(&doc.id, &byte_range, text),
                    byte_range,
                    heading,
                    text: text.to_string(),
                }
            })
            .collect()
    }

    fn split<'t>(&self, doc: &'t Document) -> Vec<(usize, &'t str)> {
        // Validated in `new`, so building it again cannot fail.
        let Ok(config) = self.config() else {
            return Vec::new();
        };
        match doc.kind {
            DocKind::Markdown | DocKind::Html => MarkdownSplitter::new(config)
                .chunk_indices(&doc.text)
                .collect(),
            DocKind::Code => match doc.language.as_deref().and_then(grammar) {
                Some(language) => match CodeSplitter::new(language, config) {
                    Ok(splitter) => splitter.chunk_indices(&doc.text).collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "code grammar unusable; splitting as text");
                        self.split_text(&doc.text)
                    }
                },
                None => TextSplitter::new(config).chunk_indices(&doc.text).collect(),
            },
            _ => TextSplitter::new(config).chunk_indices(&doc.text).collect(),
        }
    }

    fn split_text<'t>(&self, text: &'t str) -> Vec<(usize, &'t str)> {
        match self.config() {
            Ok(config) => TextSplitter::new(config).chunk_indices(text).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Tree-sitter grammars compiled in.
fn grammar(language: &str) -> Option<tree_sitter_language::LanguageFn> {
    Some(match language {
        "rust" => tree_sitter_rust::LANGUAGE,
        "python" => tree_sitter_python::LANGUAGE,
        "go" => tree_sitter_go::LANGUAGE,
        "javascript" => tree_sitter_javascript::LANGUAGE,
        _ => return None,
    })
}

/// A heading: where it starts, its level (1–6) and its text.
type Heading = (usize, usize, String);

/// All headings of a Markdown text with their byte offsets.
fn markdown_headings(text: &str) -> Vec<Heading> {
    let mut headings = Vec::new();
    let mut current: Option<(usize, usize, String)> = None;
    for (event, range) in Parser::new(text).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                current = Some((range.start, level_number(level), String::new()))
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some((_, _, title)) = current.as_mut() {
                    title.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((start, level, title)) = current.take() {
                    headings.push((start, level, title.trim().to_string()));
                }
            }
            _ => {}
        }
    }
    headings
}

fn level_number(level: HeadingLevel) -> usize {
    level as usize
}

/// The heading path in force at byte `start`: outermost first.
fn heading_path(headings: &[Heading], start: usize) -> Vec<String> {
    let mut path: Vec<(usize, &str)> = Vec::new();
    for (offset, level, title) in headings {
        if *offset > start {
            break;
        }
        while path.last().is_some_and(|(l, _)| l >= level) {
            path.pop();
        }
        path.push((*level, title));
    }
    path.into_iter().map(|(_, t)| t.to_string()).collect()
}

/// The text the embedder sees for a chunk: its heading path, then the text.
pub fn embedding_input(chunk_heading: &[String], text: &str) -> String {
    if chunk_heading.is_empty() {
        text.to_string()
    } else {
        format!("{}\n\n{text}", chunk_heading.join(" > "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DocId, Metadata};
    use proptest::prelude::*;

    fn doc(kind: DocKind, text: &str, offset: usize) -> Document {
        Document {
            id: DocId::from_path("/x"),
            path: "/x".into(),
            file: "/x".into(),
            title: None,
            kind,
            language: None,
            text: text.into(),
            text_offset: offset,
            metadata: Metadata::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn markdown_chunks_know_their_heading_path() {
        let text = "# Guide\nintro\n## Install\nrun the installer please\n## Use\nrun it daily\n";
        let chunker = Chunker::new(Sizer::Chars, 30, 0).unwrap();
        let chunks = chunker.chunk(&doc(DocKind::Markdown, text, 0));
        let install = chunks
            .iter()
            .find(|c| c.text.contains("installer"))
            .unwrap();
        assert_eq!(install.heading, ["Guide", "Install"]);
        let usage = chunks.iter().find(|c| c.text.contains("daily")).unwrap();
        assert_eq!(usage.heading, ["Guide", "Use"]);
    }

    #[test]
    fn ranges_point_into_the_source_file() {
        let d = doc(DocKind::Text, "alpha beta gamma delta", 10);
        let chunker = Chunker::new(Sizer::Chars, 11, 0).unwrap();
        for chunk in chunker.chunk(&d) {
            let in_text =
                chunk.byte_range.start - d.text_offset..chunk.byte_range.end - d.text_offset;
            assert_eq!(&d.text[in_text], chunk.text);
        }
    }

    #[test]
    fn rust_code_splits_on_items() {
        let mut d = doc(
            DocKind::Code,
            "fn a() {\n    1\n}\n\nfn b() {\n    2\n}\n",
            0,
        );
        d.language = Some("rust".into());
        let chunker = Chunker::new(Sizer::Chars, 20, 0).unwrap();
        let chunks = chunker.chunk(&d);
        assert_eq!(chunks.len(), 2);
        assert!(chunks[0].text.starts_with("fn a"));
        assert!(chunks[1].text.starts_with("fn b"));
    }

    proptest! {
        #[test]
        fn chunks_cover_text_in_order_on_char_boundaries(text in "[a-zé #\n]{0,400}", max in 5usize..60) {
            let d = doc(DocKind::Markdown, &text, 0);
            let chunker = Chunker::new(Sizer::Chars, max, 0).unwrap();
            let chunks = chunker.chunk(&d);
            let mut last_end = 0;
            for chunk in &chunks {
                prop_assert!(chunk.byte_range.start >= last_end);
                prop_assert!(text.is_char_boundary(chunk.byte_range.start));
                prop_assert!(text.is_char_boundary(chunk.byte_range.end));
                prop_assert_eq!(&text[chunk.byte_range.clone()], chunk.text.as_str());
                // Everything between chunks is whitespace: no text is lost.
                prop_assert!(text[last_end..chunk.byte_range.start].trim().is_empty());
                last_end = chunk.byte_range.end;
            }
            prop_assert!(text[last_end..].trim().is_empty());
        }
    }
}
