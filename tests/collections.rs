//! Collections: an index written before collections opens as `default`
//! with nothing re-embedded; the CLI's collection commands; collections
//! with different embedders; every role against every endpoint over real
//! HTTP; and a property test that no key ever sees what it may not.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use lore::embed::Embedder;
use lore::embed::hash::HashEmbedder;
use lore::search::{Mode, SearchRequest};
use lore::{Config, Engine, NoProgress};
use proptest::{prop_assert, prop_assert_eq};
use serde_json::{Value, json};

use crate::hostile::create_key;
use crate::serve::{http, start_keyed};
use crate::util::{copy_dir, fails, ingested, json, lore, root, run_ok};

/// An index the release before collections wrote (`lore ingest
/// corpora/tiny`), with what that release answered on it.
fn legacy_fixture() -> std::path::PathBuf {
    root().join("tests/fixtures/legacy-index")
}

#[test]
fn an_index_written_before_collections_opens_as_default_with_nothing_reembedded() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    copy_dir(&legacy_fixture().join("index"), &index);
    let before: Value = serde_json::from_str(
        &std::fs::read_to_string(legacy_fixture().join("search.json")).unwrap(),
    )
    .unwrap();
    let old_status: Value = serde_json::from_str(
        &std::fs::read_to_string(legacy_fixture().join("status.json")).unwrap(),
    )
    .unwrap();
    let status = json(lore(&index).args(["status", "--json"]));
    assert_eq!(status["collection"], "default");
    assert_eq!(status["consistent"], true, "{status}");
    for field in ["documents", "chunks", "vectors", "keyword_docs"] {
        assert_eq!(status[field], old_status[field], "{field}: {status}");
    }
    let listed = json(lore(&index).args(["collection", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], "default");
    // The same hits with the same scores: the stored vectors and keyword
    // entries are the ones the old release wrote, not new ones. (The old
    // release embedded queries in f32; so does this search.)
    std::fs::write(
        tmp.path().join("lore.toml"),
        "[embedder]\nint8_queries = false\n",
    )
    .unwrap();
    let after = json(lore(&index).args(["search", "coffee beans roasting", "-k", "5", "--json"]));
    let key = |hits: &Value| -> Vec<(String, String)> {
        hits["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["chunk_id"].as_str().unwrap().to_string(),
                    format!("{:.5}", h["score"].as_f64().unwrap()),
                )
            })
            .collect()
    };
    assert!(!key(&before).is_empty());
    assert_eq!(key(&after), key(&before));
    assert!(
        after["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["collection"] == "default")
    );
    // It keeps embedding its documents in f32, as the old release did,
    // whatever new indexes use: every vector of an index is computed the
    // same way.
    assert_eq!(status["embedder"]["documents"], "f32", "{status}");
    // Still a writable index: a second collection goes next to it, and
    // takes the configured precision (int8 by default; f32 here, as set
    // above).
    std::fs::remove_file(tmp.path().join("lore.toml")).unwrap();
    run_ok(lore(&index).args(["collection", "create", "more"]));
    let status = json(lore(&index).args(["status", "--json"]));
    assert_eq!(status["chunks"], old_status["chunks"]);
    assert_eq!(status["embedder"]["documents"], "f32", "{status}");
    let more = json(lore(&index).args(["--collection", "more", "status", "--json"]));
    assert_eq!(more["embedder"]["documents"], "int8", "{more}");
}

#[test]
fn a_new_index_records_how_its_documents_are_embedded() {
    // Through the CLI: as configured (int8 by default).
    for (setting, want) in [
        ("", "int8"),
        ("[embedder]\nint8_documents = false\n", "f32"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("lore.toml"), setting).unwrap();
        let index = tmp.path().join("index");
        run_ok(lore(&index).args(["ingest", root().join("corpora/tiny").to_str().unwrap()]));
        let status = json(lore(&index).args(["status", "--json"]));
        assert_eq!(
            status["embedder"]["documents"], want,
            "{setting:?}: {status}"
        );
    }
    // Through the library with the caller's own embedder: what it reports
    // (BertEmbedder::load embeds documents in f32), whatever the setting.
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        index: tmp.path().join("index"),
        models: crate::util::models_dir(),
        ..Config::default()
    };
    let embedder = lore::embed::bert::BertEmbedder::load(&config.embedder_dir(), 256, 8).unwrap();
    let engine = Engine::with_embedder(config, Arc::new(embedder)).unwrap();
    let status = engine.status("default").unwrap();
    assert_eq!(status.embedder.documents, lore::embed::Precision::F32);
}

