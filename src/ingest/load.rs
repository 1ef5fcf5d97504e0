//! One file in, documents out. The format comes from the extension (with a
//! content sniff for unknown ones): plain text, Markdown (front matter becomes
//! metadata), HTML (visible text only), PDF (text layer), source code and
//! config files, and BEIR-style `corpus.jsonl` (one document per line).
//! Text in legacy encodings is decoded (encoding_rs, chardetng). HTML is
//! tokenized, never built into a tree; PDF runs in a limited child process
//! ([`super::sandbox`]). Failures are reasons in words; the caller names
//! the file and moves on.

use std::path::Path;

use super::Reason;
use super::SkipKind::{Binary, Empty, Malformed, TooLarge, Unreadable};
use crate::types::{DocId, DocKind, Document, Metadata, content_hash, path_key};

/// How a file is read, decided from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain text.
    Text,
    /// Markdown.
    Markdown,
    /// HTML.
    Html,
    /// PDF.
    Pdf,
    /// Source code or config in a language.
    Code(&'static str),
    /// BEIR-style corpus: one JSON object per line with `_id`, `title`, `text`.
    Corpus,
}

/// The format of `path`, from its extension; `None` for unknown extensions.
pub fn format_of(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    let format = match ext.as_str() {
        "md" | "markdown" | "mdx" | "mkd" => Format::Markdown,
        "html" | "htm" | "xhtml" => Format::Html,
        "pdf" => Format::Pdf,
        "jsonl" | "ndjson" => Format::Corpus,
        "txt" | "text" | "rst" | "adoc" | "org" | "log" | "csv" | "tsv" | "tex" => Format::Text,
        other => Format::Code(language_of(other)?),
    };
    Some(format)
}

/// Language name for a code or config file extension.
fn language_of(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "rs" => "rust",
        "py" | "pyi" => "python",
        "go" => "go",
        "js" | "mjs" | "cjs" | "jsx" => "javascript",
        "ts" | "tsx" => "typescript",
        "java" => "java",
        "kt" | "kts" => "kotlin",
        "c" | "h" => "c",
        "cc" | "cpp" | "cxx" | "hpp" | "hh" => "cpp",
        "cs" => "csharp",
        "rb" => "ruby",
        "php" => "php",
        "swift" => "swift",
        "scala" => "scala",
        "lua" => "lua",
        "sh" | "bash" | "zsh" => "shell",
        "sql" => "sql",
        "css" | "scss" => "css",
        "toml" => "toml",
        "yaml" | "yml" => "yaml",
        "json" => "json",
        "ini" | "cfg" | "conf" => "ini",
        "xml" => "xml",
        "proto" => "protobuf",
        "tf" => "terraform",
        _ => return None,
    })
}

/// Loads the documents of the file at `path` (already read into `bytes`).
/// `path` must be the normalized path: document ids derive from it.
/// `max_bytes` bounds text that a format inflates (a PDF's streams).
pub fn load(path: &Path, bytes: &[u8], max_bytes: usize) -> Result<Vec<Document>, Reason> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Reason::new(Empty, "empty file"));
    }
    let format = match format_of(path) {
        Some(format) => format,
        None => sniff(bytes)?,
    };
    if format == Format::Pdf {
        return load_pdf(path, bytes, max_bytes).map(|doc| vec![doc]);
    }
    let (text, encoding) = decode(bytes)?;
    let file = path_key(path);
    let mut docs = parse(format, &file, &text)?;
    for doc in &docs {
        crate::types::check_access(&doc.metadata)
            .map_err(|e| Reason::new(Malformed, format!("{}: {e}", doc.path)))?;
    }
    if let Some(encoding) = encoding {
        tracing::info!(file, encoding, "decoded a legacy encoding");
        for doc in &mut docs {
            doc.metadata.insert("encoding".into(), encoding.into());
        }
    }
    Ok(docs)
}

