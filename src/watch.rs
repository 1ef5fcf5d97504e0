//! Keeping an index fresh: a [`Watcher`] follows folders' file-system
//! events (the `notify` crate: inotify on Linux), waits until they quiet
//! down, and then ingests each folder that changed, the way `lore ingest`
//! does: a walk that compares every file's size and modification time with
//! the index, re-embeds only new and changed files and removes what is
//! gone. So the watcher keeps ingest's guarantees by construction: ignore
//! rules, size limits, symlinks that never leave the folder, broken files
//! skipped with a message, and the same crash safety (a killed process
//! leaves an index that opens, consistent, at its last checkpoint).
//!
//! Why whole folders rather than the paths the events name: an editor's
//! save-by-rename, a move, a `git checkout` of thousands of files and a
//! directory deleted at once all become "this folder changed", with no
//! event pairing to get wrong; the walk that follows costs one `stat` per
//! unchanged file, next to which embedding the changed ones dominates.
//! Files still being written keep sending events, which holds the batch
//! back (up to `max_delay`); a file caught half-written is re-ingested by
//! its next event. A periodic rescan catches events the OS dropped (an
//! inotify queue overflow also asks for one at once).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher as _};
use serde::Serialize;

use crate::config::WatchConfig;
use crate::engine::{Engine, IngestReport, NoProgress, WriteScope};
use crate::error::{Error, Result};

/// Ingests folders: what a watcher calls for each batch (an engine's
/// `ingest`, or a running server's).
pub type Apply = dyn Fn(&[PathBuf]) -> Result<IngestReport> + Send;

/// One applied batch.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    /// The folders ingested.
    pub roots: Vec<PathBuf>,
    /// File-system events it covers.
    pub events: u64,
    /// Whether a rescan (timer or dropped events) caused it.
    pub rescan: bool,
    /// Seconds from its first event to the end of its ingest.
    pub lag_s: f64,
    /// What the ingest did; `None` when it failed.
    pub report: Option<IngestReport>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Counters of a watcher, for `/metrics`.
#[derive(Debug, Default)]
pub struct WatchStats {
    events: AtomicU64,
    batches: AtomicU64,
    rescans: AtomicU64,
    errors: AtomicU64,
    /// Microseconds since `epoch` of the oldest event not yet applied
    /// (0: none pending).
    pending_since_us: AtomicU64,
    last_lag_us: AtomicU64,
    max_lag_us: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

/// A reading of [`WatchStats`].
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct WatchReading {
    /// Events seen.
    pub events: u64,
    /// Batches applied.
    pub batches: u64,
    /// Rescans run.
    pub rescans: u64,
    /// Batches or event streams that failed.
    pub errors: u64,
    /// Seconds the oldest unapplied event has waited (0: up to date).
    pub lag_s: f64,
    /// Lag of the last applied batch, seconds.
    pub last_lag_s: f64,
    /// Largest lag of any batch, seconds.
    pub max_lag_s: f64,
}

impl WatchStats {
    fn micros(&self, at: Instant) -> u64 {
        let epoch = *self.epoch.get_or_init(Instant::now);
        (at.saturating_duration_since(epoch).as_micros() as u64).max(1)
    }

    /// The counters now.
    pub fn read(&self) -> WatchReading {
        let since = self.pending_since_us.load(Ordering::Relaxed);
        let now = self.micros(Instant::now());
        let secs = |us: u64| us as f64 / 1e6;
        WatchReading {
            events: self.events.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            rescans: self.rescans.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            lag_s: if since == 0 {
                0.0
            } else {
                secs(now.saturating_sub(since))
            },
            last_lag_s: secs(self.last_lag_us.load(Ordering::Relaxed)),
            max_lag_s: secs(self.max_lag_us.load(Ordering::Relaxed)),
        }
    }

