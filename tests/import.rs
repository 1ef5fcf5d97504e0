//! `lore import`: chunks embedded elsewhere become searchable as they are;
//! unchanged documents are skipped; a bad row or a vector of another
//! dimension fails the import with its line number and writes nothing. And
//! `lore bench scale`, which builds its large indexes through it.

use std::io::Write;
use std::sync::Arc;

use lore::embed::Embedder;
use lore::embed::hash::HashEmbedder;
use lore::search::{Mode, SearchRequest};
use lore::{Config, Engine, NoProgress};
use serde_json::json;

use crate::util::{fails, ingested, lore, root, status};

/// One import row for `text` of `path`, embedded with `embedder`.
fn row(embedder: &dyn Embedder, path: &str, text: &str, start: usize) -> String {
    let vector = embedder.embed(&[text]).unwrap().remove(0);
    json!({
        "path": path,
        "text": text,
        "vector": vector,
        "byte_range": [start, start + text.len()],
        "metadata": {"team": "import"},
    })
    .to_string()
}

fn import(engine: &Engine, lines: &[String]) -> lore::Result<lore::engine::ImportReport> {
    let text = lines.join("\n") + "\n";
    let open = move || -> lore::Result<Box<dyn std::io::BufRead>> {
        Ok(Box::new(std::io::Cursor::new(text.clone().into_bytes())))
    };
    engine.import(
        "default",
        &open,
        false,
        &lore::WriteScope::owner("test"),
        &NoProgress,
    )
}

#[test]
fn imported_chunks_are_searchable_and_a_second_import_changes_only_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        index: tmp.path().join("index"),
        ..Config::default()
    };
    let embedder: Arc<dyn Embedder> = Arc::new(HashEmbedder::new(64));
    let engine = Engine::with_embedder(config, embedder.clone()).unwrap();
    let mut lines = vec![
        row(
            embedder.as_ref(),
            "a.md",
            "Kettles are descaled monthly.",
            0,
        ),
        row(
            embedder.as_ref(),
            "a.md",
            "The kettle lives in the kitchen.",
            40,
        ),
        row(
            embedder.as_ref(),
            "b.md",
            "A zebrafalcon guards the server room.",
            0,
        ),
        row(
            embedder.as_ref(),
            "c.md",
            "Invoices are paid on Fridays.",
            0,
        ),
    ];
    let report = import(&engine, &lines).unwrap();
    assert_eq!(
        (report.rows, report.added, report.chunks_written),
        (4, 3, 4)
    );
    for mode in [Mode::Dense, Mode::Bm25, Mode::Hybrid] {
        let found = engine
            .search(&SearchRequest::new("zebrafalcon server room", 1, mode))
            .unwrap();
        assert_eq!(found.hits[0].path, "b.md", "{mode:?}");
    }
    let filtered = engine
        .search(&SearchRequest {
            filter: lore::search::Filter::parse(&["team=import".into(), "type=imported".into()])
                .unwrap(),
            ..SearchRequest::new("kettle", 10, Mode::Hybrid)
        })
        .unwrap();
    assert_eq!(filtered.hits.len(), 4);
    // The same rows again: nothing to do.
    let again = import(&engine, &lines).unwrap();
    assert_eq!((again.unchanged, again.chunks_written), (3, 0));
    // One chunk of one document changed: that chunk alone is written.
    lines[1] = row(
        embedder.as_ref(),
        "a.md",
        "The kettle moved to the office.",
        40,
    );
    let changed = import(&engine, &lines).unwrap();
    assert_eq!(
        (changed.updated, changed.unchanged, changed.chunks_written),
        (1, 2, 1)
    );
    let status = engine.status("default").unwrap();
    assert!(status.consistent, "{status:?}");
    assert_eq!((status.documents, status.chunks), (3, 4));

    // Bad rows: every one named by its line, and nothing written.
    let mut bad = lines.clone();
    bad.push(row(embedder.as_ref(), "d.md", "A new document.", 0));
    bad.push("{not json".into());
    bad.push(json!({"path": "e.md", "text": "short", "vector": [1.0, 0.0]}).to_string());
    bad.push(json!({"path": "f.md", "vector": vec![0.1; 64]}).to_string());
    bad.push(row(
        embedder.as_ref(),
        "a.md",
        "a.md again, after other documents",
        90,
    ));
    let err = import(&engine, &bad).unwrap_err().to_string();
    for expected in [
        "line 6: not an import row",
        "line 7: the vector has 2 dimensions; this collection's embedder has 64",
        "line 8: not an import row: missing field `text`",
        "line 9: document a.md continues here after other documents",
    ] {
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
    let after = engine.status("default").unwrap();
    assert_eq!(
        (after.documents, after.chunks),
        (3, 4),
        "a failed import wrote"
    );
}

