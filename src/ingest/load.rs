//! One file in, documents out. The format comes from the extension (with a
//! content sniff for unknown ones): plain text, Markdown (front matter becomes
//! metadata), HTML (visible text only), PDF (text layer), source code and
//! config files, and BEIR-style `corpus.jsonl` (one document per line).
//! Failures are reasons in words; the caller names the file and moves on.

use std::panic::AssertUnwindSafe;
use std::path::Path;

use scraper::{Html, Node};

use crate::types::{DocId, DocKind, Document, Metadata, content_hash};

/// Why a file produced no documents.
pub type Reason = String;

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
pub fn load(path: &Path, bytes: &[u8]) -> Result<Vec<Document>, Reason> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("empty file".into());
    }
    let format = match format_of(path) {
        Some(format) => format,
        None => sniff(bytes)?,
    };
    if format == Format::Pdf {
        return load_pdf(path, bytes).map(|doc| vec![doc]);
    }
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return Err("binary file (contains NUL bytes)".into());
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
    let file = path.display().to_string();
    match format {
        Format::Corpus => load_corpus(&file, text),
        Format::Markdown => Ok(vec![load_markdown(&file, text)]),
        Format::Html => load_html(&file, text).map(|doc| vec![doc]),
        Format::Code(language) => Ok(vec![
            Draft {
                language: Some(language),
                ..Draft::new(&file, DocKind::Code, text)
            }
            .finish(&file),
        ]),
        Format::Text | Format::Pdf => {
            Ok(vec![Draft::new(&file, DocKind::Text, text).finish(&file)])
        }
    }
}

/// Unknown extension: text if it looks like text, otherwise skipped.
fn sniff(bytes: &[u8]) -> Result<Format, Reason> {
    let head = &bytes[..bytes.len().min(8192)];
    if head.contains(&0) {
        return Err("binary file (contains NUL bytes)".into());
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
/// the front matter's `title` or the first `# ` heading.
fn load_markdown(file: &str, text: &str) -> Document {
    let (metadata, body_offset) = front_matter(text).unwrap_or_default();
    let body = &text[body_offset..];
    let title = metadata
        .get("title")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| {
            body.lines()
                .find_map(|line| line.strip_prefix("# ").map(|t| t.trim().to_string()))
        });
    Draft {
        title,
        text_offset: body_offset,
        metadata,
        ..Draft::new(file, DocKind::Markdown, body)
    }
    .finish(file)
}

/// Parses leading YAML front matter; returns it and where the body starts.
/// Malformed front matter is left in the text rather than guessed at.
fn front_matter(text: &str) -> Option<(Metadata, usize)> {
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))?;
    let header_len = text.len() - rest.len();
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed == "..." {
            let yaml = &rest[..offset];
            let value: serde_json::Value = serde_yaml::from_str(yaml).ok()?;
            let metadata = match value {
                serde_json::Value::Object(map) => map.into_iter().collect(),
                serde_json::Value::Null => Metadata::new(),
                _ => return None,
            };
            return Some((metadata, header_len + offset + line.len()));
        }
        offset += line.len();
    }
    None
}

/// Elements whose content is never shown to a reader.
const INVISIBLE: &[&str] = &[
    "script", "style", "noscript", "template", "head", "svg", "iframe", "object",
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
    "title",
    "td",
    "th",
];

/// HTML: the visible text of the page, block elements on their own lines,
/// headings kept as Markdown-style `#` lines so chunks know their section.
fn load_html(file: &str, text: &str) -> Result<Document, Reason> {
    let html = Html::parse_document(text);
    let title = html
        .select(&scraper::Selector::parse("title").map_err(|e| e.to_string())?)
        .next()
        .map(|t| t.text().collect::<String>().trim().to_string())
        .filter(|t| !t.is_empty());
    let mut out = String::new();
    visible_text(html.tree.root(), &mut out);
    let body = tidy_lines(&out);
    if body.trim().is_empty() {
        return Err("HTML page has no visible text".into());
    }
    Ok(Draft {
        title,
        ..Draft::new(file, DocKind::Html, body)
    }
    .finish(file))
}