/// The text of a file: UTF-8 as it is; UTF-16 with a byte-order mark, or
/// a legacy 8-bit encoding (Latin-1, Windows-1252, ...) guessed by
/// chardetng, decoded, with the encoding's name.
fn decode(bytes: &[u8]) -> Result<(std::borrow::Cow<'_, str>, Option<&'static str>), Reason> {
    if let Some((encoding, _)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, _) = encoding.decode_with_bom_removal(bytes);
        let name = (encoding != encoding_rs::UTF_8).then(|| encoding.name());
        return Ok((text, name));
    }
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return Err(Reason::new(Binary, "binary file (contains NUL bytes)"));
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Ok((text.into(), None));
    }
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(bytes, true);
    let encoding = detector.guess(None, true);
    let (text, _, malformed) = encoding.decode(bytes);
    if malformed || text.contains('\0') {
        return Err(Reason::new(
            Binary,
            format!(
                "not UTF-8, and not valid {} either (binary?)",
                encoding.name()
            ),
        ));
    }
    Ok((
        std::borrow::Cow::Owned(text.into_owned()),
        Some(encoding.name()),
    ))
}

/// The documents of decoded text in `format`.
fn parse(format: Format, file: &str, text: &str) -> Result<Vec<Document>, Reason> {
    match format {
        Format::Corpus => load_corpus(file, text),
        Format::Markdown => Ok(vec![load_markdown(file, text)?]),
        Format::Html => load_html(file, text).map(|doc| vec![doc]),
        Format::Code(language) => Ok(vec![
            Draft {
                language: Some(language),
                ..Draft::new(file, DocKind::Code, text)
            }
            .finish(file),
        ]),
        Format::Text | Format::Pdf => Ok(vec![Draft::new(file, DocKind::Text, text).finish(file)]),
    }
}

/// Reads the file at `path`, at most `max_bytes` of it: the size seen by
/// the walk is not trusted (the file may have grown since), and a path
/// that became a symlink since the walk is not followed.
pub fn read(path: &Path, max_bytes: u64) -> Result<Vec<u8>, Reason> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Reason::new(Unreadable, format!("cannot read: {e}")))?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Reason::new(Unreadable, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > max_bytes {
        return Err(Reason::new(
            TooLarge,
            format!(
                "file grew past the limit of {max_bytes} bytes (ingest.max_file_bytes) while \
                 being read"
            ),
        ));
    }
    Ok(bytes)
}

/// Unknown extension: text if it looks like text, otherwise skipped.
fn sniff(bytes: &[u8]) -> Result<Format, Reason> {
    let head = &bytes[..bytes.len().min(8192)];
    if head.contains(&0) {
        return Err(Reason::new(Binary, "binary file (contains NUL bytes)"));
    }
    if bytes.starts_with(b"%PDF-") {
        return Ok(Format::Pdf);
    }
    Ok(Format::Text)
}

/// A document before its id and hash are derived.
struct Draft {
    path: String,
    kind: DocKind,
    language: Option<&'static str>,
    title: Option<String>,
    text: String,
    text_offset: usize,
    metadata: Metadata,
}

impl Draft {
    fn new(path: impl Into<String>, kind: DocKind, text: impl Into<String>) -> Draft {
        Draft {
            path: path.into(),
            kind,
            language: None,
            title: None,
            text: text.into(),
            text_offset: 0,
            metadata: Metadata::new(),
        }
    }

    /// The document read from `file`; the hash covers everything that
    /// reaches the index.
    fn finish(self, file: &str) -> Document {
        let meta_json = serde_json::to_string(&self.metadata).unwrap_or_default();
        let hash = content_hash(
            format!(
                "{}\0{}\0{}\0{}\0{}\0{meta_json}\0{}",
                self.kind.as_str(),
                self.language.unwrap_or(""),
                self.title.as_deref().unwrap_or(""),
                self.path,
                self.text_offset,
                self.text
            )
            .as_bytes(),
        );
        Document {
            id: DocId::from_path(&self.path),
            path: self.path,
            file: file.to_string(),
            title: self.title,
            kind: self.kind,
            language: self.language.map(str::to_string),
            text: self.text,
            text_offset: self.text_offset,
            metadata: self.metadata,
            hash,
        }
    }
}