#[test]
fn collections_are_created_filled_searched_together_and_dropped() {
    let (_tmp, index) = ingested("corpora/tiny");
    // Audit events reach a terminal with -v (always the audit file).
    let created = run_ok(lore(&index).args(["-v", "collection", "create", "oncall"]));
    // Collection changes are in the audit trail like every write.
    let trail = String::from_utf8_lossy(&created.stderr);
    assert!(
        trail.contains("collection=\"oncall\"") && trail.contains("action=\"collection_create\""),
        "{trail}"
    );
    let report = json(
        lore(&index)
            .args(["--collection", "oncall", "ingest", "--json"])
            .arg(root().join("corpora/handbook/docs/oncall")),
    );
    assert!(report["chunks_embedded"].as_u64().unwrap() > 0, "{report}");
    // The environment names the collection too.
    let status = json(
        lore(&index)
            .env("LORE_COLLECTION", "oncall")
            .args(["status", "--json"]),
    );
    assert_eq!(status["collection"], "oncall");
    assert_eq!(status["documents"], report["added"]);
    assert_eq!(status["consistent"], true);
    let default = json(lore(&index).args(["status", "--json"]));
    assert_ne!(default["documents"], status["documents"]);

    // Each collection alone finds only its own documents.
    let only = |collection: &str, query: &str| -> Vec<Value> {
        let found = json(
            lore(&index)
                .args([
                    "--collection",
                    collection,
                    "search",
                    query,
                    "-k",
                    "5",
                    "--json",
                ])
                .env_remove("LORE_COLLECTION"),
        );
        found["hits"].as_array().unwrap().clone()
    };
    let paging = only("oncall", "how fast must a page be acknowledged");
    assert!(paging.iter().all(|h| h["collection"] == "oncall"));
    assert!(
        only("default", "how fast must a page be acknowledged")
            .iter()
            .all(|h| h["collection"] == "default")
    );
    // Together: one ranking over both, each hit naming its collection.
    let both = only("default,oncall", "coffee beans and paging policy");
    let from: BTreeSet<&str> = both
        .iter()
        .map(|h| h["collection"].as_str().unwrap())
        .collect();
    assert_eq!(from, BTreeSet::from(["default", "oncall"]), "{both:?}");
    let scores: Vec<f64> = both.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

    // Usage errors: exit 2 with a message, and nothing changes.
    for args in [
        &["collection", "create", "oncall"][..],
        &["collection", "create", "../escape"],
        &["collection", "create", ".hidden"],
        &["collection", "drop", "default"],
        &["--collection", "oncall,default", "status"],
    ] {
        let (code, stderr) = fails(lore(&index).args(args));
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
    }
    let (code, stderr) = fails(lore(&index).args(["--collection", "nope", "search", "x"]));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("collection nope"), "{stderr}");

    let dropped = run_ok(lore(&index).args(["-v", "collection", "drop", "oncall"]));
    let trail = String::from_utf8_lossy(&dropped.stderr);
    assert!(trail.contains("action=\"collection_drop\""), "{trail}");
    let listed = json(lore(&index).args(["collection", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert!(!index.join("collections/oncall").exists());
    let (code, _) = fails(lore(&index).args(["--collection", "oncall", "status"]));
    assert_eq!(code, Some(1));
    // The default collection is untouched.
    let after = json(lore(&index).args(["status", "--json"]));
    assert_eq!(after["chunks"], default["chunks"]);
    assert_eq!(after["consistent"], true);
}

#[test]
fn collections_keep_their_own_embedder_across_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        index: tmp.path().join("index"),
        ..Config::default()
    };
    let open = || {
        Engine::with_embedders(config.clone(), |dir: Option<&Path>| {
            let dim = match dir {
                None => 32,
                Some(dir) if dir.ends_with("small") => 16,
                Some(dir) => panic!("unexpected embedder {}", dir.display()),
            };
            Ok(Arc::new(HashEmbedder::new(dim)) as Arc<dyn Embedder>)
        })
        .unwrap()
    };
    let engine = open();
    let owner = lore::WriteScope::owner("test");
    let created = engine
        .create_collection("small", Some(Path::new("/models/small")), &owner)
        .unwrap();
    assert_eq!(created.dim, 16);
    let corpus = root().join("corpora/tiny");
    engine
        .ingest(
            "default",
            std::slice::from_ref(&corpus),
            &owner,
            &NoProgress,
        )
        .unwrap();
    engine
        .ingest("small", std::slice::from_ref(&corpus), &owner, &NoProgress)
        .unwrap();
    drop(engine);
    let engine = open();
    assert_eq!(engine.status("default").unwrap().embedder.dim, 32);
    assert_eq!(engine.status("small").unwrap().embedder.dim, 16);
    assert!(engine.status("small").unwrap().consistent);
    // One query, embedded once per embedder, ranked across both.
    let found = engine
        .search(&SearchRequest {
            collections: vec!["default".into(), "small".into()],
            ..SearchRequest::new("coffee beans", 6, Mode::Hybrid)
        })
        .unwrap();
    let from: BTreeSet<&str> = found.hits.iter().map(|h| h.collection.as_str()).collect();
    assert_eq!(from, BTreeSet::from(["default", "small"]));
    // The same file in two collections is two hits with one chunk id.
    let ids: Vec<&str> = found.hits.iter().map(|h| h.chunk_id.0.as_str()).collect();
    assert!(
        ids.iter()
            .any(|id| ids.iter().filter(|i| *i == id).count() == 2)
    );
}

