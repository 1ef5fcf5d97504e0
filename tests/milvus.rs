//! A collection whose vectors live in Milvus, against a real server: Milvus
//! Lite (`milvus-lite server`, from PyPI), started and stopped here on a
//! loopback port. Run by `make test` through `scripts/milvus-checks.sh`,
//! which installs it; `LORE_MILVUS_LITE` names its executable.
//!
//! - The same hits in the same order as the embedded graph, on the shipped
//!   corpora, with and without document filters.
//! - kill -9 of lore mid-ingest: the index opens consistent (Milvus's count
//!   checked against sled) and a rerun ends where an uninterrupted run does.
//! - Milvus restarted mid-ingest: writes are retried; nothing is lost and
//!   nothing duplicated.
//! - Milvus unreachable: a clear error naming it, and nothing half written.

#[path = "util.rs"]
#[allow(dead_code)]
mod util;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::{json, lore, root, status};

/// A Milvus Lite server on a free loopback port, killed when dropped.
struct Milvus {
    exe: PathBuf,
    data: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Milvus {
    fn start(data: &Path) -> Milvus {
        let exe = std::env::var_os("LORE_MILVUS_LITE").map_or_else(
            || {
                PathBuf::from(std::env::var("HOME").unwrap())
                    .join(".cache/lore/milvus-venv/bin/milvus-lite")
            },
            PathBuf::from,
        );
        assert!(
            exe.is_file(),
            "Milvus Lite is not installed at {} (scripts/milvus-checks.sh installs it)",
            exe.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut milvus = Milvus {
            exe,
            data: data.to_path_buf(),
            port,
            child: None,
        };
        milvus.up();
        milvus
    }

    fn up(&mut self) {
        let child = Command::new(&self.exe)
            .args(["server", "--host", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .arg("--data-dir")
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("milvus-lite starts");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "Milvus Lite did not listen on {} within 90 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// A config file with `collection` in Milvus (every other setting
    /// default, `extra` appended).
    fn config(&self, dir: &Path, extra: &str) -> PathBuf {
        let path = dir.join("lore-milvus.toml");
        std::fs::write(
            &path,
            format!(
                "[collections.default]\nvectors = \"milvus\"\n\n[milvus]\n\
                 uri = \"http://127.0.0.1:{}\"\ntimeout_s = 30\n{extra}",
                self.port
            ),
        )
        .unwrap();
        path
    }
}

impl Drop for Milvus {
    fn drop(&mut self) {
        self.down();
    }
}

fn with_config(index: &Path, config: &Path) -> Command {
    let mut cmd = lore(index);
    cmd.arg("--config").arg(config);
    cmd
}

/// The chunk ids of the hits, with their scores.
fn hits(out: &serde_json::Value) -> Vec<(String, f64)> {
    out["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["chunk_id"].as_str().unwrap_or_default().to_string(),
                h["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The same scores rank by rank (within `eps`), and the same chunk at each
/// rank unless its score ties with another hit's.
fn same_ranking(a: &[(String, f64)], b: &[(String, f64)], eps: f64) -> bool {
    let tied = |score: f64| a.iter().filter(|(_, s)| (s - score).abs() < eps).count() > 1;
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((x, sx), (y, sy))| (sx - sy).abs() < eps && (x == y || tied(*sx)))
}

fn questions(path: &Path, n: usize) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["question"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn a_milvus_collection_answers_as_the_embedded_graph_does() {
    let tmp = tempfile::tempdir().unwrap();
    let milvus = Milvus::start(&tmp.path().join("milvus"));
    let config = milvus.config(tmp.path(), "");
    let corpora = [
        (
            root().join("corpora/handbook/docs"),
            root().join("corpora/handbook/questions.jsonl"),
        ),
        (root().join("corpora/tiny"), PathBuf::new()),
    ];
    let mut compared = 0;
    for (n, (corpus, asked)) in corpora.iter().enumerate() {
        let embedded = tmp.path().join(format!("embedded-{n}"));
        let remote = tmp.path().join(format!("milvus-{n}"));
        json(lore(&embedded).arg("ingest").arg(corpus).arg("--json"));
        json(
            with_config(&remote, &config)
                .arg("ingest")
                .arg(corpus)
                .arg("--json"),
        );
        let s = json(with_config(&remote, &config).args(["status", "--json"]));
        assert_eq!(s["consistent"], true, "{s}");
        assert_eq!(s["vectors"], status(&embedded)["vectors"], "{s}");
        // Opened without its Milvus settings, it refuses rather than
        // quietly serve (and diverge) from a local graph.
        let bare = lore(&remote).args(["status", "--json"]).output().unwrap();
        assert!(!bare.status.success());
        assert!(String::from_utf8_lossy(&bare.stderr).contains("Milvus"));
        let mut queries = if asked.as_os_str().is_empty() {
            vec![
                "how long do beans rest after roasting".to_string(),
                "loyalty points".into(),
            ]
        } else {
            questions(asked, 12)
        };
        queries.push("zebra quantum".into());
        // No filter, wide ones (searched with the filter applied to every
        // hit) and one that leaves a single file (its few slots sent to
        // Milvus as the filter).
        let mut files: Vec<String> = std::fs::read_dir(corpus)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let one = format!("path=*{}", files[0]);
        let filters: [&[&str]; 4] = [
            &[],
            &["--filter", "type=md"],
            &["--filter", "path=*o*"],
            &["--filter", &one],
        ];
        for query in &queries {
            for filter in filters {
                for mode in ["dense", "hybrid"] {
                    let search = |cmd: &mut Command| {
                        let args = ["search", query, "-k", "8", "--mode", mode, "--json"];
                        hits(&json(cmd.args(args).args(filter)))
                    };
                    let a = search(&mut lore(&embedded));
                    let b = search(&mut with_config(&remote, &config));
                    compared += a.len();
                    assert!(
                        same_ranking(&a, &b, 1e-4),
                        "{query:?} {filter:?} {mode}:\nembedded {a:?}\nmilvus   {b:?}"
                    );
                }
            }
        }
    }
    // A read-only replica of such a collection is refused (its snapshot
    // lags the shared Milvus collection).
    let replica = with_config(&tmp.path().join("milvus-0"), &config)
        .args(["serve", "--read-only", "--addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(replica.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&replica.stderr).contains("read-only replica"));
    eprintln!("{compared} hits compared");
    assert!(compared > 500, "only {compared} hits compared");
}

/// The notes of the crash test: `files` files of six sections each.
fn write_corpus(dir: &Path, files: usize) {
    const WORDS: &[&str] = &[
        "ledger", "invoice", "replica", "pager", "latency", "budget", "deploy", "rollback",
        "quota", "tenant", "cluster", "schema", "backup", "token", "audit", "the", "of", "and",
    ];
    let mut state = 7u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..files {
        let mut text = format!("# Note {f}\n\n");
        for p in 0..6 {
            text.push_str(&format!("## Part {p}\n\n"));
            for _ in 0..60 {
                text.push_str(WORDS[next() % WORDS.len()]);
                text.push(' ');
            }
            text.push_str("\n\n");
        }
        std::fs::write(dir.join(format!("note-{f:03}.md")), text).unwrap();
    }
}

fn counts(s: &serde_json::Value) -> Vec<u64> {
    ["documents", "chunks", "vectors", "keyword_docs"]
        .iter()
        .map(|k| s[k].as_u64().unwrap())
        .collect()
}

#[test]
fn kills_restarts_and_outages_lose_nothing_and_duplicate_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut milvus = Milvus::start(&tmp.path().join("milvus"));
    let config = milvus.config(tmp.path(), "[ingest]\ncheckpoint_chunks = 24\n");
    let corpus = tmp.path().join("docs");
    write_corpus(&corpus, 60);
    let reference = tmp.path().join("reference");
    let start = Instant::now();
    json(lore(&reference).arg("ingest").arg(&corpus).arg("--json"));
    let full = start.elapsed();
    let expected = counts(&status(&reference));

    // kill -9 of lore at points through the ingest.
    let victim = tmp.path().join("victim");
    for round in 0..3 {
        let mut child = with_config(&victim, &config)
            .arg("ingest")
            .arg(&corpus)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = full
            .mul_f64(0.3 + 0.2 * round as f64)
            .max(Duration::from_millis(300));
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        let s = json(with_config(&victim, &config).args(["status", "--json"]));
        eprintln!("killed after {delay:?}: {:?}", counts(&s));
        assert_eq!(s["consistent"], true, "round {round}: {s}");
    }
    json(
        with_config(&victim, &config)
            .arg("ingest")
            .arg(&corpus)
            .arg("--json"),
    );
    let s = json(with_config(&victim, &config).args(["status", "--json"]));
    assert_eq!(s["consistent"], true, "{s}");
    assert_eq!(counts(&s), expected, "{s}");

    // Changed and removed documents: their old vectors leave Milvus.
    for f in 0..5 {
        let path = corpus.join(format!("note-{f:03}.md"));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("ledger", "quarry")).unwrap();
    }
    let gone = tmp.path().join("gone");
    std::fs::create_dir_all(&gone).unwrap();
    for f in 5..8 {
        let name = format!("note-{f:03}.md");
        std::fs::rename(corpus.join(&name), gone.join(&name)).unwrap();
    }
    json(lore(&reference).arg("ingest").arg(&corpus).arg("--json"));
    let expected = counts(&status(&reference));
    let report = json(
        with_config(&victim, &config)
            .arg("ingest")
            .arg(&corpus)
            .arg("--json"),
    );
    assert!(report["chunks_embedded"].as_u64() > Some(0), "{report}");
    let s = json(with_config(&victim, &config).args(["status", "--json"]));
    assert_eq!(s["consistent"], true, "{s}");
    assert_eq!(counts(&s), expected, "{s}");
    let found = json(
        with_config(&victim, &config)
            .args(["search", "ledger", "-k", "50", "--mode", "dense", "--json"]),
    );
    for f in 5..8 {
        assert!(
            !found.to_string().contains(&format!("note-{f:03}.md")),
            "{found}"
        );
    }

    // `lore index rebuild` makes the Milvus collection anew from sled.
    let rebuilt = json(with_config(&victim, &config).args(["index", "rebuild", "--json"]));
    assert_eq!(rebuilt["consistent"], true, "{rebuilt}");
    assert_eq!(counts(&rebuilt), expected, "{rebuilt}");
    let again = json(
        with_config(&victim, &config)
            .args(["search", "ledger", "-k", "50", "--mode", "dense", "--json"]),
    );
    assert_eq!(hits(&again), hits(&found));

    // Milvus restarted while lore writes: retried, nothing lost or doubled.
    let second = tmp.path().join("second");
    let mut child = with_config(&second, &config)
        .arg("ingest")
        .arg(&corpus)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(full.mul_f64(0.4).max(Duration::from_millis(300)));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the ingest ended before the restart"
    );
    milvus.down();
    std::thread::sleep(Duration::from_secs(2));
    milvus.up();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the ingest did not ride out a Milvus restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = json(with_config(&second, &config).args(["status", "--json"]));
    assert_eq!(s["consistent"], true, "{s}");
    assert_eq!(counts(&s), expected, "{s}");

    // Milvus unreachable: searches and writes fail, saying where.
    milvus.down();
    let fast = milvus.config(tmp.path(), "");
    let fast_text = std::fs::read_to_string(&fast)
        .unwrap()
        .replace("timeout_s = 30", "timeout_s = 3");
    std::fs::write(&fast, fast_text).unwrap();
    let search = with_config(&second, &fast)
        .args(["search", "ledger invoice", "--json"])
        .output()
        .unwrap();
    assert!(!search.status.success());
    let err = String::from_utf8_lossy(&search.stderr);
    assert!(err.contains(&format!("127.0.0.1:{}", milvus.port)), "{err}");
    let extra = tmp.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(
        extra.join("late.md"),
        "# Late\n\nA ledger entry written while Milvus was down.\n",
    )
    .unwrap();
    let ingest = with_config(&second, &fast)
        .arg("ingest")
        .arg(&extra)
        .output()
        .unwrap();
    assert!(
        !ingest.status.success(),
        "an ingest with Milvus down succeeded"
    );
    // Back up: the index opens consistent, holding everything or nothing
    // of the refused write, and the same ingest then completes.
    milvus.up();
    let s = json(with_config(&second, &config).args(["status", "--json"]));
    assert_eq!(s["consistent"], true, "{s}");
    json(
        with_config(&second, &config)
            .arg("ingest")
            .arg(&extra)
            .arg("--json"),
    );
    let s = json(with_config(&second, &config).args(["status", "--json"]));
    assert_eq!(s["consistent"], true, "{s}");
    assert_eq!(s["documents"].as_u64(), Some(expected[0] + 1), "{s}");
    let found = json(with_config(&second, &config).args([
        "search",
        "ledger entry written while Milvus was down",
        "-k",
        "1",
        "--json",
    ]));
    assert!(found.to_string().contains("late.md"), "{found}");
}

/// One HTTP/1.1 request with a bearer key; the status and the body.
fn post(addr: &str, path: &str, key: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut reply = String::new();
    if stream.write_all(raw.as_bytes()).is_err() || stream.read_to_string(&mut reply).is_err() {
        return (0, String::new());
    }
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

#[test]
fn access_lists_hold_on_a_milvus_collection_served_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let milvus = Milvus::start(&tmp.path().join("milvus"));
    let config = milvus.config(tmp.path(), "[server]\ngenerations = 1\n");
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for entry in std::fs::read_dir(root().join("corpora/tiny"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(entry.path(), docs.join(entry.file_name())).unwrap();
    }
    std::fs::write(
        docs.join("secret.md"),
        "---\ntitle: Salaries\naccess: [hr]\n---\n# Salaries\n\nThe wolframite salary band tops out at 91,000 a year.\n",
    )
    .unwrap();
    let index = tmp.path().join("index");
    json(
        with_config(&index, &config)
            .arg("ingest")
            .arg(&docs)
            .arg("--json"),
    );
    let key = |groups: &[&str]| {
        let created = json(
            with_config(&index, &config)
                .args(["key", "create", "--role", "read", "--json"])
                .args(groups),
        );
        created["secret"].as_str().unwrap().to_string()
    };
    let (hr, plain) = (key(&["--groups", "hr"]), key(&[]));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = with_config(&index, &config)
        .args(["serve", "--addr", &addr, "--generator", "light"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while post(&addr, "/v1/search", &plain, "{}").0 == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "lore serve did not come up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for mode in ["dense", "hybrid"] {
        let body = format!(r#"{{"query": "wolframite salary band", "k": 5, "mode": "{mode}"}}"#);
        let (status, seen) = post(&addr, "/v1/search", &hr, &body);
        assert_eq!(status, 200, "{seen}");
        let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
        assert!(
            seen["hits"][0]["path"]
                .as_str()
                .unwrap()
                .ends_with("secret.md"),
            "{seen}"
        );
        let (status, hidden) = post(&addr, "/v1/search", &plain, &body);
        assert_eq!(status, 200, "{hidden}");
        let hidden: serde_json::Value = serde_json::from_str(&hidden).unwrap();
        let hits = hidden["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 5, "k is still filled: {hidden}");
        assert!(!hidden.to_string().contains("wolframite"), "{hidden}");
    }
    server.kill().ok();
    server.wait().ok();
}

#[test]
fn a_token_file_that_is_missing_or_empty_is_refused_never_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let milvus = Milvus::start(&tmp.path().join("milvus"));
    let token = tmp.path().join("token");
    let line = format!("token_file = \"{}\"\n", token.display());
    let config = milvus.config(tmp.path(), &line);
    let config_text = std::fs::read_to_string(&config).unwrap();
    // `extra` lands after timeout_s, inside [milvus].
    assert!(config_text.contains("[milvus]") && config_text.ends_with(&line));
    let index = tmp.path().join("index");
    for (contents, says) in [(None, "token"), (Some("  \n"), "empty")] {
        if let Some(contents) = contents {
            std::fs::write(&token, contents).unwrap();
        }
        let out = with_config(&index, &config)
            .args(["status", "--json"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "opened without its token");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
    std::fs::write(&token, "root:Milvus\n").unwrap();
    json(with_config(&index, &config).args(["status", "--json"]));
}