fn visible_text(node: ego_tree::NodeRef<'_, Node>, out: &mut String) {
    match node.value() {
        Node::Text(text) => out.push_str(&text.replace(['\n', '\r', '\t'], " ")),
        Node::Element(el) => {
            let name = el.name();
            if INVISIBLE.contains(&name) {
                return;
            }
            let heading =
                name.len() == 2 && name.starts_with('h') && name.as_bytes()[1].is_ascii_digit();
            let block = BLOCK.contains(&name);
            if block {
                out.push('\n');
            }
            if heading {
                let level = usize::from(name.as_bytes()[1] - b'0');
                out.push_str(&"#".repeat(level));
                out.push(' ');
            }
            for child in node.children() {
                visible_text(child, out);
            }
            if block {
                out.push('\n');
            }
        }
        _ => {
            for child in node.children() {
                visible_text(child, out);
            }
        }
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

/// PDF: the text layer. pdf-extract panics on some malformed files, so the
/// call is fenced; any failure is a reason, never a crash.
fn load_pdf(path: &Path, bytes: &[u8]) -> Result<Document, Reason> {
    let extracted = std::panic::catch_unwind(AssertUnwindSafe(|| {
        pdf_extract::extract_text_from_mem(bytes)
    }));
    let text = match extracted {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => return Err(format!("corrupt or unreadable PDF: {e}")),
        Err(_) => return Err("corrupt PDF (the PDF parser gave up)".into()),
    };
    let body = tidy_lines(&text);
    if body.trim().is_empty() {
        return Err("PDF has no text layer (scanned images are not OCRed)".into());
    }
    let file = path.display().to_string();
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
            .map_err(|e| format!("line {}: not a JSON object: {e}", n + 1))?;
        let id = match record.get("_id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => {
                return Err(format!(
                    "line {}: no \"_id\" (expected a BEIR corpus.jsonl)",
                    n + 1
                ));
            }
        };
        let Some(body) = record.get("text").and_then(|v| v.as_str()) else {
            return Err(format!(
                "line {}: no \"text\" (expected a BEIR corpus.jsonl)",
                n + 1
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
        return Err("corpus file has no documents".into());
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_front_matter_becomes_metadata_and_ranges_skip_it() {
        let text = "---\ntitle: On call\ntags: [ops, pager]\n---\n# Paging\nBody.\n";
        let docs = load(Path::new("/x/a.md"), text.as_bytes()).unwrap();
        let doc = &docs[0];
        assert_eq!(doc.title.as_deref(), Some("On call"));
        assert_eq!(doc.metadata["tags"], serde_json::json!(["ops", "pager"]));
        assert_eq!(&text[doc.text_offset..], doc.text);
        assert!(doc.text.starts_with("# Paging"));
    }

    #[test]
    fn html_keeps_visible_text_only() {
        let html = "<html><head><title>T</title><style>p{}</style></head><body><h2>Sec</h2>\
                    <p>Hello <b>world</b></p><script>var x = 1;</script></body></html>";
        let doc = &load(Path::new("/x/a.html"), html.as_bytes()).unwrap()[0];
        assert_eq!(doc.title.as_deref(), Some("T"));
        assert!(doc.text.contains("## Sec"));
        assert!(doc.text.contains("Hello world"));
        assert!(!doc.text.contains("var x"));
        assert!(!doc.text.contains("p{}"));
    }

    #[test]
    fn corpus_lines_become_documents() {
        let jsonl = "{\"_id\":\"1\",\"title\":\"A\",\"text\":\"alpha\"}\n{\"_id\":2,\"title\":\"\",\"text\":\"beta\"}\n";
        let docs = load(Path::new("/x/corpus.jsonl"), jsonl.as_bytes()).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].path, "/x/corpus.jsonl#1");
        assert_eq!(docs[1].path, "/x/corpus.jsonl#2");
        assert_eq!(docs[1].title, None);
        assert_ne!(docs[0].id, docs[1].id);
    }

    #[test]
    fn bad_inputs_give_reasons() {
        let reason = |name: &str, bytes: &[u8]| load(Path::new(name), bytes).unwrap_err();
        assert_eq!(reason("/x/e.txt", b"  \n"), "empty file");
        assert!(reason("/x/b.bin", b"\x7fELF\0\0\x01").contains("binary"));
        assert!(reason("/x/u.txt", b"ok \xff\xfe bad").contains("invalid UTF-8"));
        assert!(reason("/x/c.pdf", b"%PDF-1.4 garbage").contains("PDF"));
        assert!(reason("/x/q.jsonl", b"{\"question\":\"x\"}\n").contains("_id"));
    }

    #[test]
    fn code_files_carry_their_language() {
        let doc = &load(Path::new("/x/main.rs"), b"fn main() {}\n").unwrap()[0];
        assert_eq!(doc.kind, DocKind::Code);
        assert_eq!(doc.language.as_deref(), Some("rust"));
    }
}
