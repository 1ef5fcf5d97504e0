//! Ingest progress for people: an indicatif bar on a terminal (files,
//! chunks, embedding rate, ETA), throttled plain lines on stderr otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lore::Progress;
use lore::ingest::Skipped;

/// Seconds between plain progress lines when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Progress reporting for `lore ingest`.
pub struct IngestProgress {
    bar: Option<ProgressBar>,
    files_total: AtomicU64,
    files_done: AtomicU64,
    chunks_total: AtomicU64,
    chunks_done: AtomicU64,
    start: Instant,
    last_line: Mutex<Instant>,
}

impl IngestProgress {
    /// A bar on a terminal, plain lines elsewhere.
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} chunks ({per_sec}, ETA {eta}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        IngestProgress {
            bar,
            files_total: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            chunks_total: AtomicU64::new(0),
            chunks_done: AtomicU64::new(0),
            start: Instant::now(),
            last_line: Mutex::new(Instant::now()),
        }
    }

    fn files_message(&self) -> String {
        format!(
            "files {}/{}",
            self.files_done.load(Ordering::Relaxed),
            self.files_total.load(Ordering::Relaxed)
        )
    }

    /// Prints a plain line at most every few seconds (or when `force`).
    fn plain_line(&self, force: bool) {
        let Ok(mut last) = self.last_line.lock() else {
            return;
        };
        if !force && last.elapsed() < PLAIN_EVERY {
            return;
        }
        *last = Instant::now();
        let done = self.chunks_done.load(Ordering::Relaxed);
        let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "lore: ingest: {}, chunks {}/{} embedded ({rate:.1} chunks/s)",
            self.files_message(),
            done,
            self.chunks_total.load(Ordering::Relaxed)
        );
    }

    fn refresh(&self) {
        match &self.bar {
            Some(bar) => bar.set_message(self.files_message()),
            None => self.plain_line(false),
        }
    }

    /// Clears the bar (or prints the last plain line).
    pub fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => self.plain_line(true),
        }
    }
}

impl Progress for IngestProgress {
    fn started(&self, files: u64) {
        self.files_total.store(files, Ordering::Relaxed);
        self.refresh();
    }

    fn planned(&self, chunks: u64) {
        let total = self.chunks_total.fetch_add(chunks, Ordering::Relaxed) + chunks;
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    fn file_done(&self, _path: &str) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
        self.refresh();
    }

    fn skipped(&self, skipped: &Skipped) {
        let line = format!("lore: skipping {}: {}", skipped.path, skipped.reason);
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn embedded(&self, chunks: u64) {
        self.chunks_done.fetch_add(chunks, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(chunks);
        }
        self.refresh();
    }
}