/// Markdown: YAML front matter (`---` … `---`) becomes metadata; the title is
/// the front matter's `title` or the first `# ` heading. Front matter that
/// does not parse skips the file: it may carry an access list.
fn load_markdown(file: &str, text: &str) -> Result<Document, Reason> {
    let (metadata, body_offset) = front_matter(text)?.unwrap_or_default();
    let body = &text[body_offset..];
    let title = metadata
        .get("title")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| {
            body.lines()
                .find_map(|line| line.strip_prefix("# ").map(|t| t.trim().to_string()))
        });
    Ok(Draft {
        title,
        text_offset: body_offset,
        metadata,
        ..Draft::new(file, DocKind::Markdown, body)
    }
    .finish(file))
}

/// Parses leading YAML front matter (after any blank lines); returns it
/// and where the body starts, or `None` when the text opens with no `---`
/// line. A block that is not closed, is not valid YAML or is not a
/// mapping is an error, never ignored: it may hold an access list, and
/// losing one would publish the document.
fn front_matter(text: &str) -> Result<Option<(Metadata, usize)>, Reason> {
    let start = text.len() - text.trim_start().len();
    let start = text[..start].rfind('\n').map_or(0, |at| at + 1);
    let mut lines = text[start..].split_inclusive('\n');
    if lines.next().map(str::trim_end) != Some("---") {
        return Ok(None);
    }
    let header_end = start
        + text[start..]
            .find('\n')
            .map_or(text.len() - start, |at| at + 1);
    let mut offset = header_end;
    for line in lines {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed == "..." {
            let yaml = &text[header_end..offset];
            let value: serde_json::Value = serde_yaml::from_str(yaml).map_err(|e| {
                Reason::new(Malformed, format!("front matter is not valid YAML: {e}"))
            })?;
            let metadata = match value {
                serde_json::Value::Object(map) => map.into_iter().collect(),
                serde_json::Value::Null => Metadata::new(),
                other => {
                    return Err(Reason::new(
                        Malformed,
                        format!("front matter must be a mapping of keys to values, not {other}"),
                    ));
                }
            };
            return Ok(Some((metadata, offset + line.len())));
        }
        offset += line.len();
    }
    Err(Reason::new(
        Malformed,
        "front matter opened with --- is never closed (no --- line after it)",
    ))
}

/// Elements whose content is never shown to a reader.
const INVISIBLE: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "iframe", "object", "noembed", "noframes",
    "xmp",
];
/// Elements that start a new line of text.
const BLOCK: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "section",
    "article",
    "header",
    "footer",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "blockquote",
    "dt",
    "dd",
    "nav",
    "aside",
    "main",
    "figure",
    "figcaption",
    "hr",
    "form",
    "td",
    "th",
];

/// HTML: the visible text of the page, block elements on their own lines,
/// headings kept as Markdown-style `#` lines so chunks know their section.
///
/// Read with html5ever's tokenizer alone, not a tree builder: one pass, in
/// time and memory linear in the input and with no recursion, so a page
/// nested 100,000 levels deep costs what a flat one does.
fn load_html(file: &str, text: &str) -> Result<Document, Reason> {
    use html5ever::tendril::StrTendril;
    use html5ever::tokenizer::{BufferQueue, Tokenizer, TokenizerOpts};
    let tokenizer = Tokenizer::new(VisibleText::default(), TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(text));
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    let sink = tokenizer.sink;
    let title =
        Some(tidy_lines(&sink.title.into_inner()).trim().to_string()).filter(|t| !t.is_empty());
    let body = tidy_lines(&sink.out.into_inner());
    if body.trim().is_empty() {
        return Err(Reason::new(Empty, "HTML page has no visible text"));
    }
    Ok(Draft {
        title,
        ..Draft::new(file, DocKind::Html, body)
    }
    .finish(file))
}

/// Token sink that keeps the text a reader would see.
#[derive(Default)]
struct VisibleText {
    out: std::cell::RefCell<String>,
    title: std::cell::RefCell<String>,
    /// Inside `<title>`.
    in_title: std::cell::Cell<bool>,
    /// Text has been written since the last line break.
    mid_line: std::cell::Cell<bool>,
    /// Inside an invisible element: its name and how deep it nests.
    hidden: std::cell::RefCell<Option<(String, usize)>>,
    /// Level of the last `<h1>`–`<h6>` written (0 before the first).
    level: std::cell::Cell<usize>,
    /// The open `<dl>`s, innermost last: whether each is a list of terms
    /// (its `<dt>`s become headings) rather than a table of contents.
    lists: std::cell::RefCell<Vec<bool>>,
    /// How many of them are lists of terms (kept, not counted per `<dt>`:
    /// 100,000 nested lists and as many terms must not cost 10^10 steps).
    term_lists: std::cell::Cell<usize>,
    /// Where the text stands with respect to a `<dt>` heading.
    term: std::cell::Cell<Term>,
    /// `<div>`s open, and the depth of the admonition (note, tip, …) the
    /// text is inside, if any: headings there are not section headings.
    divs: std::cell::Cell<usize>,
    aside: std::cell::Cell<Option<usize>>,
}

