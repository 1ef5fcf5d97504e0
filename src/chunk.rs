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
/// Texts up to this size are tokenized once for [`TextSizer`] (about
/// 20 MB of tokens at most); longer ones have their pieces tokenized one
/// by one, so memory stays bounded whatever a file holds.
const TOKENIZE_TEXT_BYTES: usize = 1024 * 1024;

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

/// A [`Sizer`] for the pieces of one text: with a BERT tokenizer the text
/// is tokenized once, and a piece that starts and ends between words is
/// sized by counting the text's tokens inside it. BERT splits words at
/// spaces and punctuation and then cuts each word alone, so that count is
/// what tokenizing the piece gives; any other piece, or tokenizer, is
/// tokenized as before. The splitter sizes each stretch of text many times
/// over while it looks for cut points, so this is most of its work saved.
struct TextSizer<'a> {
    sizer: &'a Sizer,
    /// The text's address: pieces are slices of it.
    base: usize,
    len: usize,
    tokens: Option<TextTokens>,
}

/// The tokens of a text, in order: byte spans and whether each starts or
/// ends its word.
struct TextTokens {
    starts: Vec<usize>,
    ends: Vec<usize>,
    word_start: Vec<bool>,
    word_end: Vec<bool>,
}

impl<'a> TextSizer<'a> {
    fn new(sizer: &'a Sizer, text: &str) -> TextSizer<'a> {
        let tokens = match sizer {
            Sizer::Tokens(tokenizer)
                if text.len() <= TOKENIZE_TEXT_BYTES && counts_by_word(tokenizer) =>
            {
                TextTokens::new(tokenizer, text)
            }
            _ => None,
        };
        TextSizer {
            sizer,
            base: text.as_ptr() as usize,
            len: text.len(),
            tokens,
        }
    }

    /// The piece's size read off the text's tokens, when it is exact.
    fn counted(&self, piece: &str) -> Option<usize> {
        let tokens = self.tokens.as_ref()?;
        let start = (piece.as_ptr() as usize).checked_sub(self.base)?;
        let end = start + piece.len();
        (end <= self.len).then_some(())?;
        tokens.count(start, end)
    }
}

impl ChunkSizer for TextSizer<'_> {
    fn size(&self, chunk: &str) -> usize {
        if chunk.len() > TOKENIZE_BYTES {
            return self.sizer.size(chunk);
        }
        match self.counted(chunk) {
            Some(count) => count.max(chunk.len().div_ceil(BYTES_PER_TOKEN)),
            None => self.sizer.size(chunk),
        }
    }
}

/// Whether a piece's tokens are the text's tokens inside it whenever the
/// piece starts and ends between words: BERT's pre-tokenizer, WordPiece,
/// and a normalizer that works a character at a time.
fn counts_by_word(tokenizer: &Tokenizer) -> bool {
    use tokenizers::{ModelWrapper, NormalizerWrapper, PreTokenizerWrapper};
    matches!(tokenizer.get_model(), ModelWrapper::WordPiece(_))
        && matches!(
            tokenizer.get_pre_tokenizer(),
            Some(PreTokenizerWrapper::BertPreTokenizer(_))
        )
        && matches!(
            tokenizer.get_normalizer(),
            None | Some(NormalizerWrapper::BertNormalizer(_))
        )
}

impl TextTokens {
    /// The text's tokens; `None` when the text does not tokenize (the
    /// pieces are then tokenized one by one, as before).
    fn new(tokenizer: &Tokenizer, text: &str) -> Option<TextTokens> {
        let encoding = tokenizer.encode(text, false).ok()?;
        let words = encoding.get_word_ids();
        let word = |i: usize| words.get(i).copied().flatten();
        let n = encoding.len();
        Some(TextTokens {
            starts: encoding.get_offsets().iter().map(|o| o.0).collect(),
            ends: encoding.get_offsets().iter().map(|o| o.1).collect(),
            word_start: (0..n).map(|i| i == 0 || word(i) != word(i - 1)).collect(),
            word_end: (0..n)
                .map(|i| i + 1 == n || word(i) != word(i + 1))
                .collect(),
        })
    }