    fn applied(&self, lag: Duration) {
        let us = lag.as_micros() as u64;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.last_lag_us.store(us, Ordering::Relaxed);
        self.max_lag_us.fetch_max(us, Ordering::Relaxed);
        self.pending_since_us.store(0, Ordering::Relaxed);
    }
}

enum Message {
    /// An event, with when it arrived (the lag counts from there, not from
    /// when this thread got to it).
    Fs(Instant, notify::Result<notify::Event>),
    Stop,
}

/// Follows folders and applies their changes until dropped.
pub struct Watcher {
    stats: Arc<WatchStats>,
    stop: Sender<Message>,
    thread: Option<JoinHandle<()>>,
    /// Held for its events; dropping it ends them.
    _fs: notify::RecommendedWatcher,
}

impl Watcher {
    /// Watches `roots` (folders, recursively), leaving out events under
    /// `ignore` (the index directory), and calls `apply` with the roots
    /// that changed, then `on_batch` with the outcome. With `scan_first`,
    /// the roots are applied once at start (what changed while nobody
    /// watched); otherwise only changes from now on are.
    pub fn start(
        roots: &[PathBuf],
        ignore: Option<&Path>,
        scan_first: bool,
        config: &WatchConfig,
        apply: Box<Apply>,
        on_batch: Box<dyn FnMut(&Batch) + Send>,
    ) -> Result<Watcher> {
        let roots = canonical_roots(roots)?;
        let (tx, rx) = channel();
        let events = tx.clone();
        // Symlinks are not followed, as the walk does not follow them: a
        // link to `/usr` or `/` must not set a watch on every folder there.
        let mut fs = notify::RecommendedWatcher::new(
            move |event| {
                let _ = events.send(Message::Fs(Instant::now(), event));
            },
            notify::Config::default().with_follow_symlinks(false),
        )
        .map_err(|e| Error::Config(format!("cannot watch files: {e}")))?;
        for root in &roots {
            fs.watch(root, RecursiveMode::Recursive).map_err(|e| {
                Error::Config(format!(
                    "cannot watch {}: {e} (on Linux, fs.inotify.max_user_watches may be too low)",
                    root.display()
                ))
            })?;
        }
        let stats = Arc::new(WatchStats::default());
        stats.micros(Instant::now());
        let ignore = ignore.and_then(|p| p.canonicalize().ok());
        let mut lane = Lane {
            roots,
            ignore,
            config: config.clone(),
            apply,
            on_batch,
            stats: stats.clone(),
            dirty: Vec::new(),
        };
        if scan_first {
            lane.mark_all(Instant::now(), true);
        }
        let thread = std::thread::Builder::new()
            .name("lore-watch".into())
            .spawn(move || lane.run(&rx))
            .map_err(|e| Error::Config(format!("cannot start the watcher: {e}")))?;
        Ok(Watcher {
            stats,
            stop: tx,
            thread: Some(thread),
            _fs: fs,
        })
    }

    /// Watches `roots` for `collection` of `engine`, ingesting into it
    /// (see [`Watcher::start`]).
    pub fn for_engine(
        engine: Arc<Engine>,
        collection: &str,
        roots: &[PathBuf],
        scan_first: bool,
        config: &WatchConfig,
        on_batch: Box<dyn FnMut(&Batch) + Send>,
    ) -> Result<Watcher> {
        engine.collection(collection)?;
        let index = engine.dir().to_path_buf();
        let name = collection.to_string();
        let scope = WriteScope::owner(WATCH_ACTOR);
        let apply = move |roots: &[PathBuf]| engine.ingest(&name, roots, &scope, &NoProgress);
        Self::start(
            roots,
            Some(&index),
            scan_first,
            config,
            Box::new(apply),
            on_batch,
        )
    }