/// A `<dt>` heading: outside one, writing one, or just closed with nothing
/// after it yet (so a second `<dt>`, an alias, joins the same line).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Term {
    #[default]
    Outside,
    Open,
    Closed,
}

/// Classes that mark an admonition box, whose title is not a section.
const ADMONITION: &[&str] = &[
    "note",
    "tip",
    "warning",
    "caution",
    "important",
    "admonition",
    "sidebar",
    "hint",
    "callout",
];

impl html5ever::tokenizer::TokenSink for VisibleText {
    type Handle = ();

    fn process_token(
        &self,
        token: html5ever::tokenizer::Token,
        _line: u64,
    ) -> html5ever::tokenizer::TokenSinkResult<()> {
        use html5ever::tokenizer::{TagKind, Token, TokenSinkResult};
        match token {
            Token::TagToken(tag) => {
                let name: &str = &tag.name;
                let start = tag.kind == TagKind::StartTag && !tag.self_closing;
                if self.hide(name, start) {
                    return match raw_kind(name) {
                        Some(kind) if start => TokenSinkResult::RawData(kind),
                        _ => TokenSinkResult::Continue,
                    };
                }
                if name == "title" {
                    self.in_title.set(start);
                    return if start {
                        TokenSinkResult::RawData(html5ever::tokenizer::states::RawKind::Rcdata)
                    } else {
                        TokenSinkResult::Continue
                    };
                }
                let class = tag
                    .attrs
                    .iter()
                    .find(|a| &*a.name.local == "class")
                    .map_or("", |a| &*a.value);
                self.mark(name, tag.kind == TagKind::StartTag, class);
                if start && name == "textarea" {
                    return TokenSinkResult::RawData(html5ever::tokenizer::states::RawKind::Rcdata);
                }
            }
            Token::CharacterTokens(text) if self.hidden.borrow().is_none() => {
                let text = text.replace(['\n', '\r', '\t'], " ");
                if self.in_title.get() {
                    self.title.borrow_mut().push_str(&text);
                } else {
                    self.push_text(&text);
                }
            }
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

impl VisibleText {
    /// Tracks invisible elements; true while inside one (this tag included).
    fn hide(&self, name: &str, start: bool) -> bool {
        let mut hidden = self.hidden.borrow_mut();
        match hidden.as_mut() {
            Some((open, depth)) if open == name => {
                if start {
                    *depth += 1;
                } else {
                    *depth -= 1;
                    if *depth == 0 {
                        *hidden = None;
                    }
                }
                true
            }
            Some(_) => true,
            None if start && INVISIBLE.contains(&name) => {
                *hidden = Some((name.to_string(), 1));
                true
            }
            None => false,
        }
    }

    /// Line breaks around blocks, `#` marks before headings. The terms of
    /// a definition list (`<dt>`: a setting, a command-line option) are
    /// headings one level below the section, so a term's description is
    /// cut into chunks that carry its name; a title inside an admonition
    /// box ("Tip") is a line of text, not the heading of the rest of the
    /// section.
    fn mark(&self, name: &str, start: bool, class: &str) {
        // `</dt>` may be left out: a `<dd>` or the list's end closes it.
        if matches!(name, "dd" | "dl") && self.term.get() == Term::Open {
            self.mark_term(false);
        }
        match name {
            "div" => self.track_aside(start, class),
            "dl" => self.track_list(start, class),
            "dt" => return self.mark_term(start),
            _ => {}
        }
        if start && self.term.get() == Term::Closed {
            self.term.set(Term::Outside);
        }
        let mut out = self.out.borrow_mut();
        if self.term.get() == Term::Open {
            if BLOCK.contains(&name) {
                out.push(' ');
            }
            return;
        }
        if BLOCK.contains(&name) {
            out.push('\n');
            self.mid_line.set(false);
        }
        let heading =
            name.len() == 2 && name.starts_with('h') && name.as_bytes()[1].is_ascii_digit();
        if heading && start && self.aside.get().is_none() {
            let level = usize::from(name.as_bytes()[1] - b'0');
            self.level.set(level);
            out.push_str(&"#".repeat(level));
            out.push(' ');
            self.mid_line.set(true);
        }
    }

    /// Opens or closes a `<dt>` heading, joining aliases onto one line.
    fn mark_term(&self, start: bool) {
        let terms = self.term_lists.get();
        let is_term = self.lists.borrow().last() == Some(&true);
        let mut out = self.out.borrow_mut();
        match (start, self.term.get()) {
            (true, Term::Closed) if is_term => {
                let kept = out.trim_end().len();
                out.truncate(kept);
                out.push_str(", ");
                self.term.set(Term::Open);
                self.mid_line.set(true);
            }
            (true, _) if is_term => {
                let level = (self.level.get() + terms).clamp(1, 6);
                out.push('\n');
                out.push_str(&"#".repeat(level));
                out.push(' ');
                self.term.set(Term::Open);
                self.mid_line.set(true);
            }
            (false, Term::Open) => {
                out.push('\n');
                self.term.set(Term::Closed);
                self.mid_line.set(false);
            }
            _ => {
                out.push('\n');
                self.mid_line.set(false);
            }
        }
    }

    fn track_list(&self, start: bool, class: &str) {
        let mut lists = self.lists.borrow_mut();
        let terms = self.term_lists.get();
        if start {
            let is_term = !class.split_whitespace().any(|c| c == "toc");
            lists.push(is_term);
            self.term_lists.set(terms + usize::from(is_term));
        } else if lists.pop() == Some(true) {
            self.term_lists.set(terms - 1);
        }
    }

    fn track_aside(&self, start: bool, class: &str) {
        let depth = self.divs.get();
        if start {
            self.divs.set(depth + 1);
            let admonition = class.split_whitespace().any(|c| ADMONITION.contains(&c));
            if admonition && self.aside.get().is_none() {
                self.aside.set(Some(depth + 1));
            }
        } else {
            if self.aside.get() == Some(depth) {
                self.aside.set(None);
            }
            self.divs.set(depth.saturating_sub(1));
        }
    }

    /// Visible text. A `#` that would open a line is escaped (`\#`), so
    /// only `<h1>`–`<h6>` become headings: a shell comment opening a
    /// `<pre>` block ("# count the number of lines…") was the heading of
    /// everything after it in its section.
    fn push_text(&self, text: &str) {
        let mut out = self.out.borrow_mut();
        let body = text.trim_start();
        if !self.mid_line.get() && body.starts_with('#') {
            out.push_str(&text[..text.len() - body.len()]);
            out.push('\\');
            out.push_str(body);
        } else {
            out.push_str(text);
        }
        if !body.is_empty() {
            self.mid_line.set(true);
            if self.term.get() == Term::Closed {
                self.term.set(Term::Outside);
            }
        }
    }
}

/// How the tokenizer must read the content of an invisible element.
fn raw_kind(name: &str) -> Option<html5ever::tokenizer::states::RawKind> {
    use html5ever::tokenizer::states::RawKind;
    match name {
        "script" => Some(RawKind::ScriptData),
        "style" | "noscript" | "iframe" | "noembed" | "noframes" | "xmp" => Some(RawKind::Rawtext),
        _ => None,
    }
}

/// Collapses runs of spaces and blank lines left by markup.
fn tidy_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = true;
    for line in text.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            if !blank {
                out.push('\n');
            }
            blank = true;
            continue;
        }
        out.push_str(&line);
        out.push('\n');
        blank = false;
    }
    out
}

