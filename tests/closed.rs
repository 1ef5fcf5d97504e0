//! Fail closed: the regression tests of the second hostile pass. Each
//! removes, corrupts or stretches an input a decision depends on (the key
//! file, front matter, a remove target, a temporary file, a question's
//! size, a line's length) and checks that lore refuses instead of
//! granting.

use std::time::{Duration, Instant};

use crate::serve::{error_code, http, start_keyed};
use crate::util::{fails, ingested, json, lore, run_ok, status};

#[test]
fn a_keyed_server_stays_closed_when_its_key_file_vanishes() {
    let (_tmp, index) = ingested("corpora/tiny");
    let admin = crate::hostile::create_key(&index, &["--role", "admin"]);
    let server = start_keyed(&index, "", &[], None);
    let addr = server.addr.as_str();
    let search = r#"{"query": "coffee", "k": 1}"#;
    assert_eq!(
        http(addr, "POST", "/v1/search", Some(&admin), Some(search)).0,
        200
    );
    let keys = index.join("keys.json");
    let moved = index.join("keys.json.away");
    std::fs::rename(&keys, &moved).unwrap();
    // Without a key: still 401 everywhere, never an anonymous admin.
    for (method, path, body) in [
        ("POST", "/v1/search", Some(search)),
        ("GET", "/v1/whoami", None),
        ("POST", "/v1/collections", Some(r#"{"name": "opened"}"#)),
    ] {
        let (code, _, reply) = http(addr, method, path, None, body);
        assert_eq!(code, 401, "{method} {path}: {reply}");
    }
    // With a key that was valid: refused, as the store cannot be read.
    let (code, _, reply) = http(addr, "POST", "/v1/search", Some(&admin), Some(search));
    assert_eq!(
        (code, error_code(&reply).as_str()),
        (503, "unavailable"),
        "{reply}"
    );
    // A store that does not parse is no better.
    std::fs::write(&keys, b"").unwrap();
    let (code, _, reply) = http(addr, "POST", "/v1/search", Some(&admin), Some(search));
    assert_eq!(code, 503, "{reply}");
    assert_eq!(http(addr, "GET", "/v1/whoami", None, None).0, 401);
    // Back in place: the key works again.
    std::fs::rename(&moved, &keys).unwrap();
    assert_eq!(
        http(addr, "POST", "/v1/search", Some(&admin), Some(search)).0,
        200
    );
}

#[test]
fn a_key_store_created_while_serving_makes_keys_required() {
    let (_tmp, index) = ingested("corpora/tiny");
    let server = start_keyed(&index, "", &[], None);
    let addr = server.addr.as_str();
    assert_eq!(http(addr, "GET", "/v1/whoami", None, None).0, 200);
    let reader = crate::hostile::create_key(&index, &["--role", "read"]);
    assert_eq!(http(addr, "GET", "/v1/whoami", None, None).0, 401);
    assert_eq!(http(addr, "GET", "/v1/whoami", Some(&reader), None).0, 200);
    // And stays so when the file goes again.
    std::fs::remove_file(index.join("keys.json")).unwrap();
    assert_eq!(http(addr, "GET", "/v1/whoami", None, None).0, 401);
}

#[test]
fn malformed_front_matter_or_access_lists_never_publish_a_document() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let files = [
        (
            "colon.md",
            "---\ntitle: HR: salaries 2025\naccess: [hr]\n---\nThe wolframite salary band.\n",
        ),
        ("unclosed.md", "---\naccess: [hr]\nThe wolframite bonus.\n"),
        (
            "object.md",
            "---\naccess: {hr: yes}\n---\nThe wolframite pension.\n",
        ),
        (
            "blank.md",
            "\n---\naccess: [hr]\n---\nThe wolframite review.\n",
        ),
        (
            "open.md",
            "---\ntitle: Lunch\n---\nThe wolframite lunch is open.\n",
        ),
    ];
    for (name, text) in files {
        std::fs::write(docs.join(name), text).unwrap();
    }
    let index = tmp.path().join("index");
    let report = json(lore(&index).args(["ingest", "--json"]).arg(&docs));
    let skipped = report["skipped"].to_string();
    for name in ["colon.md", "unclosed.md", "object.md"] {
        assert!(
            skipped.contains(name),
            "{name} is named as skipped: {report}"
        );
    }
    assert!(
        !skipped.contains("blank.md") && !skipped.contains("open.md"),
        "{report}"
    );
    let plain = crate::hostile::create_key(&index, &["--role", "write"]);
    let server = start_keyed(&index, "", &[], None);
    let addr = server.addr.as_str();
    let (code, _, reply) = http(
        addr,
        "POST",
        "/v1/search",
        Some(&plain),
        Some(r#"{"query": "wolframite", "k": 20, "mode": "bm25"}"#),
    );
    assert_eq!(code, 200, "{reply}");
    let hits: serde_json::Value = serde_json::from_str(&reply).unwrap();
    let paths: Vec<&str> = hits["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert!(paths[0].ends_with("open.md"), "{paths:?}");
    // An upload whose metadata's access list names no group, and an
    // uploaded file whose front matter does not parse: refused.
    for body in [
        r#"{"path": "up.md", "text": "wolframite", "metadata": {"access": {"hr": 1}}}"#,
        r#"{"path": "up.md", "text": "wolframite", "metadata": {"access": null}}"#,
        r#"{"path": "up.md", "text": "---\nt: a: b\naccess: [hr]\n---\nwolframite"}"#,
    ] {
        let (code, _, reply) = http(addr, "POST", "/v1/documents", Some(&plain), Some(body));
        assert!((400..500).contains(&code), "{code} {reply}");
    }
    drop(server);
    // Import rows: one with a bad access list refuses the whole input.
    let dim = status(&index)["embedder"]["dim"].as_u64().unwrap() as usize;
    let vector = vec![0.1f32; dim];
    let row = serde_json::json!({"path": "rows/a.md", "text": "wolframite row",
        "vector": vector, "metadata": {"access": [["hr"]]}});
    let rows = tmp.path().join("rows.jsonl");
    std::fs::write(&rows, format!("{row}\n")).unwrap();
    let (code, stderr) = fails(lore(&index).arg("import").arg(&rows));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("access list"), "{stderr}");
}

#[test]
fn remove_resolves_its_target_once_and_stays_under_the_roots() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("inside.md"),
        "The garnet rota is inside the root.",
    )
    .unwrap();
    let outside = tmp.path().join("outside.md");
    std::fs::write(&outside, "The garnet rota is outside the root.").unwrap();
    let index = tmp.path().join("index");
    json(
        lore(&index)
            .args(["ingest", "--json"])
            .arg(&root)
            .arg(&outside),
    );
    let docs_before = status(&index)["documents"].as_u64().unwrap();
    let root_line = format!("ingest_roots = [{:?}]", root.canonicalize().unwrap());
    let server = start_keyed(&index, &root_line, &[], Some("write:w-key"));
    let addr = server.addr.as_str();
    // The server runs in `tmp`: these name the outside file, the working
    // directory and its parent.
    for target in [
        "outside.md",
        ".",
        "..",
        "./outside.md",
        "root/../outside.md",
    ] {
        let body = serde_json::json!({ "target": target }).to_string();
        let (code, _, reply) = http(addr, "POST", "/v1/remove", Some("w-key"), Some(&body));
        assert_eq!(code, 403, "{target}: {reply}");
    }
    drop(server);
    assert_eq!(status(&index)["documents"].as_u64().unwrap(), docs_before);
    let server = start_keyed(&index, &root_line, &[], Some("write:w-key"));
    let body = r#"{"target": "root/inside.md"}"#;
    let (code, _, reply) = http(
        &server.addr,
        "POST",
        "/v1/remove",
        Some("w-key"),
        Some(body),
    );
    assert_eq!(code, 200, "{reply}");
    let report: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(report["documents"], 1, "{reply}");
}

