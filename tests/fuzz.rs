//! Property-based fuzzing (proptest) of what reads untrusted bytes: the
//! loaders (HTML, Markdown, PDF, JSONL, text, code) on mutated real files
//! and on generated deep nesting, and opening an index whose files were
//! damaged. The property: no panic, no abort, every failure a reason or an
//! error; an index whose derived stores were damaged opens consistent.
//!
//! `LORE_FUZZ_CASES` sets the cases per target (default 48, CI's short
//! run); the closing notes report longer runs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use proptest::prelude::*;

use lore::config::Config;
use lore::embed::hash::HashEmbedder;
use lore::engine::{Engine, NoProgress};
use lore::ingest::{load, sandbox};
use lore::search::{Mode, SearchRequest};

use crate::util::root;

fn cases() -> u32 {
    std::env::var("LORE_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(48)
}

/// PDFs go to the real helper process, as in `lore ingest`.
fn helper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| sandbox::use_helper(PathBuf::from(env!("CARGO_BIN_EXE_lore"))));
}

/// Real files of every format the loaders read.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let docs = root().join("corpora/handbook/docs");
    let mut seeds: Vec<(String, Vec<u8>)> = [
        "hr/parental-leave.html",
        "services/auth-gateway.html",
        "oncall/paging-policy.md",
        "hr/travel-policy.pdf",
        "engineering/rotate_credentials.py",
    ]
    .iter()
    .map(|p| (p.to_string(), std::fs::read(docs.join(p)).unwrap()))
    .collect();
    seeds.push((
        "corpus.jsonl".into(),
        br#"{"_id": "1", "title": "A", "text": "alpha", "tags": [1, {"b": [2]}]}
{"_id": 2, "text": "beta"}
"#
        .to_vec(),
    ));
    seeds.push((
        "notes.txt".into(),
        "Plain text, café.\n".repeat(20).into_bytes(),
    ));
    seeds
}

/// One change to a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    /// Repeats a slice many times: deep nesting from a file's own tags.
    Repeat(usize, usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let markup = prop::sample::select(vec![
        b"<div>".to_vec(),
        b"<svg>".to_vec(),
        b"<script>".to_vec(),
        b"</".to_vec(),
        b"&#x".to_vec(),
        b"> ".to_vec(),
        b"[".to_vec(),
        b"{\"a\":".to_vec(),
        b"<<".to_vec(),
        b"stream\n".to_vec(),
        b"/FlateDecode".to_vec(),
        b"---\n".to_vec(),
        b"<|im_start|>".to_vec(),
        vec![0xff, 0xfe],
        vec![0],
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<usize>(), markup).prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<usize>(), 1usize..4096).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), 1usize..16, 1usize..20_000)
            .prop_map(|(at, len, times)| Mutation::Repeat(at, len, times)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match *m {
        Mutation::Flip(i, b) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            bytes[i] ^= b | 1;
        }
        Mutation::Insert(i, ref new) => {
            let i = at(i, bytes.len() + 1);
            bytes.splice(i..i, new.iter().copied());
        }
        Mutation::Delete(i, n) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            bytes.drain(i..(i + n).min(bytes.len()));
        }
        Mutation::Repeat(i, len, times) if !bytes.is_empty() => {
            let i = at(i, bytes.len());
            let slice = bytes[i..(i + len).min(bytes.len())].to_vec();
            let repeated: Vec<u8> = slice
                .iter()
                .copied()
                .cycle()
                .take(slice.len() * times)
                .collect();
            bytes.splice(i..i, repeated);
        }
        Mutation::Truncate(i) => bytes.truncate(at(i, bytes.len() + 1)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn loaders_never_panic_on_mutated_files(
        seed in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        helper();
        let seeds = seeds();
        let (name, mut bytes) = seeds[seed.index(seeds.len())].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let path = Path::new("/fuzz").join(&name);
        // Ok or a reason; a panic or an abort fails the test.
        if let Ok(docs) = load::load(&path, &bytes, 8 << 20) {
            for doc in docs {
                prop_assert!(doc.text.len() <= 8 << 20);
            }
        }
    }

    #[test]
    fn loaders_never_panic_on_deep_nesting(
        open in prop::sample::select(vec!["<div>", "<b>", "<table><tr><td>", "<svg>", "> ", "- ", "[", "{\"a\":", "<< /A ", "(", "```\n"]),
        depth in 1usize..200_000,
        ext in prop::sample::select(vec!["html", "md", "jsonl", "pdf", "rs", "py", "json", "txt"]),
    ) {
        helper();
        let text = format!("{}text{}", open.repeat(depth), "</div>".repeat(depth / 2));
        let path = PathBuf::from(format!("/fuzz/deep.{ext}"));
        let _ = load::load(&path, text.as_bytes(), 8 << 20);
    }
}

/// A small index made with the hash embedder; returns its directory.
fn small_index(dir: &Path) -> PathBuf {
    let index = dir.join("index");
    let engine = engine(&index).unwrap();
    engine
        .ingest(
            "default",
            &[root().join("corpora/tiny")],
            &lore::WriteScope::owner("test"),
            &NoProgress,
        )
        .unwrap();
    drop(engine);
    index
}

fn engine(index: &Path) -> lore::error::Result<Engine> {
    let mut config = Config {
        index: index.to_path_buf(),
        ..Config::default()
    };
    config.chunk.max_tokens = 64;
    Engine::with_embedder(config, Arc::new(HashEmbedder::new(32)))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    for file in files_under(from) {
        let target = to.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn damaged_derived_stores_never_wedge_the_index(
        picks in prop::collection::vec((any::<prop::sample::Index>(), mutation(), any::<bool>()), 1..6),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let pristine = small_index(&tmp.path().join("pristine"));
        let index = tmp.path().join("damaged");
        copy_dir(&pristine, &index);
        // The keyword index and the graph are derived: whatever happens to
        // them, the index opens and is consistent again.
        let derived: Vec<PathBuf> = files_under(&index)
            .into_iter()
            .filter(|p| p.starts_with(index.join("keywords")) || p.starts_with(index.join("vectors")))
            .collect();
        for (pick, m, delete) in &picks {
            let file = &derived[pick.index(derived.len())];
            if !file.exists() {
                continue;
            }
            if *delete {
                std::fs::remove_file(file).unwrap();
            } else {
                let mut bytes = std::fs::read(file).unwrap();
                apply(&mut bytes, m);
                std::fs::write(file, bytes).unwrap();
            }
        }
        let engine = engine(&index).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let status = engine.status("default").unwrap();
        prop_assert!(status.consistent, "{status:?}");
        for mode in [Mode::Dense, Mode::Bm25, Mode::Hybrid] {
            let found = engine.search(&SearchRequest::new("coffee beans", 3, mode)).unwrap();
            prop_assert!(!found.hits.is_empty(), "{mode:?}");
        }
    }
}