/// PDF: the text layer, extracted under limits (see [`super::sandbox`]).
fn load_pdf(path: &Path, bytes: &[u8], max_bytes: usize) -> Result<Document, Reason> {
    let text = super::sandbox::pdf_text(bytes, max_bytes)?;
    let body = tidy_lines(&text);
    if body.trim().is_empty() {
        return Err(Reason::new(
            Empty,
            "PDF has no text layer (scanned images are not OCRed)",
        ));
    }
    let file = path_key(path);
    Ok(Draft::new(&file, DocKind::Pdf, body).finish(&file))
}

/// BEIR `corpus.jsonl`: each line `{"_id", "title", "text", ...}` is one
/// document with path `file#_id`. Extra keys become metadata.
fn load_corpus(file: &str, text: &str) -> Result<Vec<Document>, Reason> {
    let mut docs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
            .map_err(|e| {
                Reason::new(Malformed, format!("line {}: not a JSON object: {e}", n + 1))
            })?;
        let id = match record.get("_id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => {
                return Err(Reason::new(
                    Malformed,
                    format!("line {}: no \"_id\" (expected a BEIR corpus.jsonl)", n + 1),
                ));
            }
        };
        let Some(body) = record.get("text").and_then(|v| v.as_str()) else {
            return Err(Reason::new(
                Malformed,
                format!("line {}: no \"text\" (expected a BEIR corpus.jsonl)", n + 1),
            ));
        };
        let title = record
            .get("title")
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        let mut metadata: Metadata = record
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "_id" | "title" | "text"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        metadata.insert("record_id".into(), serde_json::Value::String(id.clone()));
        if body.trim().is_empty() && title.is_none() {
            continue;
        }
        docs.push(
            Draft {
                title,
                metadata,
                ..Draft::new(format!("{file}#{id}"), DocKind::Record, body)
            }
            .finish(file),
        );
    }
    if docs.is_empty() {
        return Err(Reason::new(Empty, "corpus file has no documents"));
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    #[test]
    fn markdown_front_matter_becomes_metadata_and_ranges_skip_it() {
        let text = "---\ntitle: On call\ntags: [ops, pager]\n---\n# Paging\nBody.\n";
        let docs = load(Path::new("/x/a.md"), text.as_bytes(), LIMIT).unwrap();
        let doc = &docs[0];
        assert_eq!(doc.title.as_deref(), Some("On call"));
        assert_eq!(doc.metadata["tags"], serde_json::json!(["ops", "pager"]));
        assert_eq!(&text[doc.text_offset..], doc.text);
        assert!(doc.text.starts_with("# Paging"));
    }

    #[test]
    fn front_matter_that_does_not_parse_skips_the_file_never_publishes_it() {
        let reason = |text: &str| {
            let reason = load(Path::new("/x/a.md"), text.as_bytes(), LIMIT).unwrap_err();
            assert_eq!(reason.kind, Malformed, "{reason}");
            reason.message
        };
        // Invalid YAML (a second colon), a block never closed, a list, and
        // an access list that names no group: each is a reason, not text.
        assert!(
            reason("---\ntitle: HR: salaries 2025\naccess: [hr]\n---\nPay.\n").contains("YAML")
        );
        assert!(reason("---\naccess: [hr]\nPay.\n").contains("never closed"));
        assert!(reason("---\n- hr\n---\nPay.\n").contains("mapping"));
        assert!(reason("---\naccess: {hr: 1}\n---\nPay.\n").contains("access list"));
        assert!(reason("---\naccess:\n---\nPay.\n").contains("access list"));
        // Blank lines before the block do not hide it.
        for text in [
            "\n---\naccess: [hr]\n---\nPay.\n",
            "  \r\n\n---\r\naccess: [hr]\r\n---\r\nPay.\n",
        ] {
            let doc = &load(Path::new("/x/a.md"), text.as_bytes(), LIMIT).unwrap()[0];
            assert_eq!(
                doc.metadata["access"],
                serde_json::json!(["hr"]),
                "{text:?}"
            );
            assert_eq!(doc.text.trim(), "Pay.");
            assert_eq!(&text[doc.text_offset..], doc.text);
        }
        // No block at all: plain Markdown.
        let doc = &load(Path::new("/x/a.md"), b"# Pay\n\n---\n", LIMIT).unwrap()[0];
        assert!(doc.metadata.is_empty());
    }

    #[test]
    fn html_keeps_visible_text_only() {
        let html = "<html><head><title>T</title><style>p{}</style></head><body><h2>Sec</h2>\
                    <p>Hello <b>world</b></p><script>var x = 1;</script></body></html>";
        let doc = &load(Path::new("/x/a.html"), html.as_bytes(), LIMIT).unwrap()[0];
        assert_eq!(doc.title.as_deref(), Some("T"));
        assert!(doc.text.contains("## Sec"));
        assert!(doc.text.contains("Hello world"));
        assert!(!doc.text.contains("var x"));
        assert!(!doc.text.contains("p{}"));
    }

    #[test]
    fn only_heading_elements_become_headings() {
        let html = "<h1>git-blame</h1><pre><code># count the lines\ngit blame</code></pre>\
                    <p>  # not one either</p><h2>Next</h2><p>After #1.</p>";
        let doc = &load(Path::new("/x/g.html"), html.as_bytes(), LIMIT).unwrap()[0];
        assert_eq!(
            doc.text,
            "# git-blame\n\n\\# count the lines git blame\n\n\\# not one either\n\n## Next\n\nAfter #1.\n"
        );
        use pulldown_cmark::{Event, Parser, Tag};
        let headings = Parser::new(&doc.text)
            .filter(|e| matches!(e, Event::Start(Tag::Heading { .. })))
            .count();
        assert_eq!(headings, 2);
    }

    #[test]
    fn definition_terms_become_headings_below_their_section() {
        let html = "<h2>Options</h2><dl class=\"variablelist\"><dt>\n<code>port</code> (integer)\n</dt>\
                    <dd><p>The port.</p></dd><dt>-f</dt>\n<dt>--force<br/>-F</dt><dd>Force.\
                    <dl><dt>always</dt><dd>Every time.</dd></dl></dd></dl><h2>Next</h2>";
        let doc = &load(Path::new("/x/o.html"), html.as_bytes(), LIMIT).unwrap()[0];
        assert_eq!(
            doc.text,
            "## Options\n\n### port (integer)\n\nThe port.\n\n### -f, --force -F\n\n\
             Force.\n#### always\n\nEvery time.\n\n## Next\n"
        );
        use pulldown_cmark::{Event, Parser, Tag};
        let headings = Parser::new(&doc.text)
            .filter(|e| matches!(e, Event::Start(Tag::Heading { .. })))
            .count();
        assert_eq!(headings, 5);
    }

    #[test]
    fn a_term_without_its_end_tag_ends_at_its_description() {
        let html = "<h2>Options</h2><dl><dt>-a<dd>All of them.<dt>-b<dd>Brief.</dl><p>After.</p>";
        let doc = &load(Path::new("/x/u.html"), html.as_bytes(), LIMIT).unwrap()[0];
        assert_eq!(
            doc.text,
            "## Options\n\n### -a\n\nAll of them.\n### -b\n\nBrief.\nAfter.\n"
        );
    }

    #[test]
    fn a_table_of_contents_and_an_admonition_title_are_not_headings() {
        let html = "<h2>Memory</h2><dl class=\"toc\"><dt><a href=\"#a\">A</a></dt></dl>\
                    <div class=\"tip\"><h3 class=\"title\">Tip</h3><p>Use less.</p></div>\
                    <p>More on memory.</p>";
        let doc = &load(Path::new("/x/t.html"), html.as_bytes(), LIMIT).unwrap()[0];
        assert_eq!(
            doc.text,
            "## Memory\n\nA\n\nTip\n\nUse less.\n\nMore on memory.\n"
        );
    }

    #[test]
    fn corpus_lines_become_documents() {
        let jsonl = "{\"_id\":\"1\",\"title\":\"A\",\"text\":\"alpha\"}\n{\"_id\":2,\"title\":\"\",\"text\":\"beta\"}\n";
        let docs = load(Path::new("/x/corpus.jsonl"), jsonl.as_bytes(), LIMIT).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].path, "/x/corpus.jsonl#1");
        assert_eq!(docs[1].path, "/x/corpus.jsonl#2");
        assert_eq!(docs[1].title, None);
        assert_ne!(docs[0].id, docs[1].id);
    }

    #[test]
    fn bad_inputs_give_reasons() {
        let reason = |name: &str, bytes: &[u8]| load(Path::new(name), bytes, LIMIT).unwrap_err();
        let empty = reason("/x/e.txt", b"  \n");
        assert_eq!((empty.kind, empty.message.as_str()), (Empty, "empty file"));
        let binary = reason("/x/b.bin", b"\x7fELF\0\0\x01");
        assert_eq!(binary.kind, Binary);
        assert!(binary.message.contains("binary"));
        let pdf = reason("/x/c.pdf", b"%PDF-1.4 garbage");
        assert_eq!(pdf.kind, Malformed);
        assert!(pdf.message.contains("PDF"));
        let corpus = reason("/x/q.jsonl", b"{\"question\":\"x\"}\n");
        assert_eq!(corpus.kind, Malformed);
        assert!(corpus.message.contains("_id"));
    }

    #[test]
    fn code_files_carry_their_language() {
        let doc = &load(Path::new("/x/main.rs"), b"fn main() {}\n", LIMIT).unwrap()[0];
        assert_eq!(doc.kind, DocKind::Code);
        assert_eq!(doc.language.as_deref(), Some("rust"));
    }

    #[test]
    fn legacy_encodings_are_decoded_and_named() {
        let latin1 = b"Le caf\xe9 cr\xe8me co\xfbte trois euros \xe0 la cantine, d\xe9j\xe0.\n";
        let doc = &load(Path::new("/x/menu.txt"), latin1, LIMIT).unwrap()[0];
        assert!(doc.text.contains("café crème coûte"), "{}", doc.text);
        assert_eq!(doc.metadata["encoding"], "windows-1252");
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("hello wörld".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let doc = &load(Path::new("/x/u16.txt"), &utf16, LIMIT).unwrap()[0];
        assert_eq!(doc.text, "hello wörld");
        assert_eq!(doc.metadata["encoding"], "UTF-16LE");
    }

    #[test]
    fn deeply_nested_html_is_read_in_linear_time_without_recursion() {
        let depth = 200_000;
        let html = format!(
            "{}<p>deep text</p>{}",
            "<div>".repeat(depth),
            "</div>".repeat(depth)
        );
        let start = std::time::Instant::now();
        let doc = &load(Path::new("/x/deep.html"), html.as_bytes(), LIMIT * 8).unwrap()[0];
        assert_eq!(doc.text.trim(), "deep text");
        // Not a speed claim: quadratic work at this depth takes minutes.
        assert!(start.elapsed().as_secs() < 30);
        let unclosed = "<b>".repeat(depth) + "x";
        assert!(load(Path::new("/x/b.html"), unclosed.as_bytes(), LIMIT * 8).is_ok());
        // As many definition terms inside as many nested lists.
        let terms = format!(
            "{}{}",
            "<dl>".repeat(depth / 2),
            "<dt>t</dt>".repeat(depth / 2)
        );
        let start = std::time::Instant::now();
        assert!(load(Path::new("/x/dl.html"), terms.as_bytes(), LIMIT * 8).is_ok());
        assert!(start.elapsed().as_secs() < 30);
    }

    #[test]
    fn html_hides_scripts_even_when_nested_or_unclosed() {
        let html = "<h1>T</h1><svg><svg></svg><text>no</text></svg><p>yes</p>\
                    <script>document.write('<p>no</p>')</script><p>also</p><style>p{}";
        let doc = &load(Path::new("/x/s.html"), html.as_bytes(), LIMIT).unwrap()[0];
        assert_eq!(doc.text, "# T\n\nyes\n\nalso\n");
    }

    #[test]
    fn reads_are_bounded_whatever_the_walk_saw() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grown.txt");
        std::fs::write(&path, vec![b'a'; 2048]).unwrap();
        assert_eq!(read(&path, 4096).unwrap().len(), 2048);
        // The walk saw 2 KiB; by the time it is read, it has grown.
        let reason = read(&path, 1024).unwrap_err();
        assert_eq!(reason.kind, TooLarge);
        assert!(
            reason.message.contains("grew past the limit of 1024"),
            "{reason}"
        );
        // A path that became a symlink since the walk is not followed.
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        let reason = read(&link, 1 << 20).unwrap_err();
        assert_eq!(reason.kind, Unreadable);
        assert!(reason.message.contains("cannot read"));
    }
}