#[test]
fn the_cli_refuses_a_vector_of_another_dimension_naming_the_line() {
    let (tmp, index) = ingested("corpora/tiny");
    let before = status(&index);
    let file = tmp.path().join("rows.jsonl");
    let mut out = std::fs::File::create(&file).unwrap();
    let good = json!({"path": "x.md", "text": "fine", "vector": vec![0.05; 384]});
    let short = json!({"path": "y.md", "text": "too short", "vector": vec![0.1; 3]});
    writeln!(out, "{good}\n\n{short}").unwrap();
    drop(out);
    let (code, stderr) = fails(lore(&index).arg("import").arg(&file));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("line 3: the vector has 3 dimensions; this collection's embedder has 384"),
        "{stderr}"
    );
    assert_eq!(status(&index)["chunks"], before["chunks"]);
    // From standard input (the rows of another tool, piped in).
    let mut child = lore(&index)
        .args(["import", "-", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{good}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports[0]["added"], 1, "{reports}");
    let after = status(&index);
    assert_eq!(
        after["chunks"].as_u64(),
        before["chunks"].as_u64().map(|c| c + 1)
    );
    assert_eq!(after["consistent"], true);
    let leftovers: Vec<_> = std::fs::read_dir(&index)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("import-stdin"))
        .collect();
    assert!(leftovers.is_empty(), "the spooled input was left behind");
}

#[test]
fn synthetic_rows_are_the_same_every_run_and_import_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let embedder: Arc<dyn Embedder> = Arc::new(HashEmbedder::new(64));
    let open = |name: &str| {
        let config = Config {
            index: tmp.path().join(name),
            ..Config::default()
        };
        Engine::with_embedder(config, embedder.clone()).unwrap()
    };
    let source = open("source");
    let texts = [
        "Kettles are descaled monthly. The filter is rinsed weekly. Limescale dulls the taste.",
        "Pagers are answered within five minutes. A second page escalates.",
        "Invoices are paid in thirty days. Late fees apply after that.",
    ];
    let lines: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(n, t)| row(embedder.as_ref(), &format!("{n}.md"), t, 0))
        .collect();
    import(&source, &lines).unwrap();
    let write = || {
        let mut out = Vec::new();
        let collection = source.collection("default").unwrap();
        let report = lore::bench::scale::rows(collection.index(), 250, &mut out).unwrap();
        (report, out)
    };
    let (report, first) = write();
    let (_, second) = write();
    assert_eq!(first, second, "the rows differ between runs");
    assert_eq!(
        (report.rows, report.documents, report.base_chunks),
        (250, 25, 3)
    );
    let target = open("target");
    let text = String::from_utf8(first).unwrap();
    let rows: Vec<String> = text.lines().map(str::to_string).collect();
    let imported = import(&target, &rows).unwrap();
    assert_eq!((imported.added, imported.chunks_written), (25, 250));
    // Every tenth document is blue: a filtered search finds only those.
    let request = SearchRequest {
        filter: lore::bench::scale::blue(),
        ..SearchRequest::new("kettles descaled", 10, Mode::Hybrid)
    };
    let hits = target.search(&request).unwrap().hits;
    assert_eq!(hits.len(), 10);
    for hit in &hits {
        let n: usize = hit
            .path
            .trim_start_matches("synthetic/doc-")
            .trim_end_matches(".md")
            .parse()
            .unwrap();
        assert_eq!(n % 10, 0, "{} is not blue", hit.path);
    }
}