    /// Tokens inside `start..end`, when no token or word crosses either
    /// edge (else `None`).
    fn count(&self, start: usize, end: usize) -> Option<usize> {
        let first = self.starts.partition_point(|&s| s < start);
        let past = self.ends.partition_point(|&e| e <= end);
        let clean_start = first == 0 || self.ends[first - 1] <= start;
        let clean_end = past == self.starts.len() || self.starts[past] >= end;
        if !(clean_start && clean_end) {
            return None;
        }
        if past <= first {
            return Some(0);
        }
        (self.word_start[first] && self.word_end[past - 1]).then_some(past - first)
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
        chunker.config(&*chunker.sizer)?;
        Ok(chunker)
    }

    fn config<S: ChunkSizer>(&self, sizer: S) -> Result<ChunkConfig<S>> {
        ChunkConfig::new(self.max_tokens)
            .with_sizer(sizer)
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
            DocKind::Record => doc.title.iter().map(|t| clipped(t)).collect(),
            _ => Vec::new(),
        };
        let mut paths = HeadingPaths::new(&headings);
        let chunks: Vec<Chunk> = pieces
            .into_iter()
            .map(|(start, text)| {
                let heading = if headings.is_empty() {
                    title.clone()
                } else {
                    paths.at(start)
                };
                let byte_range = doc.text_offset + start..doc.text_offset + start + text.len();
                Chunk {
                    id: ChunkId::new(&doc.id, &byte_range, text),
                    byte_range,
                    heading,
                    text: text.to_string(),
                }
            })
            .collect();
        without_bare_headings(chunks)
    }

    fn split<'t>(&self, doc: &'t Document) -> Vec<(usize, &'t str)> {
        if matches!(doc.kind, DocKind::Markdown | DocKind::Html) {
            return self.split_markdown(&doc.text);
        }
        // Validated in `new`, so building it again cannot fail.
        let Ok(config) = self.config(TextSizer::new(&self.sizer, &doc.text)) else {
            return Vec::new();
        };
        match doc.kind {
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

    /// Markdown split a window at a time (see [`windows`]).
    fn split_markdown<'t>(&self, text: &'t str) -> Vec<(usize, &'t str)> {
        let mut pieces = Vec::new();
        for (offset, window) in windows(text) {
            let Ok(config) = self.config(TextSizer::new(&self.sizer, window)) else {
                continue;
            };
            let splitter = MarkdownSplitter::new(config);
            let chunks = splitter.chunk_indices(window);
            pieces.extend(chunks.map(|(at, chunk)| (offset + at, chunk)));
        }
        pieces
    }

    fn split_text<'t>(&self, text: &'t str) -> Vec<(usize, &'t str)> {
        match self.config(TextSizer::new(&self.sizer, text)) {
            Ok(config) => TextSplitter::new(config).chunk_indices(text).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// `chunks` less those that hold nothing but headings which the next chunk
/// carries in its heading path. The splitter cuts a heading from its
/// section when the two do not fit together; alone, the heading takes one
/// of the few places in a prompt and says nothing its section's chunk does
/// not (every chunk is embedded and shown with its heading path).
fn without_bare_headings(chunks: Vec<Chunk>) -> Vec<Chunk> {
    let mut kept: Vec<Chunk> = Vec::with_capacity(chunks.len());
    let mut chunks = chunks.into_iter().peekable();
    while let Some(chunk) = chunks.next() {
        let carried = chunks
            .peek()
            .is_some_and(|next| headings_carried(&chunk.text, &next.heading));
        if !carried {
            kept.push(chunk);
        }
    }
    kept
}

/// Whether `text` is only Markdown headings, each of them in `path`.
fn headings_carried(text: &str, path: &[String]) -> bool {
    let bare = text.lines().all(|line| {
        let line = line.trim();
        let hashes = line.len() - line.trim_start_matches('#').len();
        line.is_empty() || ((1..=6).contains(&hashes) && line[hashes..].starts_with(' '))
    });
    if !bare {
        return false;
    }
    let headings = markdown_headings(text);
    !headings.is_empty() && headings.iter().all(|(_, _, title)| path.contains(title))
}

/// The most Markdown given to the splitter at once. text-splitter's
/// Markdown splitter takes time that grows with the square of the sections
/// it is given (10,000 one-word sections: 1 s; 40,000: 16 s), so a hostile
/// file of tiny sections would hold a worker for hours; cut into windows,
/// its time grows with its length. Ordinary pages fit in one window and
/// are split as a whole.
const WINDOW_BYTES: usize = 64 * 1024;

/// `text` cut into windows of at most [`WINDOW_BYTES`], each with its
/// offset: at the last heading of a window's second half, else its last
/// blank line, else its last line break, else wherever a character ends.
fn windows(text: &str) -> Vec<(usize, &str)> {
    let mut windows = Vec::new();
    let mut start = 0;
    while text.len() - start > WINDOW_BYTES {
        let mut end = start + WINDOW_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut half = start + WINDOW_BYTES / 2;
        while !text.is_char_boundary(half) {
            half -= 1;
        }
        let tail = &text[half..end];
        let cut = last_heading(tail)
            .or_else(|| tail.rfind("\n\n").map(|at| at + 2))
            .or_else(|| tail.rfind('\n').map(|at| at + 1))
            .map_or(end, |at| half + at);
        windows.push((start, &text[start..cut]));
        start = cut;
    }
    windows.push((start, &text[start..]));
    windows
}

/// Where the last line of `text` that opens a Markdown heading starts
/// (never at 0: a window holds at least one line).
fn last_heading(text: &str) -> Option<usize> {
    text.rmatch_indices("\n#")
        .map(|(at, _)| at + 1)
        .find(|&at| {
            let line = &text[at..];
            let hashes = line.len() - line.trim_start_matches('#').len();
            (1..=6).contains(&hashes) && line[hashes..].starts_with([' ', '\t', '\n'])
        })
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
            // A placeholder such as `<date>` in `--prune=<date>` reads as
            // inline HTML; it is part of the heading's words.
            Event::Text(t) | Event::Code(t) | Event::InlineHtml(t) => {
                if let Some((_, _, title)) = current.as_mut() {
                    title.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((start, level, title)) = current.take() {
                    headings.push((start, level, clipped(title.trim())));
                }
            }
            _ => {}
        }
    }
    headings
}

/// Longest heading kept, in bytes. Every chunk of a section carries its
/// heading path, so a hostile page's 5 MB heading (or `<dt>`) would
/// otherwise be copied into each of its thousands of chunks.
const MAX_HEADING_BYTES: usize = 200;

/// `title` cut to [`MAX_HEADING_BYTES`] at a character boundary, marked
/// with `…` when cut.
fn clipped(title: &str) -> String {
    if title.len() <= MAX_HEADING_BYTES {
        return title.to_string();
    }
    let mut end = MAX_HEADING_BYTES;
    while !title.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &title[..end])
}