    /// The watcher's counters.
    pub fn stats(&self) -> Arc<WatchStats> {
        self.stats.clone()
    }
}

/// The audit trail's actor for batches a watcher applies.
pub const WATCH_ACTOR: &str = "watch";

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.stop.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The roots as canonical folders; a file or a missing path is an error.
fn canonical_roots(roots: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if roots.is_empty() {
        return Err(Error::InvalidRequest("nothing to watch".into()));
    }
    roots
        .iter()
        .map(|root| {
            let canonical = root.canonicalize().map_err(|e| Error::io(root, e))?;
            if !canonical.is_dir() {
                return Err(Error::InvalidRequest(format!(
                    "{} is not a folder; lore watches folders",
                    root.display()
                )));
            }
            Ok(canonical)
        })
        .collect()
}

/// A root with unapplied changes.
struct Dirty {
    root: usize,
    events: u64,
    first: Instant,
    last: Instant,
    rescan: bool,
}

/// The watcher's thread: gathers events into dirty roots and applies them.
struct Lane {
    roots: Vec<PathBuf>,
    ignore: Option<PathBuf>,
    config: WatchConfig,
    apply: Box<Apply>,
    on_batch: Box<dyn FnMut(&Batch) + Send>,
    stats: Arc<WatchStats>,
    dirty: Vec<Dirty>,
}

impl Lane {
    fn run(&mut self, rx: &Receiver<Message>) {
        let debounce = Duration::from_millis(self.config.debounce_ms);
        let max_delay = Duration::from_millis(self.config.max_delay_ms);
        let rescan = (self.config.rescan_s > 0).then(|| Duration::from_secs(self.config.rescan_s));
        let mut next_rescan = rescan.map(|every| Instant::now() + every);
        loop {
            let now = Instant::now();
            let due = self
                .dirty
                .iter()
                .map(|d| (d.last + debounce).min(d.first + max_delay))
                .chain(next_rescan)
                .min();
            let wait = due.map_or(Duration::from_secs(3600), |at| {
                at.saturating_duration_since(now)
            });
            match rx.recv_timeout(wait) {
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Message::Fs(at, Ok(event))) => self.event(at, &event),
                Ok(Message::Fs(at, Err(err))) => {
                    tracing::warn!(error = %err, "file-system events were lost; rescanning");
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    self.mark_all(at, true);
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if let (Some(at), Some(every)) = (next_rescan, rescan)
                && now >= at
            {
                self.stats.rescans.fetch_add(1, Ordering::Relaxed);
                self.mark_all(now, true);
                next_rescan = Some(now + every);
            }
            let ready = self
                .dirty
                .iter()
                .any(|d| now >= d.last + debounce || now >= d.first + max_delay);
            if ready {
                self.apply_dirty();
            }
        }
    }

    fn event(&mut self, at: Instant, event: &notify::Event) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        if event.need_rescan() {
            self.stats.rescans.fetch_add(1, Ordering::Relaxed);
            self.mark_all(at, true);
            return;
        }
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        for path in &event.paths {
            if self.ignore.as_ref().is_some_and(|i| path.starts_with(i)) {
                continue;
            }
            if let Some(root) = self.roots.iter().position(|r| path.starts_with(r)) {
                self.mark(root, at, false);
            }
        }
    }

    fn mark_all(&mut self, at: Instant, rescan: bool) {
        for root in 0..self.roots.len() {
            self.mark(root, at, rescan);
        }
    }

    /// Root `root` changed at `at`.
    fn mark(&mut self, root: usize, at: Instant, rescan: bool) {
        if let Some(dirty) = self.dirty.iter_mut().find(|d| d.root == root) {
            dirty.events += 1;
            dirty.first = dirty.first.min(at);
            dirty.last = dirty.last.max(at);
            dirty.rescan |= rescan;
            return;
        }
        if self.dirty.is_empty() {
            let since = self.stats.micros(at);
            self.stats.pending_since_us.store(since, Ordering::Relaxed);
        }
        self.dirty.push(Dirty {
            root,
            events: 1,
            first: at,
            last: at,
            rescan,
        });
    }