/// What a role may do on an endpoint.
#[derive(Clone, Copy, PartialEq)]
enum Needs {
    Read,
    Write,
    Admin,
}

/// Builds one request: method, path, body.
type MakeRequest = Box<dyn Fn(&Ctx) -> (String, String, Option<String>)>;

/// One request of the matrix: built fresh for every key, so a request
/// that deletes something has something to delete.
struct Case {
    name: &'static str,
    needs: Needs,
    /// Whether the route names a collection (`?collection=` or the model):
    /// a key for other collections is refused there.
    scoped: bool,
    make: MakeRequest,
}

struct Ctx {
    addr: String,
    setup: String,
    chunk: String,
    roots: std::path::PathBuf,
}

impl Ctx {
    /// Uploads a document into `team` with the setup key; returns its id.
    fn upload(&self, name: &str) -> String {
        let body = json!({"path": name, "text": format!("{name}: the kettle descales monthly.")});
        let (code, _, reply) = http(
            &self.addr,
            "POST",
            "/v1/documents?collection=team",
            Some(&self.setup),
            Some(&body.to_string()),
        );
        assert_eq!(code, 201, "{reply}");
        let reply: Value = serde_json::from_str(&reply).unwrap();
        reply["documents"][0]["id"].as_str().unwrap().to_string()
    }
}

