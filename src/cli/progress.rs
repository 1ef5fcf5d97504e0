//! Ingest progress: an indicatif bar on a terminal (files, an ETA from the
//! chunks left to embed, chunks embedded and their rate, the file just
//! done), throttled plain
//! lines on stderr otherwise, or JSON lines on stderr for scripts
//! (`--json`, whose result goes to stdout).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lore::Progress;
use lore::ingest::Skipped;
use serde_json::json;

/// Seconds between plain progress lines when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// Seconds between JSON progress lines.
const JSON_EVERY: Duration = Duration::from_secs(1);
/// Characters of the current file's path the bar shows (its end).
const PATH_CHARS: usize = 48;

/// How progress is shown.
enum Show {
    Bar(ProgressBar),
    Plain,
    Json,
}

/// Progress reporting for `lore ingest`.
pub struct IngestProgress {
    show: Show,
    files_total: AtomicU64,
    files_done: AtomicU64,
    chunks_total: AtomicU64,
    chunks_done: AtomicU64,
    bytes_total: AtomicU64,
    bytes_read: AtomicU64,
    start: Instant,
    last_line: Mutex<Instant>,
    last_file: Mutex<String>,
}

impl IngestProgress {
    /// JSON lines when `json`, else a bar on a terminal, plain lines
    /// elsewhere.
    pub fn new(json: bool) -> Self {
        let show = if json {
            Show::Json
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:25} {pos}/{len} files · {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            Show::Bar(bar)
        } else {
            Show::Plain
        };
        IngestProgress {
            show,
            files_total: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            chunks_total: AtomicU64::new(0),
            chunks_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            start: Instant::now(),
            last_line: Mutex::new(Instant::now()),
            last_file: Mutex::new(String::new()),
        }
    }