fn level_number(level: HeadingLevel) -> usize {
    level as usize
}

/// The heading paths in force at a text's chunk starts, read in one pass
/// over its headings as the starts go up (a page with 100,000 headings and
/// as many chunks must not cost 10^10 steps).
struct HeadingPaths<'h> {
    headings: &'h [Heading],
    /// Headings read so far.
    next: usize,
    /// The path they make: each heading's level and title.
    path: Vec<(usize, &'h str)>,
}

impl<'h> HeadingPaths<'h> {
    fn new(headings: &'h [Heading]) -> HeadingPaths<'h> {
        HeadingPaths {
            headings,
            next: 0,
            path: Vec::new(),
        }
    }

    /// The heading path in force at byte `start`: outermost first. A start
    /// before the last one reads the headings again from the top.
    fn at(&mut self, start: usize) -> Vec<String> {
        if self.next > 0 && self.headings[self.next - 1].0 > start {
            *self = HeadingPaths::new(self.headings);
        }
        while let Some((offset, level, title)) = self.headings.get(self.next) {
            if *offset > start {
                break;
            }
            while self.path.last().is_some_and(|(l, _)| l >= level) {
                self.path.pop();
            }
            self.path.push((*level, title));
            self.next += 1;
        }
        self.path.iter().map(|(_, t)| t.to_string()).collect()
    }
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
    fn a_definition_terms_chunks_carry_its_name_placeholders_included() {
        let html = "<h2>OPTIONS</h2><dl><dt>--prune=&lt;date&gt;</dt><dd><p>Prune loose \
                    objects older than date.</p></dd><dt>--auto</dt><dd><p>Check whether \
                    housekeeping is required.</p></dd></dl>";
        let docs =
            crate::ingest::load::load(std::path::Path::new("/x/gc.html"), html.as_bytes(), 1 << 20)
                .unwrap();
        let chunker = Chunker::new(Sizer::Chars, 60, 0).unwrap();
        let chunks = chunker.chunk(&docs[0]);
        let heading_of = |word: &str| {
            chunks
                .iter()
                .find(|c| c.text.contains(word))
                .map(|c| c.heading.clone())
                .unwrap()
        };
        assert_eq!(heading_of("Prune"), ["OPTIONS", "--prune=<date>"]);
        assert_eq!(heading_of("housekeeping"), ["OPTIONS", "--auto"]);
    }

    #[test]
    fn a_heading_cut_from_its_section_is_not_a_chunk_of_its_own() {
        let body = "The default is four gigabytes and it only guides the planner.";
        let text = format!(
            "# Settings\n\n## cache_size (integer)\n\n{body}\n\n## Empty\n\n# Next\n\nmore"
        );
        let chunker = Chunker::new(Sizer::Chars, body.len() + 4, 0).unwrap();
        let chunks = chunker.chunk(&doc(DocKind::Markdown, &text, 0));
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert!(!texts.contains(&"## cache_size (integer)"), "{texts:?}");
        let section = chunks.iter().find(|c| c.text == body).unwrap();
        assert_eq!(section.heading, ["Settings", "cache_size (integer)"]);
        // A heading no later chunk carries (an empty section) stays.
        assert!(texts.iter().any(|t| t.contains("## Empty")), "{texts:?}");
    }

    #[test]
    fn a_huge_heading_is_not_copied_into_every_chunk() {
        let text = format!("# {}\n\n{}", "€".repeat(50_000), "word ".repeat(2_000));
        let chunker = Chunker::new(Sizer::Chars, 500, 0).unwrap();
        let chunks = chunker.chunk(&doc(DocKind::Markdown, &text, 0));
        assert!(chunks.len() > 20);
        for chunk in &chunks {
            let bytes: usize = chunk.heading.iter().map(String::len).sum();
            assert!(bytes <= MAX_HEADING_BYTES + '…'.len_utf8(), "{bytes}");
        }
        assert!(chunks.last().unwrap().heading[0].ends_with('…'));
    }

    #[test]
    fn heading_paths_follow_the_starts_in_either_order() {
        let headings: Vec<Heading> = vec![
            (0, 1, "A".into()),
            (10, 2, "B".into()),
            (20, 2, "C".into()),
            (30, 1, "D".into()),
        ];
        let mut paths = HeadingPaths::new(&headings);
        assert_eq!(paths.at(0), ["A"]);
        assert_eq!(paths.at(15), ["A", "B"]);
        assert_eq!(paths.at(25), ["A", "C"]);
        assert_eq!(paths.at(35), ["D"]);
        assert_eq!(paths.at(12), ["A", "B"]);
    }

    #[test]
    fn the_paths_of_many_headings_and_chunks_are_read_in_one_pass() {
        let text = "###### t\n\nw\n\n".repeat(200_000);
        let start = std::time::Instant::now();
        let headings = markdown_headings(&text);
        let mut paths = HeadingPaths::new(&headings);
        for at in (0..text.len()).step_by(13) {
            assert_eq!(paths.at(at), ["t"]);
        }
        // Not a speed claim: a scan per chunk here takes minutes.
        assert!(start.elapsed().as_secs() < 30);
    }

    #[test]
    fn many_tiny_sections_are_chunked_in_linear_time() {
        // 400,000 one-word sections (5 MB): in one piece the splitter
        // needs hours; a window at a time, seconds.
        let text = "# t\n\nw\n\n".repeat(400_000);
        let chunker = Chunker::new(Sizer::Chars, 200, 0).unwrap();
        let start = std::time::Instant::now();
        let chunks = chunker.chunk(&doc(DocKind::Markdown, &text, 0));
        assert!(chunks.len() > 1000);
        // Not a speed claim: unwindowed, this runs for hours.
        assert!(start.elapsed().as_secs() < 120, "{:?}", start.elapsed());
    }

    #[test]
    fn windows_cover_the_text_and_cut_at_headings() {
        let section = format!("## part\n\n{}\n\n", "word ".repeat(1000));
        let text = format!("intro\n\n{}", section.repeat(100));
        let cut = windows(&text);
        assert!(cut.len() > 3);
        let mut at = 0;
        for (offset, window) in &cut {
            assert_eq!(*offset, at);
            assert!(window.len() <= WINDOW_BYTES);
            at += window.len();
        }
        assert_eq!(at, text.len());
        for (_, window) in &cut[1..] {
            assert!(window.starts_with("## part"), "{}", &window[..20]);
        }
        // No heading, no line break, multi-byte characters: still cut on
        // character boundaries.
        let flat = "é".repeat(100_000);
        let total: usize = windows(&flat).iter().map(|(_, w)| w.len()).sum();
        assert_eq!(total, flat.len());
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

    /// The default embedder's tokenizer (installed by
    /// scripts/install-models.sh; `LORE_MODELS` moves it).
    fn bert_tokenizer() -> Tokenizer {
        let models = std::env::var_os("LORE_MODELS").map_or_else(
            || std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/lore/models"),
            std::path::PathBuf::from,
        );
        let path = models.join("all-minilm-l6-v2/tokenizer.json");
        Tokenizer::from_file(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/install-models.sh)", path.display()))
    }

    /// Texts with what can trip a count: accents (composed and not), CJK,
    /// punctuation inside words, a long word, literal special tokens.
    fn tricky_texts() -> Vec<String> {
        let mut texts = vec![
            "Café au lait, naïve coöperation; e\u{301}cole — déjà-vu! 東京は大きい。 [SEP] x[CLS]y \
             don't re-run `git rebase --onto` (see §3.2); URL: https://example.com/a?b=c&d=e. \
             supercalifragilisticexpialidocious-and-then-some-more-words-joined-by-hyphens-here \
             averyveryveryveryveryveryveryveryveryveryveryveryveryveryveryveryveryveryveryveryveryveryverylongword"
                .to_string(),
        ];
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/corpora/handbook/docs"
        ))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(text) = std::fs::read_to_string(&path) {
                    texts.push(text);
                }
            }
        }
        texts
    }

    #[test]
    fn a_text_tokenized_once_sizes_pieces_as_tokenizing_each_does() {
        let tokenizer = bert_tokenizer();
        assert!(counts_by_word(&tokenizer));
        let sizer = Sizer::from_tokenizer(tokenizer).unwrap();
        let Sizer::Tokens(tokenizer) = &sizer else {
            unreachable!()
        };
        let (mut counted, mut pieces) = (0, 0);
        for text in tricky_texts() {
            let tokens = TextTokens::new(tokenizer, &text).unwrap();
            let bounds: Vec<usize> = (0..=text.len())
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            // Pieces from every cut point to a spread of ends.
            for (n, &start) in bounds.iter().enumerate().step_by(7) {
                for &end in bounds[n..].iter().step_by(13).take(40) {
                    pieces += 1;
                    if let Some(count) = tokens.count(start, end) {
                        counted += 1;
                        let piece = &text[start..end];
                        assert_eq!(count, tokenizer.size(piece), "{piece:?}");
                    }
                }
            }
        }
        // Cuts between words are common enough to matter (one in six here;
        // the splitter cuts between words nearly always).
        assert!(counted * 10 > pieces, "{counted} of {pieces} counted");
    }

    #[test]
    fn only_a_bounded_text_is_tokenized_whole() {
        let sizer = Sizer::from_tokenizer(bert_tokenizer()).unwrap();
        let small = "a few words ".repeat(100);
        assert!(TextSizer::new(&sizer, &small).tokens.is_some());
        let big = "a few words ".repeat(TOKENIZE_TEXT_BYTES / 12 + 1);
        assert!(TextSizer::new(&sizer, &big).tokens.is_none());
        assert!(TextSizer::new(&Sizer::Chars, &small).tokens.is_none());
    }

    #[test]
    fn chunks_are_the_same_as_when_each_piece_is_tokenized() {
        let chunker =
            Chunker::new(Sizer::from_tokenizer(bert_tokenizer()).unwrap(), 64, 8).unwrap();
        for text in tricky_texts() {
            let d = doc(DocKind::Markdown, &text, 0);
            let fast = chunker.split(&d);
            let config = chunker.config(&*chunker.sizer).unwrap();
            let plain: Vec<(usize, &str)> =
                MarkdownSplitter::new(config).chunk_indices(&text).collect();
            assert_eq!(fast, plain);
            let d = doc(DocKind::Text, &text, 0);
            let config = chunker.config(&*chunker.sizer).unwrap();
            let plain: Vec<(usize, &str)> =
                TextSplitter::new(config).chunk_indices(&text).collect();
            assert_eq!(chunker.split(&d), plain);
        }
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
                // Between chunks is whitespace, or headings the next chunk
                // carries in its path: no text is lost.
                let gap = &text[last_end..chunk.byte_range.start];
                prop_assert!(gap.trim().is_empty() || headings_carried(gap, &chunk.heading));
                last_end = chunk.byte_range.end;
            }
            prop_assert!(text[last_end..].trim().is_empty());
        }
    }
}