#[test]
fn write_keys_change_only_what_they_may_read() {
    let (_tmp, index) = ingested("corpora/tiny");
    let hr = crate::hostile::create_key(&index, &["--role", "write", "--groups", "hr"]);
    let plain = crate::hostile::create_key(&index, &["--role", "write"]);
    let server = start_keyed(&index, "", &[], None);
    let addr = server.addr.as_str();
    let secret =
        r#"{"path": "pay.md", "text": "The obsidian pay scale.", "metadata": {"access": ["hr"]}}"#;
    let (code, _, reply) = http(addr, "POST", "/v1/documents", Some(&hr), Some(secret));
    assert_eq!(code, 201, "{reply}");
    let added: serde_json::Value = serde_json::from_str(&reply).unwrap();
    let id = added["documents"][0]["id"].as_str().unwrap().to_string();
    // Deleting it reads exactly like deleting nothing.
    let (hidden, _, hidden_reply) = http(
        addr,
        "DELETE",
        &format!("/v1/documents/{id}"),
        Some(&plain),
        None,
    );
    let (missing, _, missing_reply) = http(
        addr,
        "DELETE",
        "/v1/documents/no-such-doc",
        Some(&plain),
        None,
    );
    assert_eq!(
        (hidden, missing),
        (404, 404),
        "{hidden_reply} {missing_reply}"
    );
    // Replacing it is refused; removing by path leaves it and counts nothing.
    let replace = r#"{"path": "pay.md", "text": "Nothing to see.", "metadata": {"access": []}}"#;
    let (code, _, reply) = http(addr, "POST", "/v1/documents", Some(&plain), Some(replace));
    assert_eq!(code, 403, "{reply}");
    let (code, _, reply) = http(
        addr,
        "POST",
        "/v1/remove",
        Some(&plain),
        Some(&format!(r#"{{"target": "{id}"}}"#)),
    );
    assert_eq!(code, 404, "{reply}");
    let (code, _, reply) = http(addr, "GET", &format!("/v1/documents/{id}"), Some(&hr), None);
    assert_eq!(code, 200, "{reply}");
    assert!(reply.contains("pay.md"), "{reply}");
    // Its own groups' key may delete it.
    let (code, _, reply) = http(
        addr,
        "DELETE",
        &format!("/v1/documents/{id}"),
        Some(&hr),
        None,
    );
    assert_eq!(code, 200, "{reply}");
}

#[test]
fn concurrent_key_changes_lose_nothing_and_revocations_stick() {
    let (_tmp, index) = ingested("corpora/tiny");
    let doomed: Vec<String> = (0..6)
        .map(|_| {
            let out = run_ok(lore(&index).args(["key", "create", "--role", "read", "--json"]));
            let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            key["key"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    let creators: Vec<_> = (0..24)
        .map(|_| {
            lore(&index)
                .args(["key", "create", "--role", "read", "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let revokers: Vec<_> = doomed
        .iter()
        .map(|id| {
            lore(&index)
                .args(["key", "revoke", id])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut created = Vec::new();
    for child in creators {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        created.push(key["key"]["id"].as_str().unwrap().to_string());
    }
    for child in revokers {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listed = json(lore(&index).args(["key", "list", "--json"]));
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    for id in &created {
        assert!(
            ids.contains(&id.as_str()),
            "created key {id} was lost: {ids:?}"
        );
    }
    for id in &doomed {
        assert!(!ids.contains(&id.as_str()), "revoked key {id} came back");
    }
    assert_eq!(ids.len(), created.len());
    let leftovers: Vec<_> = std::fs::read_dir(&index)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_half_written_sled_snapshot_never_wedges_the_index() {
    let (_tmp, index) = ingested("corpora/tiny");
    let before = status(&index);
    // What a full disk leaves: an empty snapshot sled would read first.
    let half = index.join("docs/snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&half, b"").unwrap();
    let after = status(&index);
    assert_eq!(after["documents"], before["documents"]);
    assert_eq!(after["consistent"], true, "{after}");
    assert!(!half.exists());
}

#[test]
fn snapshots_clean_up_after_killed_copies_and_never_nest_in_the_index() {
    let (tmp, index) = ingested("corpora/tiny");
    let publish = tmp.path().join("publish");
    // A copy whose process is gone (no such PID), and one of a live one.
    let dead = publish.join(".snap-1.tmp-2147483000");
    let live = publish.join(format!(".snap-2.tmp-{}", std::process::id()));
    for dir in [&dead, &live] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("db"), vec![0u8; 4096]).unwrap();
    }
    run_ok(lore(&index).arg("snapshot").arg(publish.join("snap-3")));
    assert!(!dead.exists(), "an abandoned copy stays");
    assert!(live.exists(), "a running copy was removed");
    assert!(publish.join("snap-3/docs").is_dir());
    let (code, stderr) = fails(lore(&index).arg("snapshot").arg(index.join("inner")));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!index.join("inner").exists());
}

#[test]
fn a_long_question_with_history_is_refused_before_the_model_sees_it() {
    let (_tmp, index) = ingested("corpora/tiny");
    let server = start_keyed(&index, "", &[], None);
    let addr = server.addr.as_str();
    let long = "Why does the espresso taste sour? ".repeat(1100);
    let ask = serde_json::json!({
        "question": long,
        "history": [{"role": "user", "content": "How much coffee?"},
                    {"role": "assistant", "content": "18 grams."}],
        "max_tokens": 8,
    })
    .to_string();
    let chat = serde_json::json!({
        "messages": [{"role": "user", "content": "How much coffee?"},
                     {"role": "assistant", "content": "18 grams."},
                     {"role": "user", "content": long}],
        "max_tokens": 8,
    })
    .to_string();
    for (path, body) in [("/v1/ask", &ask), ("/v1/chat/completions", &chat)] {
        let start = Instant::now();
        let (code, _, reply) = http(addr, "POST", path, None, Some(body));
        assert_eq!(code, 400, "{path}: {reply}");
        assert!(reply.contains("bytes"), "{reply}");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{path} took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn caller_mistakes_are_4xx_not_500() {
    let (tmp, index) = ingested("corpora/tiny");
    let server = start_keyed(&index, "", &[], None);
    let addr = server.addr.as_str();
    let regex = r#"{"question": "How much coffee?", "max_tokens": 16, "regex": "(a{1000}){1000}"}"#;
    let (code, _, reply) = http(addr, "POST", "/v1/ask", None, Some(regex));
    assert!((400..500).contains(&code), "{code} {reply}");
    let gguf = crate::util::models_dir().join("smollm2-135m-instruct-q4_1.gguf");
    let fake = tmp.path().join("not-a-model");
    std::fs::create_dir_all(&fake).unwrap();
    for embedder in [
        "no-such-model",
        gguf.to_str().unwrap(),
        fake.to_str().unwrap(),
    ] {
        let body = serde_json::json!({"name": "team", "embedder": embedder}).to_string();
        let (code, _, reply) = http(addr, "POST", "/v1/collections", None, Some(&body));
        assert!((400..500).contains(&code), "{embedder}: {code} {reply}");
    }
}

#[test]
fn an_oversized_import_line_is_refused_without_being_held() {
    let (tmp, index) = ingested("corpora/tiny");
    let rows = tmp.path().join("huge.jsonl");
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&rows).unwrap());
        file.write_all(b"{\"path\": \"x\", \"text\": \"").unwrap();
        let block = vec![b'a'; 1 << 20];
        for _ in 0..300 {
            file.write_all(&block).unwrap();
        }
        file.write_all(b"\"}\n").unwrap();
    }
    let child = lore(&index)
        .arg("import")
        .arg(&rows)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (code, peak_kib) = wait_with_peak(child);
    assert_eq!(code, 2);
    assert!(peak_kib > 0, "the child's memory was never read");
    assert!(
        peak_kib < 250 * 1024,
        "peak RSS {peak_kib} KiB for a 300 MB line"
    );
    std::fs::remove_file(rows).unwrap();
}

/// Waits for `child`; returns its exit code and the peak resident memory
/// of the program it runs, in KiB: `VmHWM` of its own address space, read
/// while it runs. (`wait4`'s `ru_maxrss` is no measure here: a child
/// spawned with vfork starts in this test process's address space, and
/// exec carries that space's peak over, so it reports whatever the other
/// tests of this process held.)
fn wait_with_peak(mut child: std::process::Child) -> (i32, i64) {
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        let hwm = std::fs::read_to_string(&status).ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        });
        peak = peak.max(hwm.unwrap_or(0));
        if let Some(exit) = child.try_wait().unwrap() {
            return (exit.code().unwrap_or(-1), peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_server_whose_trust_inputs_are_missing_or_malformed_does_not_start() {
    let (_tmp, index) = ingested("corpora/tiny");
    let serve = |addr: &str, keys: &str| {
        let mut cmd = lore(&index);
        cmd.args(["serve", "--addr", addr])
            .env("LORE_API_KEYS", keys);
        fails(&mut cmd)
    };
    let port = crate::serve::free_port();
    // No key at all on a reachable address.
    let (code, stderr) = serve(&format!("0.0.0.0:{port}"), "");
    assert_eq!(code, Some(2), "{stderr}");
    // A configured key with no role, or an unknown one.
    for keys in ["justakey", "root:k", "read:"] {
        let (code, stderr) = serve(&format!("127.0.0.1:{port}"), keys);
        assert_eq!(code, Some(2), "{keys}: {stderr}");
    }
    // A key store that does not parse.
    std::fs::write(index.join("keys.json"), b"{not json").unwrap();
    let (code, stderr) = serve(&format!("127.0.0.1:{port}"), "");
    assert!(code.is_some_and(|c| c != 0), "{stderr}");
    assert!(stderr.contains("keys"), "{stderr}");
}

#[test]
fn every_write_reaches_the_audit_file_whoever_makes_it() {
    let (tmp, index) = ingested("corpora/tiny");
    let audit = tmp.path().join("audit.jsonl");
    let watched = tmp.path().join("watched");
    std::fs::create_dir(&watched).unwrap();
    let admin = crate::hostile::create_key(&index, &["--role", "admin"]);
    let root = watched.to_str().unwrap();
    let args = [
        "--audit-log",
        audit.to_str().unwrap(),
        "--ingest-root",
        root,
        "--watch",
        root,
    ];
    let server = start_keyed(&index, "", &args, None);
    let addr = server.addr.as_str();
    // Key changes made by another process, next to the server.
    let created = json(lore(&index).args(["key", "create", "--role", "read", "--json"]));
    let key_id = created["key"]["id"].as_str().unwrap().to_string();
    run_ok(lore(&index).args(["key", "revoke", &key_id]));
    // An upload and a delete, by id.
    let doc = r#"{"path": "traced.md", "text": "Traced: a document the audit names."}"#;
    let (code, _, reply) = http(addr, "POST", "/v1/documents", Some(&admin), Some(doc));
    assert_eq!(code, 201, "{reply}");
    let added: serde_json::Value = serde_json::from_str(&reply).unwrap();
    let doc_id = added["documents"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/v1/documents/{doc_id}");
    let (code, _, reply) = http(addr, "DELETE", &path, Some(&admin), None);
    assert_eq!(code, 200, "{reply}");
    // A batch the watcher applies.
    std::fs::write(watched.join("watched-note.md"), "# Note\n\nWatched text.\n").unwrap();
    let admin_id = admin.split('_').nth(1).unwrap();
    let wanted = [
        ("cli", "key_create", key_id.as_str()),
        ("cli", "key_revoke", key_id.as_str()),
        (admin_id, "upload", doc_id.as_str()),
        (admin_id, "delete", doc_id.as_str()),
        ("watch", "ingest", ""),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let trail = std::fs::read_to_string(&audit).unwrap_or_default();
        let events: Vec<serde_json::Value> = trail
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let found = |(actor, action, id): &(&str, &str, &str)| {
            events.iter().any(|e| {
                e["actor"] == *actor
                    && e["action"] == *action
                    && e["ids"]
                        .as_array()
                        .is_some_and(|ids| ids.iter().any(|i| i.as_str().unwrap().starts_with(id)))
            })
        };
        let missing: Vec<_> = wanted.iter().filter(|w| !found(w)).collect();
        if missing.is_empty() {
            assert!(!trail.contains(&admin), "a secret reached the audit log");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not in the audit file: {missing:?}\n{trail}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