#[test]
fn bench_scale_measures_every_phase_in_its_own_process() {
    let (tmp, index) = ingested("corpora/tiny");
    let work = tmp.path().join("scale");
    let report = tmp.path().join("scale.json");
    let out = lore(&index)
        .args(["bench", "scale", "--chunks", "1200", "--limit", "10"])
        .arg("--work")
        .arg(&work)
        .arg("--queries")
        .arg(root().join("corpora/handbook/questions.jsonl"))
        .arg("--json")
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("recall@10"), "{stdout}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["import"]["report"][0]["chunks_written"], 1200, "{r}");
    assert!(
        r["import"]["report"][0]["stores"]["graph"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let measured = &r["index"]["report"];
    assert_eq!(
        (measured["chunks"].as_u64(), measured["documents"].as_u64()),
        (Some(1200), Some(120))
    );
    assert!(
        measured["recall_at_10"].as_f64().unwrap() >= 0.95,
        "{measured}"
    );
    let searches = measured["searches"].as_array().unwrap();
    assert_eq!(searches.len(), 6, "{measured}");
    for case in searches {
        // BM25 finds only what shares a word with the query.
        if case["mode"] != "bm25" {
            assert_eq!(case["mean_hits"], 10.0, "{case}");
        }
        assert!(case["latency"]["p50_ms"].as_f64().unwrap() > 0.0, "{case}");
    }
    for phase in ["import", "index", "add_100", "change_100"] {
        let peak = r[phase]["peak_rss_bytes"].as_u64().unwrap();
        assert!(peak > 10 << 20, "{phase}: {peak}");
    }
    assert_eq!(r["add_100"]["report"]["added"], 100);
    assert_eq!(r["change_100"]["report"]["updated"], 100);
    assert!(
        !work.join("rows.jsonl").exists(),
        "the rows were left behind"
    );
}

/// `lore search --json` hits of `index` for `query`: (chunk id, score).
fn hits(index: &std::path::Path, query: &str) -> Vec<(String, f64)> {
    let out = crate::util::json(lore(index).args(["search", query, "-k", "5", "--json"]));
    out["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["chunk_id"].as_str().unwrap().to_string(),
                h["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn embedded_rows_import_to_the_index_ingest_builds_and_prune_removes_what_left() {
    let (tmp, ingested_index) = ingested("corpora/tiny");
    // The documents as a distributed job hands them over: the path ingest
    // would name, and the text.
    let corpus = root().join("corpora/tiny").canonicalize().unwrap();
    let mut paths: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let mut docs = String::new();
    for path in &paths {
        let text = std::fs::read_to_string(path).unwrap();
        docs += &format!(
            "{}\n",
            json!({"path": path.display().to_string(), "text": text})
        );
    }
    docs += "{\"path\": \"\", \"text\": \"orphan\"}\n";
    let index = tmp.path().join("imported");
    let mut child = lore(&index)
        .arg("embed")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(docs.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let bad_line = paths.len() + 1;
    assert!(
        stderr.contains(&format!("line {bad_line}: \"path\" is empty")),
        "{stderr}"
    );
    let rows = tmp.path().join("rows.jsonl");
    std::fs::write(&rows, &out.stdout).unwrap();
    crate::util::json(lore(&index).arg("import").arg(&rows).arg("--json"));
    let (a, b) = (status(&ingested_index), status(&index));
    assert_eq!(
        (a["documents"].clone(), a["chunks"].clone()),
        (b["documents"].clone(), b["chunks"].clone())
    );
    for query in [
        "coffee grams",
        "loyalty points",
        "roasting temperature",
        "who supplies the beans",
    ] {
        let (want, got) = (hits(&ingested_index, query), hits(&index, query));
        assert_eq!(want.len(), got.len(), "{query}");
        for ((wid, ws), (gid, gs)) in want.iter().zip(&got) {
            assert_eq!(wid, gid, "{query}");
            assert!((ws - gs).abs() < 1e-5, "{query}: {ws} vs {gs}");
        }
    }
    // The next run's rows lack one document: --prune removes it, and only it.
    let text = String::from_utf8(out.stdout).unwrap();
    let fewer: String = text
        .lines()
        .filter(|l| !l.contains("staff.md"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&rows, fewer).unwrap();
    let report = crate::util::json(
        lore(&index)
            .args(["import", "--prune", "--json"])
            .arg(&rows),
    );
    assert_eq!(
        (
            report[0]["removed"].as_u64(),
            report[0]["unchanged"].as_u64()
        ),
        (Some(1), Some(paths.len() as u64 - 1)),
        "{report}"
    );
    let after = status(&index);
    assert_eq!(
        after["documents"].as_u64(),
        b["documents"].as_u64().map(|d| d - 1)
    );
    assert_eq!(after["consistent"], true);
}