    fn rate(&self) -> f64 {
        self.chunks_done.load(Ordering::Relaxed) as f64
            / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    /// Seconds left: the chunks still to embed (those planned, and as many
    /// per byte for the files not read yet) at the rate so far; from the
    /// share of files done when nothing needs reading. Unknown until some
    /// chunks are embedded.
    fn eta_s(&self) -> Option<f64> {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64;
        let elapsed = self.start.elapsed().as_secs_f64();
        let (total, read) = (load(&self.bytes_total), load(&self.bytes_read));
        if total == 0.0 {
            let (done, files) = (load(&self.files_done), load(&self.files_total));
            return (done > 0.0 && files >= done).then(|| elapsed * (files - done) / done);
        }
        let (planned, embedded) = (load(&self.chunks_total), load(&self.chunks_done));
        if read == 0.0 || embedded == 0.0 {
            return None;
        }
        let unread = planned / read * (total - read).max(0.0);
        Some(((planned - embedded).max(0.0) + unread) / self.rate())
    }

    fn last_file(&self) -> String {
        self.last_file.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Prints a line at most every `every` (always when `force`).
    fn throttled(&self, every: Duration, force: bool, line: impl FnOnce() -> String) {
        let Ok(mut last) = self.last_line.lock() else {
            return;
        };
        if !force && last.elapsed() < every {
            return;
        }
        *last = Instant::now();
        eprintln!("{}", line());
    }

    fn plain_line(&self) -> String {
        let eta = self
            .eta_s()
            .map_or_else(String::new, |s| format!(", about {s:.0}s left"));
        format!(
            "lore: ingest: files {}/{}, chunks {}/{} embedded ({:.1} chunks/s){eta}",
            self.files_done.load(Ordering::Relaxed),
            self.files_total.load(Ordering::Relaxed),
            self.chunks_done.load(Ordering::Relaxed),
            self.chunks_total.load(Ordering::Relaxed),
            self.rate(),
        )
    }

    fn json_line(&self) -> String {
        json!({ "progress": {
            "files_done": self.files_done.load(Ordering::Relaxed),
            "files_total": self.files_total.load(Ordering::Relaxed),
            "chunks_embedded": self.chunks_done.load(Ordering::Relaxed),
            "chunks_planned": self.chunks_total.load(Ordering::Relaxed),
            "chunks_per_s": (self.rate() * 10.0).round() / 10.0,
            "eta_s": self.eta_s().map(|s| s.round()),
            "elapsed_s": (self.start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "file": self.last_file(),
        }})
        .to_string()
    }

    fn refresh(&self, force: bool) {
        match &self.show {
            Show::Bar(bar) => {
                bar.set_position(self.files_done.load(Ordering::Relaxed));
                bar.set_message(format!(
                    "ETA {} · {} chunks ({:.1}/s) · {}",
                    self.eta_s().map_or_else(|| "…".to_string(), duration),
                    self.chunks_done.load(Ordering::Relaxed),
                    self.rate(),
                    tail(&self.last_file(), PATH_CHARS)
                ));
            }
            Show::Plain => self.throttled(PLAIN_EVERY, force, || self.plain_line()),
            Show::Json => self.throttled(JSON_EVERY, force, || self.json_line()),
        }
    }

    /// Clears the bar (or prints the last line).
    pub fn finish(&self) {
        match &self.show {
            Show::Bar(bar) => bar.finish_and_clear(),
            _ => self.refresh(true),
        }
    }
}

/// `seconds` as people read it: `42s`, `3m 05s`, `1h 02m`.
fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The last `chars` characters of `path`, after an ellipsis when cut.
fn tail(path: &str, chars: usize) -> String {
    let count = path.chars().count();
    if count <= chars {
        return path.to_string();
    }
    let rest: String = path.chars().skip(count - chars + 1).collect();
    format!("…{rest}")
}

impl Progress for IngestProgress {
    fn started(&self, files: u64) {
        self.files_total.store(files, Ordering::Relaxed);
        if let Show::Bar(bar) = &self.show {
            bar.set_length(files);
        }
        self.refresh(true);
    }

    fn planned(&self, chunks: u64) {
        self.chunks_total.fetch_add(chunks, Ordering::Relaxed);
    }

    fn file_done(&self, path: &str) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_file.lock() {
            last.clear();
            last.push_str(path);
        }
        self.refresh(false);
    }

    fn skipped(&self, skipped: &Skipped) {
        match &self.show {
            Show::Bar(bar) => bar.println(skipping(skipped)),
            Show::Plain => eprintln!("{}", skipping(skipped)),
            Show::Json => eprintln!("{}", json!({ "skipped": skipped })),
        }
    }

    fn embedded(&self, chunks: u64) {
        self.chunks_done.fetch_add(chunks, Ordering::Relaxed);
        self.refresh(false);
    }

    fn bytes_planned(&self, bytes: u64) {
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }

    fn bytes_read(&self, bytes: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }
}

fn skipping(skipped: &Skipped) -> String {
    format!("lore: skipping {}: {}", skipped.path, skipped.reason)
}

/// Shows the engine's progress events (`lore::progress`: a long
/// document's parts as they are read) as lines on stderr.
pub struct PartLines;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PartLines {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = match (fields.message.as_str(), fields.part, fields.parts) {
            ("reading", _, Some(parts)) => {
                format!("lore: the document is longer than one prompt: reading it in {parts} parts")
            }
            ("part read", Some(part), Some(parts)) => format!("lore: part {part} of {parts} read"),
            ("combining", _, Some(parts)) => {
                format!("lore: combining what {parts} parts said")
            }
            _ => return,
        };
        eprintln!("{line}");
    }
}

/// The fields of a progress event.
#[derive(Default)]
struct Fields {
    message: String,
    part: Option<u64>,
    parts: Option<u64>,
}

impl tracing::field::Visit for Fields {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        match field.name() {
            "part" => self.part = Some(value),
            "parts" => self.parts = Some(value),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(41.6), "42s");
        assert_eq!(duration(185.0), "3m 05s");
        assert_eq!(duration(3720.0), "1h 02m");
    }

    #[test]
    fn a_long_path_keeps_its_end() {
        assert_eq!(tail("docs/a.md", 48), "docs/a.md");
        let cut = tail("a/very/long/folder/name/that/goes/on/file.md", 12);
        assert_eq!(cut.chars().count(), 12);
        assert!(cut.starts_with('…') && cut.ends_with("file.md"));
    }
}