fn cases() -> Vec<Case> {
    use Needs::*;
    let fixed = |method: &'static str, path: &'static str, body: Option<&'static str>| {
        Box::new(move |_: &Ctx| {
            (
                method.to_string(),
                path.to_string(),
                body.map(str::to_string),
            )
        }) as Box<dyn Fn(&Ctx) -> (String, String, Option<String>)>
    };
    let n = std::sync::atomic::AtomicUsize::new(0);
    let counter = Arc::new(n);
    let next = move || counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (n1, n2, n3, n4) = (next.clone(), next.clone(), next.clone(), next);
    vec![
        Case {
            name: "list collections",
            needs: Read,
            scoped: false,
            make: fixed("GET", "/v1/collections", None),
        },
        Case {
            name: "create collection",
            needs: Admin,
            scoped: true,
            make: Box::new(move |_| {
                let body = json!({"name": format!("team-{}", n1())}).to_string();
                ("POST".into(), "/v1/collections".into(), Some(body))
            }),
        },
        Case {
            name: "drop collection",
            needs: Admin,
            scoped: true,
            make: Box::new(move |ctx| {
                let name = format!("team-d{}", n2());
                let body = json!({"name": name}).to_string();
                let (code, _, reply) = http(
                    &ctx.addr,
                    "POST",
                    "/v1/collections",
                    Some(&ctx.setup),
                    Some(&body),
                );
                assert_eq!(code, 201, "{reply}");
                ("DELETE".into(), format!("/v1/collections/{name}"), None)
            }),
        },
        Case {
            name: "search",
            needs: Read,
            scoped: true,
            make: fixed(
                "POST",
                "/v1/search?collection=team",
                Some(r#"{"query": "kettle", "k": 2}"#),
            ),
        },
        Case {
            name: "ask",
            needs: Read,
            scoped: true,
            make: fixed(
                "POST",
                "/v1/ask?collection=team",
                Some(r#"{"question": "How often does the kettle descale?", "max_tokens": 4}"#),
            ),
        },
        Case {
            name: "status",
            needs: Read,
            scoped: true,
            make: fixed("GET", "/v1/status?collection=team", None),
        },
        Case {
            name: "whoami",
            needs: Read,
            scoped: false,
            make: fixed("GET", "/v1/whoami", None),
        },
        Case {
            name: "passage",
            needs: Read,
            scoped: true,
            make: Box::new(|ctx| {
                (
                    "GET".into(),
                    format!("/v1/chunks/{}?collection=team", ctx.chunk),
                    None,
                )
            }),
        },
        Case {
            name: "list documents",
            needs: Read,
            scoped: true,
            make: fixed("GET", "/v1/documents?collection=team&limit=5", None),
        },
        Case {
            name: "add document",
            needs: Write,
            scoped: true,
            make: fixed(
                "POST",
                "/v1/documents?collection=team",
                Some(r#"{"path": "added.md", "text": "Added by the matrix."}"#),
            ),
        },
        Case {
            name: "get document",
            needs: Read,
            scoped: true,
            make: Box::new(move |ctx| {
                let id = ctx.upload(&format!("get-{}.md", n3()));
                (
                    "GET".into(),
                    format!("/v1/documents/{id}?collection=team"),
                    None,
                )
            }),
        },
        Case {
            name: "delete document",
            needs: Write,
            scoped: true,
            make: Box::new(move |ctx| {
                let id = ctx.upload(&format!("del-{}.md", n4()));
                (
                    "DELETE".into(),
                    format!("/v1/documents/{id}?collection=team"),
                    None,
                )
            }),
        },
        Case {
            name: "ingest",
            needs: Write,
            scoped: true,
            make: Box::new(|ctx| {
                let body = json!({"path": ctx.roots.join("notes")}).to_string();
                (
                    "POST".into(),
                    "/v1/ingest?collection=team".into(),
                    Some(body),
                )
            }),
        },
        Case {
            name: "remove",
            needs: Write,
            scoped: true,
            make: Box::new(|ctx| {
                let gone = ctx.roots.join("gone.md");
                let body = json!({"path": gone}).to_string();
                let (code, _, reply) = http(
                    &ctx.addr,
                    "POST",
                    "/v1/ingest?collection=team",
                    Some(&ctx.setup),
                    Some(&body),
                );
                assert_eq!(code, 200, "{reply}");
                let body = json!({"target": gone}).to_string();
                (
                    "POST".into(),
                    "/v1/remove?collection=team".into(),
                    Some(body),
                )
            }),
        },
        Case {
            name: "chat completions",
            needs: Read,
            scoped: true,
            make: fixed(
                "POST",
                "/v1/chat/completions",
                Some(
                    r#"{"model": "lore:team", "max_tokens": 4, "messages": [{"role": "user", "content": "How often does the kettle descale?"}]}"#,
                ),
            ),
        },
        Case {
            name: "models",
            needs: Read,
            scoped: false,
            make: fixed("GET", "/v1/models", None),
        },
        Case {
            name: "embeddings",
            needs: Read,
            scoped: true,
            make: fixed(
                "POST",
                "/v1/embeddings",
                Some(r#"{"model": "lore:team", "input": "kettle"}"#),
            ),
        },
    ]
}

#[test]
fn every_role_gets_exactly_its_endpoints_and_no_request_is_a_server_error() {
    let (tmp, index) = ingested("corpora/tiny");
    let roots = tmp.path().join("roots");
    std::fs::create_dir_all(roots.join("notes")).unwrap();
    std::fs::write(roots.join("notes/n.md"), "# Notes\n\nThe kettle is blue.\n").unwrap();
    std::fs::write(roots.join("gone.md"), "# Gone\n\nSoon removed.\n").unwrap();
    run_ok(lore(&index).args(["collection", "create", "team"]));
    let setup = create_key(&index, &["--role", "admin"]);
    // Keys for `team`, and a key of every role for the other collection.
    let mut keys: Vec<(&str, Option<Needs>, bool, String)> =
        vec![("none", None, true, String::new())];
    for (role, needs) in [
        ("read", Needs::Read),
        ("write", Needs::Write),
        ("admin", Needs::Admin),
    ] {
        keys.push((
            role,
            Some(needs),
            true,
            create_key(&index, &["--role", role, "--collections", "*"]),
        ));
        let elsewhere = create_key(&index, &["--role", role, "--collections", "default"]);
        keys.push((role, Some(needs), false, elsewhere));
    }
    let server = start_keyed(
        &index,
        "",
        &["--ingest-root", roots.to_str().unwrap()],
        None,
    );
    let ctx = Ctx {
        addr: server.addr.clone(),
        chunk: String::new(),
        setup,
        roots: roots.canonicalize().unwrap(),
    };
    let id = ctx.upload("seed.md");
    let (_, _, doc) = http(
        &ctx.addr,
        "GET",
        &format!("/v1/documents/{id}?collection=team"),
        Some(&ctx.setup),
        None,
    );
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let ctx = Ctx {
        chunk: doc["chunks"][0].as_str().unwrap().to_string(),
        ..ctx
    };
    let mut table = Vec::new();
    for case in cases() {
        for (role, has, for_team, key) in &keys {
            let (method, path, body) = (case.make)(&ctx);
            let key = (!key.is_empty()).then_some(key.as_str());
            let (code, _, reply) = http(&ctx.addr, &method, &path, key, body.as_deref());
            let rank = |n: Needs| n as u8;
            let allowed =
                has.is_some_and(|h| rank(h) >= rank(case.needs)) && (*for_team || !case.scoped);
            let expected = match (has, allowed) {
                (None, _) => "401",
                (_, true) => "2xx",
                (_, false) => "403",
            };
            let ok = match expected {
                "2xx" => (200..300).contains(&code),
                "401" => code == 401,
                _ => code == 403,
            };
            assert!(code < 500, "{} as {role}: {code} {reply}", case.name);
            table.push(format!(
                "{:<18} {:<6} {:<9} {code}",
                case.name,
                role,
                if *for_team { "team" } else { "default" }
            ));
            assert!(
                ok,
                "{} as {role} ({}): expected {expected}, got {code} {reply}",
                case.name,
                if *for_team {
                    "team key"
                } else {
                    "other collection's key"
                }
            );
        }
    }
    eprintln!("{}", table.join("\n"));
    // Probes, the API document and the page need no key.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/"] {
        for (role, _, _, key) in &keys {
            let key = (!key.is_empty()).then_some(key.as_str());
            assert_eq!(
                http(&ctx.addr, "GET", path, key, None).0,
                200,
                "{path} as {role}"
            );
        }
    }
    // Lists show only what a key may use: the other collection's key
    // never learns that `team` exists.
    let elsewhere = &keys[2].3;
    for path in ["/v1/collections", "/v1/models"] {
        let (code, _, reply) = http(&ctx.addr, "GET", path, Some(elsewhere), None);
        assert_eq!(code, 200);
        assert!(!reply.contains("team"), "{path}: {reply}");
    }
    // A collection the key may not use reads the same whether it exists.
    let search = r#"{"query": "kettle"}"#;
    for name in ["team", "no-such"] {
        let (code, _, _) = http(
            &ctx.addr,
            "POST",
            &format!("/v1/search?collection={name}"),
            Some(elsewhere),
            Some(search),
        );
        assert_eq!(code, 403, "{name}");
    }
    let (code, _, reply) = http(
        &ctx.addr,
        "POST",
        "/v1/search?collection=no-such",
        Some(&ctx.setup),
        Some(search),
    );
    assert_eq!(code, 404, "{reply}");
    // Naming the collection twice, or badly, is a 400, never a bypass.
    for query in [
        "collection=default&collection=team",
        "collection=../x",
        "collection=%2e%2e",
    ] {
        let (code, _, reply) = http(
            &ctx.addr,
            "POST",
            &format!("/v1/search?{query}"),
            Some(elsewhere),
            Some(search),
        );
        assert_eq!(code, 400, "{query}: {reply}");
    }
}

/// A random world: collections, documents with access lists, keys.
#[derive(Debug, Clone)]
struct World {
    collections: usize,
    /// (collection index, groups of its access list, words)
    docs: Vec<(usize, Vec<usize>, Vec<usize>)>,
    /// (collection indexes or all, groups)
    keys: Vec<(Option<Vec<usize>>, Vec<usize>)>,
    queries: Vec<Vec<usize>>,
}

const WORDS: &[&str] = &[
    "kettle", "rotation", "pager", "invoice", "badge", "laptop", "vacation", "runbook", "deploy",
    "coffee", "garden", "bicycle", "printer", "salary", "backup", "incident", "meeting", "library",
];
const GROUPS: &[&str] = &["sre", "hr", "eng"];

fn world() -> impl proptest::strategy::Strategy<Value = World> {
    use proptest::collection::vec;
    use proptest::prelude::*;
    let groups = || proptest::sample::subsequence((0..GROUPS.len()).collect::<Vec<_>>(), 0..=2);
    (1usize..=3).prop_flat_map(move |collections| {
        let doc = (0..collections, groups(), vec(0..WORDS.len(), 4..10));
        let key = (
            proptest::option::weighted(
                0.8,
                proptest::sample::subsequence(
                    (0..collections).collect::<Vec<_>>(),
                    1..=collections,
                ),
            ),
            groups(),
        );
        (
            Just(collections),
            vec(doc, 3..10),
            vec(key, 1..4),
            vec(vec(0..WORDS.len(), 1..3), 1..3),
        )
            .prop_map(|(collections, docs, keys, queries)| World {
                collections,
                docs,
                keys,
                queries,
            })
    })
}

/// (collection, path) of what a hit, a citation or a source points at.
fn place(value: &Value) -> (String, String) {
    (
        value["collection"].as_str().unwrap_or_default().to_string(),
        value["path"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn no_key_ever_sees_a_document_it_may_not_and_k_still_fills() {
    use proptest::test_runner::{Config as Runner, TestCaseError, TestRunner};
    let (_tmp, index) = ingested("corpora/tiny");
    let setup = create_key(&index, &["--role", "admin"]);
    let server = start_keyed(&index, "", &[], None);
    let addr = server.addr.clone();
    let round = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = TestRunner::new(Runner {
        cases: 6,
        failure_persistence: None,
        ..Runner::default()
    });
    let outcome = runner.run(&world(), |world| {
        let round = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let names: Vec<String> = (0..world.collections).map(|c| format!("r{round}c{c}")).collect();
        for name in &names {
            let body = json!({"name": name}).to_string();
            let (code, _, reply) = http(&addr, "POST", "/v1/collections", Some(&setup), Some(&body));
            prop_assert_eq!(code, 201, "{}", reply);
        }
        // Where each document is, and who may read it.
        let mut docs: Vec<(String, String, Vec<&str>)> = Vec::new();
        for (n, (c, groups, words)) in world.docs.iter().enumerate() {
            let access: Vec<&str> = groups.iter().map(|g| GROUPS[*g]).collect();
            let text: Vec<&str> = words.iter().map(|w| WORDS[*w]).collect();
            let path = format!("doc{n}.md");
            let body = json!({
                "path": path,
                "text": format!("Note {n}: the {}.", text.join(" ")),
                "metadata": {"access": access},
            });
            let uri = format!("/v1/documents?collection={}", names[*c]);
            let (code, _, reply) = http(&addr, "POST", &uri, Some(&setup), Some(&body.to_string()));
            prop_assert_eq!(code, 201, "{}", reply);
            let added: Value = serde_json::from_str(&reply).unwrap();
            let stored = added["documents"][0]["path"].as_str().unwrap().to_string();
            docs.push((names[*c].clone(), stored, access));
        }
        for (collections, groups) in &world.keys {
            let usable: Vec<&String> = match collections {
                Some(cs) => cs.iter().map(|c| &names[*c]).collect(),
                None => names.iter().collect(),
            };
            let group_names: Vec<&str> = groups.iter().map(|g| GROUPS[*g]).collect();
            let scope = match collections {
                Some(_) => usable.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","),
                None => "*".to_string(),
            };
            let mut args = vec!["--role", "read", "--collections", &scope];
            let joined = group_names.join(",");
            if !group_names.is_empty() {
                args.extend(["--groups", &joined]);
            }
            let key = create_key(&index, &args);
            let visible: BTreeSet<(String, String)> = docs
                .iter()
                .filter(|(c, _, access)| {
                    usable.contains(&c) && (access.is_empty() || access.iter().any(|a| group_names.contains(a)))
                })
                .map(|(c, p, _)| (c.clone(), p.clone()))
                .collect();
            let in_scope = usable.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
            let seen = |what: &str, items: &Value| -> Result<(), TestCaseError> {
                for item in items.as_array().into_iter().flatten() {
                    let at = place(item);
                    prop_assert!(visible.contains(&at), "{} leaked {:?} to a key with {:?} / {:?}", what, at, usable, group_names);
                }
                Ok(())
            };
            for words in &world.queries {
                let query: Vec<&str> = words.iter().map(|w| WORDS[*w]).collect();
                let query = query.join(" ");
                let k = 5;
                let body = json!({"query": query, "k": k}).to_string();
                let (code, _, reply) = http(&addr, "POST", &format!("/v1/search?collection={in_scope}"), Some(&key), Some(&body));
                prop_assert_eq!(code, 200, "{}", reply);
                let found: Value = serde_json::from_str(&reply).unwrap();
                seen("search", &found["hits"])?;
                // Every document is one chunk: k fills from what is visible.
                prop_assert_eq!(found["hits"].as_array().unwrap().len(), visible.len().min(k), "{}", reply);
                let body = json!({"question": format!("What about the {query}?"), "max_tokens": 8}).to_string();
                let (code, _, reply) = http(&addr, "POST", &format!("/v1/ask?collection={in_scope}"), Some(&key), Some(&body));
                prop_assert_eq!(code, 200, "{}", reply);
                let answer: Value = serde_json::from_str(&reply).unwrap();
                seen("ask sources", &answer["retrieved"])?;
                seen("ask citations", &answer["citations"])?;
                let model = format!("lore:{}", usable[0]);
                let body = json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": format!("Tell me about the {query}.")}]}).to_string();
                let (code, _, reply) = http(&addr, "POST", "/v1/chat/completions", Some(&key), Some(&body));
                prop_assert_eq!(code, 200, "{}", reply);
                let chat: Value = serde_json::from_str(&reply).unwrap();
                seen("chat sources", &chat["lore"]["retrieved"])?;
                seen("chat citations", &chat["lore"]["citations"])?;
            }
            // Collections outside the key's: refused, whatever they hold.
            for name in names.iter().filter(|n| !usable.contains(n)) {
                let body = json!({"query": "kettle"}).to_string();
                let (code, _, _) = http(&addr, "POST", &format!("/v1/search?collection={name}"), Some(&key), Some(&body));
                prop_assert_eq!(code, 403);
            }
            let (code, _, listed) = http(&addr, "GET", "/v1/collections", Some(&key), None);
            prop_assert_eq!(code, 200);
            let listed: Value = serde_json::from_str(&listed).unwrap();
            let listed: BTreeSet<&str> = listed["collections"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).filter(|n| n.starts_with(&format!("r{round}c"))).collect();
            let expected: BTreeSet<&str> = usable.iter().map(|s| s.as_str()).collect();
            prop_assert_eq!(listed, expected);
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

/// A configuration that puts a collection's vectors in Milvus, read by a
/// lore built without the `milvus` feature, is refused up front (exit 2,
/// saying how to build one), never opened with the embedded graph; so is
/// a misspelt backend. The Milvus backend itself is tested against a real
/// server in tests/milvus.rs.
#[cfg(not(feature = "milvus"))]
#[test]
fn a_milvus_collection_in_a_build_without_milvus_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    let config = tmp.path().join("milvus.toml");
    std::fs::write(&config, "[collections.default]\nvectors = \"milvus\"\n").unwrap();
    for command in [&["status"][..], &["search", "anything"], &["ingest", "."]] {
        let (code, err) = fails(lore(&index).arg("--config").arg(&config).args(command));
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("--features milvus"), "{err}");
    }
    assert!(!index.join("collections").exists() && !index.join("vectors").exists());
    std::fs::write(&config, "[collections.default]\nvectors = \"milvu\"\n").unwrap();
    let (code, err) = fails(lore(&index).arg("--config").arg(&config).arg("status"));
    assert_eq!(code, Some(2), "{err}");
}
