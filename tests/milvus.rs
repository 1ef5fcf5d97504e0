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

use util::{Lcg, copy_dir, json, lore, root, status, write_corpus};

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
    eprintln!("{compared} hits compared");
    assert!(compared > 500, "only {compared} hits compared");
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
    write_corpus(&corpus, 60, &mut Lcg(7));
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
    let auth = if key.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {key}\r\n")
    };
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\
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
    copy_dir(&root().join("corpora/tiny"), &docs);
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
    let (mut server, addr) = serve(&index, &config, &[], &plain);
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
    std::fs::write(&token, "root:Milvus\n").unwrap();
    json(
        with_config(&index, &config)
            .arg("ingest")
            .arg(root().join("corpora/tiny"))
            .arg("--json"),
    );
    for (contents, says) in [(None, "token"), (Some("  \n"), "empty")] {
        match contents {
            Some(contents) => std::fs::write(&token, contents).unwrap(),
            None => std::fs::remove_file(&token).unwrap(),
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

/// `lore serve` on a free loopback port; the child and its address, once
/// it answers.
fn serve(index: &Path, config: &Path, args: &[&str], key: &str) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = with_config(index, config)
        .args(["serve", "--addr", &addr, "--generator", "light"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while post(&addr, "/v1/search", key, "{}").0 == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "lore serve did not come up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (child, addr)
}

#[test]
fn a_read_only_replica_searches_the_writers_milvus_collection_and_never_writes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let milvus = Milvus::start(&tmp.path().join("milvus"));
    let config = milvus.config(tmp.path(), "");
    let docs = tmp.path().join("docs");
    copy_dir(&root().join("corpora/tiny"), &docs);
    let writer = tmp.path().join("writer");
    json(
        with_config(&writer, &config)
            .arg("ingest")
            .arg(&docs)
            .arg("--json"),
    );
    let snapshot = tmp.path().join("snapshot");
    json(
        with_config(&writer, &config)
            .arg("snapshot")
            .arg(&snapshot)
            .arg("--json"),
    );
    // The writer moves on: a new document, and one removed.
    std::fs::write(
        docs.join("late.md"),
        "# Quokkas\n\nThe quokka colony on the roof is fed at noon.\n",
    )
    .unwrap();
    std::fs::remove_file(docs.join("brewing.md")).unwrap();
    json(
        with_config(&writer, &config)
            .arg("ingest")
            .arg(&docs)
            .arg("--json"),
    );
    let before = json(with_config(&writer, &config).args(["status", "--json"]));
    assert_eq!(before["consistent"], true, "{before}");

    let (mut replica, addr) = serve(&snapshot, &config, &["--read-only"], "");
    for mode in ["dense", "hybrid"] {
        let body = format!(r#"{{"query": "quokka colony fed at noon", "k": 3, "mode": "{mode}"}}"#);
        let (status, found) = post(&addr, "/v1/search", "", &body);
        assert_eq!(status, 200, "{found}");
        let found: serde_json::Value = serde_json::from_str(&found).unwrap();
        let hits = found["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 3, "k is still filled: {found}");
        assert!(!found.to_string().contains("late.md"), "{found}");
    }
    let (status, _) = post(
        &addr,
        "/v1/documents",
        "",
        r#"{"path": "x.md", "text": "x"}"#,
    );
    assert_eq!(status, 403);
    replica.kill().ok();
    replica.wait().ok();
    // The writer's collection is as the writer left it.
    let after = json(with_config(&writer, &config).args(["status", "--json"]));
    assert_eq!(after["consistent"], true, "{after}");
    assert_eq!(counts(&after), counts(&before), "{after}");
}

/// HAProxy terminating TLS (a self-signed certificate for `localhost`) in
/// front of the Milvus server, speaking HTTP/2 both ways; killed when
/// dropped.
struct TlsProxy {
    child: Child,
    port: u16,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn tls_proxy(dir: &Path, to: u16) -> (TlsProxy, PathBuf) {
    // A CA, and a certificate for `localhost` that it signed (rustls takes
    // no self-signed certificate as a server's).
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let days = ["-days", "1"];
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=lore-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ][..],
            &days,
        ]
        .concat(),
    );
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &[
            &[
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                "ext.cnf",
                "-out",
                "srv.pem",
            ][..],
            &days,
        ]
        .concat(),
    );
    let both = dir.join("both.pem");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    std::fs::write(&both, read("srv.pem") + &read("srv.key")).unwrap();
    let cert = dir.join("ca.pem");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    \
             timeout server 60s\n\nfrontend tls\n    bind 127.0.0.1:{port} ssl crt {} alpn h2\n    \
             default_backend milvus\n\nbackend milvus\n    server lite 127.0.0.1:{to} proto h2\n",
            both.display()
        ),
    )
    .unwrap();
    let child = Command::new("haproxy")
        .arg("-f")
        .arg(&cfg)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy runs (scripts/milvus-checks.sh installs it)");
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "haproxy did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (TlsProxy { child, port }, cert)
}

#[test]
fn tls_to_milvus_trusts_the_named_ca_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let milvus = Milvus::start(&tmp.path().join("milvus"));
    let (proxy, cert) = tls_proxy(tmp.path(), milvus.port);
    let config = |ca: Option<&Path>| {
        let path = tmp.path().join("tls.toml");
        let mut text = format!(
            "[collections.default]\nvectors = \"milvus\"\n\n[milvus]\n\
             uri = \"https://localhost:{}\"\ntimeout_s = 10\n",
            proxy.port
        );
        if let Some(ca) = ca {
            text.push_str(&format!("ca_file = \"{}\"\n", ca.display()));
        }
        std::fs::write(&path, text).unwrap();
        path
    };
    let index = tmp.path().join("index");
    // With the CA named, lore ingests and searches through TLS…
    let trusted = config(Some(&cert));
    json(
        with_config(&index, &trusted)
            .arg("ingest")
            .arg(root().join("corpora/tiny"))
            .arg("--json"),
    );
    let s = json(with_config(&index, &trusted).args(["status", "--json"]));
    assert_eq!(s["consistent"], true, "{s}");
    // …without it, the self-signed certificate is not trusted…
    let untrusted = with_config(&index, &config(None))
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        !untrusted.status.success(),
        "a certificate nobody vouched for was trusted"
    );
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(err.contains(&format!("localhost:{}", proxy.port)), "{err}");
    // …and a CA file that is not there is an error, not the system's roots.
    let missing = with_config(&index, &config(Some(&tmp.path().join("nope.pem"))))
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("nope.pem"), "{err}");
    let trusted = config(Some(&cert));
    let found = json(
        with_config(&index, &trusted)
            .args(["search", "roasting", "-k", "2", "--mode", "dense", "--json"]),
    );
    assert_eq!(found["hits"].as_array().unwrap().len(), 2, "{found}");
}
