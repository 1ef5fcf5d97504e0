//! Helpers for the integration tests: run the built `lore` binary against a
//! temporary index, and find the installed models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The models directory; the tests that need real models fail loudly when
/// it is missing instead of passing vacuously.
pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("LORE_MODELS").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/lore/models"),
        PathBuf::from,
    );
    assert!(
        dir.join("all-minilm-l6-v2/model.safetensors").is_file(),
        "models missing in {}: run scripts/install-models.sh",
        dir.display()
    );
    dir
}

/// The repository root (where `corpora/` lives).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `lore` command using `index` and nothing from the caller's environment
/// or working directory.
pub fn lore(index: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lore"));
    cmd.env_remove("LORE_INDEX")
        .env_remove("LORE_CONFIG")
        .env_remove("LORE_EMBEDDER")
        .env("LORE_MODELS", models_dir())
        .env("LORE_THREADS", "2")
        .arg("--index")
        .arg(index)
        .current_dir(index.parent().unwrap());
    cmd
}

/// Runs `cmd`, asserts success, and parses its stdout as JSON.
pub fn json(cmd: &mut Command) -> serde_json::Value {
    let out = run_ok(cmd);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs `cmd` and asserts it exited 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("lore runs");
    assert!(
        out.status.success(),
        "lore failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `lore status --json` for `index`.
pub fn status(index: &Path) -> serde_json::Value {
    json(lore(index).args(["status", "--json"]))
}

/// A temporary directory holding an index of `corpus` (relative to the
/// repository root); keep the directory alive while the index is used.
pub fn ingested(corpus: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    json(
        lore(&index)
            .arg("ingest")
            .arg(root().join(corpus))
            .arg("--json"),
    );
    (tmp, index)
}

/// Runs `cmd`, expecting it to fail; returns its exit code and stderr.
pub fn fails(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().expect("lore runs");
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A small deterministic generator (no dependency needed for test data).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

const WORDS: &[&str] = &[
    "ledger", "invoice", "replica", "pager", "latency", "budget", "deploy", "rollback", "quota",
    "tenant", "cluster", "schema", "backup", "token", "audit", "merchant", "refund", "webhook",
    "cache", "shard", "the", "a", "of", "and", "to", "is", "when", "after", "before", "every",
];

/// `files` notes of six sections of 60 words each, drawn by `rng`: the
/// corpus of the crash tests.
pub fn write_corpus(dir: &Path, files: usize, rng: &mut Lcg) {
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..files {
        let mut text = format!("# Note {f}\n\n");
        for p in 0..6 {
            text.push_str(&format!("## Part {p}\n\n"));
            for _ in 0..60 {
                text.push_str(WORDS[(rng.next() % WORDS.len() as u64) as usize]);
                text.push(' ');
            }
            text.push_str("\n\n");
        }
        std::fs::write(dir.join(format!("note-{f:03}.md")), text).unwrap();
    }
}
