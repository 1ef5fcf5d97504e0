//! lore inside your own HTTP service: one [`Engine`] shared by every
//! worker thread of an actix-web app (the engine is `Send + Sync`; its
//! stores take concurrent readers, and writes serialise inside it).
//! Blocking work (search, generation) runs on actix's blocking pool.
//!
//! ```text
//! cargo run --release --example shared_engine -- corpora/handbook/docs "who approves a rollback?"
//! cargo run --release --example shared_engine -- corpora/handbook/docs "…" --serve  # keep serving on :8090
//! ```
//!
//! Without `--serve` it binds a free loopback port, sends the question as
//! four concurrent searches and one ask, prints the results and stops: a
//! self-test that runs in `make test`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use actix_web::{App, HttpResponse, HttpServer, web};
use lore::search::{Mode, SearchRequest};
use lore::{AskRequest, Config, Engine, NoProgress};
use serde::Deserialize;

#[derive(Deserialize)]
struct Query {
    q: String,
}

async fn search(engine: web::Data<Engine>, query: web::Query<Query>) -> HttpResponse {
    let engine = engine.into_inner();
    let found = web::block(move || {
        engine.search(&SearchRequest::new(query.into_inner().q, 3, Mode::Hybrid))
    })
    .await;
    match found {
        Ok(Ok(found)) => {
            let paths: Vec<&str> = found.hits.iter().map(|h| h.path.as_str()).collect();
            HttpResponse::Ok().json(paths)
        }
        Ok(Err(err)) => HttpResponse::BadRequest().body(err.to_string()),
        Err(err) => HttpResponse::InternalServerError().body(err.to_string()),
    }
}

async fn ask(engine: web::Data<Engine>, query: web::Query<Query>) -> HttpResponse {
    let engine: Arc<Engine> = engine.into_inner();
    let request = AskRequest::new(query.into_inner().q);
    let answered = web::block(move || engine.ask(&request, &mut |_| true)).await;
    match answered {
        Ok(Ok(response)) => HttpResponse::Ok().json(serde_json::json!({
            "answer": response.answer,
            "sources": response.citations.iter().map(|c| &c.path).collect::<Vec<_>>(),
        })),
        Ok(Err(err)) => HttpResponse::BadRequest().body(err.to_string()),
        Err(err) => HttpResponse::InternalServerError().body(err.to_string()),
    }
}

/// A GET with nothing but the standard library, as any client would send.
fn get(addr: &str, path_and_query: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    if !response.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(response));
    }
    Ok(response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_string()))
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: shared_engine FOLDER QUESTION [--serve]";
    let folder = args.next().ok_or(usage)?;
    let question = args.next().ok_or(usage)?;
    let keep_serving = args.next().as_deref() == Some("--serve");

    let mut config = Config::load(None)?;
    config.index = std::env::temp_dir().join(format!("lore-example-shared-{}", std::process::id()));
    let index = config.index.clone();
    let engine = Engine::open(config)?;
    let me = lore::WriteScope::owner("shared-engine-example");
    engine.ingest(lore::DEFAULT_COLLECTION, &[folder.into()], &me, &NoProgress)?;
    // One engine for every worker: web::Data is an Arc.
    let shared = web::Data::new(engine);

    let bind = if keep_serving {
        "127.0.0.1:8090"
    } else {
        "127.0.0.1:0"
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let app_data = shared.clone();
    let server = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(app_data.clone())
                    .route("/search", web::get().to(search))
                    .route("/ask", web::get().to(ask))
            })
            .workers(2)
            .bind(bind)?;
            let addr = server.addrs()[0].to_string();
            let running = server.run();
            let _ = tx.send((addr, running.handle()));
            running.await
        })
    });
    let (addr, handle) = rx.recv()?;
    println!("serving on http://{addr} (GET /search?q=…, GET /ask?q=…)");
    if keep_serving {
        server.join().map_err(|_| "server thread panicked")??;
        return Ok(());
    }

    let clients: Vec<_> = (0..4)
        .map(|_| {
            let path = format!("/search?q={}", encode(&question));
            let addr = addr.clone();
            std::thread::spawn(move || get(&addr, &path))
        })
        .collect();
    let asked = get(&addr, &format!("/ask?q={}", encode(&question)));
    for (n, client) in clients.into_iter().enumerate() {
        let body = client.join().map_err(|_| "client panicked")??;
        println!("search {n}: {body}");
    }
    println!("ask {question:?}: {}", asked?);

    actix_web::rt::System::new().block_on(handle.stop(true));
    server.join().map_err(|_| "server thread panicked")??;
    drop(shared);
    let _ = std::fs::remove_dir_all(&index);
    Ok(())
}
