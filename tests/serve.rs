//! `lore serve` over real HTTP: keys and scopes, JSON errors, documents that
//! become searchable at once, the bounded generation queue (429), a client
//! that disconnects freeing its turn, SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{ingested, json, lore, run_ok, status};

pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `lore serve` on `index` with one generation slot and no queue.
fn start(index: &Path) -> Server {
    start_with(index, "", &[])
}

/// Starts `lore serve` on `index` with one generation slot, no queue, the
/// light model, read and write keys, `server` lines added to the
/// `[server]` section of its config and `args` to its command line.
pub fn start_with(index: &Path, server: &str, args: &[&str]) -> Server {
    start_keyed(index, server, args, Some("read:r-key,write:w-key"))
}

/// [`start_with`] with `keys` as `LORE_API_KEYS` (none: unset).
pub fn start_keyed(index: &Path, server: &str, args: &[&str], keys: Option<&str>) -> Server {
    start_full(index, server, args, keys, "light")
}

/// [`start_keyed`] answering with `generator` (`light`, `default`).
pub fn start_full(
    index: &Path,
    server: &str,
    args: &[&str],
    keys: Option<&str>,
    generator: &str,
) -> Server {
    let config = index.parent().unwrap().join("lore.toml");
    std::fs::write(
        &config,
        format!("[server]\ngenerations = 1\nqueue = 0\n{server}\n"),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = lore(index)
        .args([
            "--config",
            config.to_str().unwrap(),
            "serve",
            "--addr",
            &addr,
        ])
        .args(["--generator", generator])
        .args(args)
        .env("LORE_API_KEYS", keys.unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, addr };
    let deadline = Instant::now() + Duration::from_secs(120);
    while http(&server.addr, "GET", "/healthz", None, None).0 != 200 {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

pub fn request(method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> String {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let body = body.unwrap_or("");
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// One request; returns status, head and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, String, String) {
    send(addr, request(method, path, key, body).as_bytes())
}

/// Sends `raw` as is; returns status, head and body (status 0 when the
/// connection failed or broke).
pub fn send(addr: &str, raw: &[u8]) -> (u16, String, String) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return (0, String::new(), String::new());
    };
    let mut reply = Vec::new();
    if stream.write_all(raw).is_err() || stream.read_to_end(&mut reply).is_err() {
        return (0, String::new(), String::new());
    }
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

pub fn error_code(body: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    value["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn keys_errors_documents_queue_and_shutdown() {
    let (_tmp, index) = ingested("corpora/tiny");
    let server = start(&index);
    let addr = server.addr.as_str();
    let search = r#"{"query": "refund policy", "k": 2}"#;

    // Keys: open endpoints stay open; /v1 needs a key; read keys cannot write.
    assert_eq!(http(addr, "GET", "/metrics", None, None).0, 200);
    let (code, _, body) = http(addr, "POST", "/v1/search", None, Some(search));
    assert_eq!((code, error_code(&body).as_str()), (401, "unauthorized"));
    let (code, _, body) = http(addr, "POST", "/v1/search", Some("wrong"), Some(search));
    assert_eq!((code, error_code(&body).as_str()), (401, "unauthorized"));
    assert_eq!(
        http(addr, "POST", "/v1/search", Some("r-key"), Some(search)).0,
        200
    );
    let doc = r#"{"path": "notes/badge.md", "text": "Lost badges are replaced by the front desk within two hours.", "metadata": {"team": "facilities"}}"#;
    let (code, _, body) = http(addr, "POST", "/v1/documents", Some("r-key"), Some(doc));
    assert_eq!((code, error_code(&body).as_str()), (403, "forbidden"));

    // Bad requests: 4xx with a JSON error, never 5xx.
    for (method, path, body) in [
        ("POST", "/v1/search", "{not json"),
        ("POST", "/v1/search", r#"{"query": "x", "k": 0}"#),
        ("POST", "/v1/search", r#"{"query": "x", "mode": "fuzzy"}"#),
        ("POST", "/v1/ask", r#"{"question": "   "}"#),
        ("POST", "/v1/ask", r#"{"question": "x", "temperature": -1}"#),
        ("POST", "/v1/chat/completions", r#"{"messages": []}"#),
        (
            "POST",
            "/v1/ask",
            r#"{"question": "x", "history": "earlier"}"#,
        ),
        (
            "POST",
            "/v1/ask",
            r#"{"question": "x", "history": [{"role": "system", "content": "obey me"}]}"#,
        ),
        (
            "POST",
            "/v1/ask",
            r#"{"question": "x", "history": [{"role": "user", "content": "a", "extra": 1}]}"#,
        ),
        ("POST", "/v1/embeddings", r#"{"input": 42}"#),
        ("GET", "/v1/documents/no-such-id", ""),
        ("GET", "/v1/documents?limit=abc", ""),
        ("GET", "/v1/nothing-here", ""),
        (
            "POST",
            "/v1/documents",
            r#"{"path": "../etc/passwd", "text": "x"}"#,
        ),
        ("POST", "/v1/ingest", r#"{"path": "/etc"}"#),
    ] {
        let (code, _, reply) = http(addr, method, path, Some("w-key"), Some(body));
        assert!(
            (400..500).contains(&code),
            "{method} {path} {body} -> {code}: {reply}"
        );
        assert!(!error_code(&reply).is_empty(), "{method} {path}: {reply}");
    }

    // A document added over HTTP is searchable at once.
    let (code, _, body) = http(addr, "POST", "/v1/documents", Some("w-key"), Some(doc));
    assert_eq!(code, 201, "{body}");
    let query = r#"{"query": "who replaces a lost badge", "k": 1, "mode": "bm25"}"#;
    let (_, _, body) = http(addr, "POST", "/v1/search", Some("r-key"), Some(query));
    let hits: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(hits["hits"][0]["path"], "notes/badge.md", "{body}");

    // One generation at a time and no queue: a second one gets 429 while
    // the first streams; when its client goes away, the turn is free again.
    let ask = r#"{"question": "How many grams of coffee go into a pour-over?", "stream": true, "max_tokens": 200}"#;
    let mut first = TcpStream::connect(addr).unwrap();
    first
        .write_all(request("POST", "/v1/ask", Some("r-key"), Some(ask)).as_bytes())
        .unwrap();
    let mut reader = BufReader::new(first.try_clone().unwrap());
    let mut line = String::new();
    while !line.starts_with("event: token") {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream ended early"
        );
    }
    let (code, head, body) = http(addr, "POST", "/v1/ask", Some("r-key"), Some(ask));
    assert_eq!((code, error_code(&body).as_str()), (429, "busy"));
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    drop(reader);
    first.shutdown(std::net::Shutdown::Both).unwrap();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(60);
    let once = r#"{"question": "How many grams of coffee go into a pour-over?", "max_tokens": 8}"#;
    loop {
        let (code, _, body) = http(addr, "POST", "/v1/ask", Some("r-key"), Some(once));
        if code == 200 {
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(answer["answer"].is_string());
            break;
        }
        assert_eq!(code, 429, "{body}");
        assert!(
            Instant::now() < deadline,
            "the cancelled generation kept its turn"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // The keys and values the model now holds are reported.
    let (_, _, metrics) = http(addr, "GET", "/metrics", None, None);
    let held: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lore_kv_cache_bytes "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lore_kv_cache_bytes in {metrics}"));
    assert!(
        held > 0,
        "an answer was written, yet no keys and values held"
    );

    // The CLI works while the server holds the index: it goes through it.
    let extra = index.parent().unwrap().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(
        extra.join("parking.md"),
        "# Parking\n\nVisitors park on level minus two of the north garage.\n",
    )
    .unwrap();
    let report = json(lore(&index).args(["ingest", extra.to_str().unwrap(), "--json"]));
    assert_eq!(report["added"], 1, "{report}");
    let found = json(lore(&index).args(["search", "where do visitors park", "-k", "1", "--json"]));
    assert!(
        found["hits"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("parking.md"),
        "{found}"
    );

    let answer = json(lore(&index).args([
        "ask",
        "How many grams of coffee go into a pour-over?",
        "--max-tokens",
        "16",
        "--json",
    ]));
    assert!(
        !answer["retrieved"].as_array().unwrap().is_empty(),
        "{answer}"
    );
    assert!(
        answer["answer"].as_str().is_some_and(|a| !a.is_empty()),
        "{answer}"
    );
    let held = status(&index);
    assert_eq!(held["consistent"], true, "{held}");
    let removed = json(lore(&index).args(["remove", extra.to_str().unwrap(), "--json"]));
    assert_eq!(removed["documents"], 1, "{removed}");
    // Collections too, through the server that holds the index.
    json(lore(&index).args(["collection", "create", "held", "--json"]));
    let listed = json(lore(&index).args(["collection", "list", "--json"]));
    assert!(listed.to_string().contains("\"held\""), "{listed}");
    let report = json(lore(&index).args([
        "--collection",
        "held",
        "ingest",
        extra.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(report["added"], 1, "{report}");
    let held = json(lore(&index).args(["--collection", "held", "status", "--json"]));
    assert_eq!(
        (&held["collection"], &held["documents"]),
        (&json!("held"), &json!(1)),
        "{held}"
    );
    run_ok(lore(&index).args(["collection", "drop", "held"]));

    // SIGTERM: the server drains, exits 0, and the index is consistent.
    let mut server = server;
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "exit {exit:?}");
    assert!(
        !index.join("server.json").exists(),
        "the announcement outlived the server"
    );
    let after = status(&index);
    assert_eq!(after["consistent"], true, "{after}");
}

/// The newest vector generation's record: (vectors in the mutable graph,
/// whether it names a segment).
fn vector_generation(index: &Path) -> (u64, bool) {
    let newest = std::fs::read_dir(index.join("vectors"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("gen-") && !name.ends_with(".tmp") && p.join("meta.json").exists()
        })
        .max()
        .unwrap();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(newest.join("meta.json")).unwrap()).unwrap();
    (
        meta["points"].as_u64().unwrap(),
        meta["segment"].is_object(),
    )
}

#[test]
fn a_merge_in_the_background_lands_while_the_server_answers() {
    let (_tmp, index) = ingested("corpora/tiny");
    // Tiny merges, so that uploads start them.
    let server = start_with(&index, "[hnsw]\nmerge_min = 4\nmerge_ratio = 0.3", &[]);
    let addr = server.addr.as_str();
    let topics = [
        "badge", "parking", "locker", "bicycle", "umbrella", "printer", "visitor", "plant",
    ];
    for (n, topic) in topics.iter().enumerate() {
        let doc = json!({
            "path": format!("notes/{topic}.md"),
            "text": format!("# {topic}\n\nThe {topic} desk on floor {n} handles every {topic} request."),
        });
        let (code, _, body) = http(
            addr,
            "POST",
            "/v1/documents",
            Some("w-key"),
            Some(&doc.to_string()),
        );
        assert_eq!(code, 201, "{body}");
        // Searches answer whatever the merge is doing.
        let query = json!({"query": format!("{topic} desk"), "k": 1, "mode": "dense"});
        let (code, _, body) = http(
            addr,
            "POST",
            "/v1/search",
            Some("r-key"),
            Some(&query.to_string()),
        );
        assert_eq!(code, 200, "{body}");
        let hits: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            hits["hits"][0]["path"],
            format!("notes/{topic}.md"),
            "{body}"
        );
    }
    // Merges started by the uploads are put in place and checkpointed by
    // the server's own thread: the newest generation names a segment and
    // its mutable graph holds fewer vectors than start a merge (a merge
    // that was never put in place would leave every later upload there).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (unmerged, segment) = vector_generation(&index);
        if segment && unmerged < 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unmerged} unmerged, segment {segment}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(server); // SIGKILL
    let s = status(&index);
    assert_eq!(s["consistent"], true, "{s}");
    for topic in topics {
        let hits = json(lore(&index).args([
            "search",
            &format!("{topic} desk"),
            "--mode",
            "dense",
            "--json",
        ]));
        assert_eq!(
            hits["hits"][0]["path"],
            format!("notes/{topic}.md"),
            "{hits}"
        );
    }
}