    /// Ingests every dirty root in one call (one walk, one change set).
    fn apply_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        let roots: Vec<PathBuf> = dirty.iter().map(|d| self.roots[d.root].clone()).collect();
        let first = dirty
            .iter()
            .map(|d| d.first)
            .min()
            .unwrap_or_else(Instant::now);
        let outcome = (self.apply)(&roots);
        let lag = first.elapsed();
        self.stats.applied(lag);
        let (report, error) = match outcome {
            Ok(report) => (Some(report), None),
            Err(err) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, "watch: ingest failed");
                (None, Some(err.to_string()))
            }
        };
        let batch = Batch {
            roots,
            events: dirty.iter().map(|d| d.events).sum(),
            rescan: dirty.iter().any(|d| d.rescan),
            lag_s: lag.as_secs_f64(),
            report,
            error,
        };
        if let Some(report) = &batch.report {
            tracing::info!(
                added = report.added,
                updated = report.updated,
                removed = report.removed,
                skipped = report.skipped.len(),
                lag_s = batch.lag_s,
                "watch: applied"
            );
        }
        (self.on_batch)(&batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn fast() -> WatchConfig {
        WatchConfig {
            debounce_ms: 50,
            max_delay_ms: 500,
            rescan_s: 0,
        }
    }

    /// A watcher whose apply records the roots it was given.
    fn recording(root: &Path, config: &WatchConfig) -> (Watcher, Arc<Mutex<Vec<Vec<PathBuf>>>>) {
        let seen: Arc<Mutex<Vec<Vec<PathBuf>>>> = Arc::default();
        let log = seen.clone();
        let apply = move |roots: &[PathBuf]| {
            log.lock().unwrap().push(roots.to_vec());
            Ok(IngestReport::default())
        };
        let watcher = Watcher::start(
            &[root.to_path_buf()],
            None,
            false,
            config,
            Box::new(apply),
            Box::new(|_| {}),
        )
        .unwrap();
        (watcher, seen)
    }

    fn wait_for(what: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn a_burst_of_events_is_applied_as_few_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (watcher, seen) = recording(dir.path(), &fast());
        for i in 0..300 {
            std::fs::write(dir.path().join(format!("f{i}.txt")), "x").unwrap();
        }
        assert!(wait_for(|| !seen.lock().unwrap().is_empty()));
        std::thread::sleep(Duration::from_millis(300));
        let batches = seen.lock().unwrap().len();
        assert!(batches <= 3, "{batches} batches for one burst");
        let reading = watcher.stats().read();
        assert!(reading.events >= 300, "{reading:?}");
        assert_eq!(reading.lag_s, 0.0);
        assert!(reading.last_lag_s > 0.0);
        let root = dir.path().canonicalize().unwrap();
        assert!(
            seen.lock()
                .unwrap()
                .iter()
                .all(|b| b == &vec![root.clone()])
        );
    }

    /// The most watches any inotify instance of this process holds.
    fn most_inotify_watches() -> usize {
        let mut most = 0;
        for fd in std::fs::read_dir("/proc/self/fdinfo").unwrap().flatten() {
            let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
            most = most.max(
                info.lines()
                    .filter(|l| l.starts_with("inotify wd:"))
                    .count(),
            );
        }
        most
    }

    #[test]
    fn a_symlink_to_a_big_tree_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        for i in 0..300 {
            std::fs::create_dir_all(outside.join(format!("d{i}"))).unwrap();
        }
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let (_watcher, _) = recording(&root, &fast());
        let most = most_inotify_watches();
        assert!(most < 300, "{most} watches: the link was followed");
    }

    #[test]
    fn events_under_the_ignored_folder_are_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("index");
        std::fs::create_dir(&index).unwrap();
        let seen: Arc<Mutex<u32>> = Arc::default();
        let log = seen.clone();
        let apply = move |_: &[PathBuf]| {
            *log.lock().unwrap() += 1;
            Ok(IngestReport::default())
        };
        let _watcher = Watcher::start(
            &[dir.path().to_path_buf()],
            Some(&index),
            false,
            &fast(),
            Box::new(apply),
            Box::new(|_| {}),
        )
        .unwrap();
        std::fs::write(index.join("db"), "x").unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(*seen.lock().unwrap(), 0);
        std::fs::write(dir.path().join("doc.md"), "x").unwrap();
        assert!(wait_for(|| *seen.lock().unwrap() == 1));
    }

    #[test]
    fn the_rescan_timer_applies_without_events() {
        let dir = tempfile::tempdir().unwrap();
        let config = WatchConfig {
            rescan_s: 1,
            ..fast()
        };
        let (watcher, seen) = recording(dir.path(), &config);
        assert!(wait_for(|| !seen.lock().unwrap().is_empty()));
        assert!(watcher.stats().read().rescans >= 1);
    }

    #[test]
    fn a_file_is_not_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "x").unwrap();
        let apply = |_: &[PathBuf]| Ok(IngestReport::default());
        let err = Watcher::start(
            &[file],
            None,
            false,
            &fast(),
            Box::new(apply),
            Box::new(|_| {}),
        );
        assert!(matches!(err, Err(Error::InvalidRequest(_))));
    }
}
