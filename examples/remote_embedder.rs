//! A custom [`Embedder`]: vectors come from an embedding service over the
//! network instead of a model in this process. lore only sees the trait.
//!
//! So that the example runs anywhere, it starts the "remote" service
//! itself, on a loopback port, in a thread: a line protocol where a
//! request is `{"texts": [...]}` and the reply `{"vectors": [[...]]}`,
//! answered by lore's own BERT embedder. Point [`RemoteEmbedder`] at a
//! real service (and speak its protocol) and the rest stays the same.
//!
//! ```text
//! cargo run --release --example remote_embedder -- corpora/handbook/docs "who approves a rollback?"
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lore::chunk::Sizer;
use lore::embed::Embedder;
use lore::embed::bert::BertEmbedder;
use lore::search::{Mode, SearchRequest};
use lore::{Config, Engine, Error, NoProgress};
use serde_json::{Value, json};

/// An embedder that asks a service over TCP.
struct RemoteEmbedder {
    id: String,
    dim: usize,
    /// One connection, one request at a time (a pool in real use).
    connection: Mutex<BufReader<TcpStream>>,
}

impl RemoteEmbedder {
    /// Connects and learns the service's model id and dimension.
    fn connect(addr: &str) -> lore::Result<RemoteEmbedder> {
        let stream = TcpStream::connect(addr).map_err(|e| Error::io(PathBuf::from(addr), e))?;
        let connection = Mutex::new(BufReader::new(stream));
        let info = call(&connection, &json!({"info": true}))?;
        Ok(RemoteEmbedder {
            // The id is recorded in the index: another model must differ.
            id: format!("remote:{}", info["model"].as_str().unwrap_or("unknown")),
            dim: info["dim"].as_u64().unwrap_or(0) as usize,
            connection,
        })
    }
}

/// One request and its reply, a JSON line each way.
fn call(connection: &Mutex<BufReader<TcpStream>>, request: &Value) -> lore::Result<Value> {
    let broken = |what: String| Error::Inference(format!("embedding service: {what}"));
    let mut connection = connection.lock().map_err(|_| broken("poisoned".into()))?;
    let mut line = request.to_string();
    line.push('\n');
    connection
        .get_mut()
        .write_all(line.as_bytes())
        .map_err(|e| broken(e.to_string()))?;
    let mut reply = String::new();
    connection
        .read_line(&mut reply)
        .map_err(|e| broken(e.to_string()))?;
    let reply: Value = serde_json::from_str(&reply).map_err(|e| broken(e.to_string()))?;
    match reply.get("error") {
        Some(error) => Err(broken(error.to_string())),
        None => Ok(reply),
    }
}

impl Embedder for RemoteEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> lore::Result<Vec<Vec<f32>>> {
        let reply = call(&self.connection, &json!({ "texts": texts }))?;
        let vectors: Vec<Vec<f32>> = serde_json::from_value(reply["vectors"].clone())
            .map_err(|e| Error::Inference(format!("embedding service: {e}")))?;
        if vectors.len() != texts.len() || vectors.iter().any(|v| v.len() != self.dim) {
            return Err(Error::Inference(
                "embedding service: wrong number or size of vectors".into(),
            ));
        }
        Ok(vectors)
    }

    fn sizer(&self) -> lore::Result<Sizer> {
        // Without the service's tokenizer, chunks are measured in
        // characters (load its tokenizer.json for exact token counts).
        Ok(Sizer::Chars)
    }
}

/// The stand-in service: answers JSON lines with lore's BERT embedder.
fn start_service(model: BertEmbedder) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let model = Arc::new(model);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let model = model.clone();
            std::thread::spawn(move || serve_connection(&model, stream));
        }
    });
    Ok(addr)
}

fn serve_connection(model: &BertEmbedder, stream: TcpStream) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let request: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let reply = if request.get("info").is_some() {
            json!({"model": model.id(), "dim": model.dim()})
        } else {
            let texts: Vec<String> =
                serde_json::from_value(request["texts"].clone()).unwrap_or_default();
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            match model.embed(&texts) {
                Ok(vectors) => json!({ "vectors": vectors }),
                Err(e) => json!({ "error": e.to_string() }),
            }
        };
        if writeln!(writer, "{reply}").is_err() {
            return;
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let folder = args.next().ok_or("usage: remote_embedder FOLDER QUERY")?;
    let query = args.next().ok_or("usage: remote_embedder FOLDER QUERY")?;

    let mut config = Config::load(None)?;
    let service = BertEmbedder::load(&config.embedder_dir(), 256, 16)?;
    let addr = start_service(service)?;
    let embedder = Arc::new(RemoteEmbedder::connect(&addr)?);
    eprintln!(
        "embedding service at {addr}: {} ({} dims)",
        embedder.id(),
        embedder.dim()
    );

    config.index = std::env::temp_dir().join(format!("lore-example-remote-{}", std::process::id()));
    let engine = Engine::with_embedder(config.clone(), embedder)?;
    let me = lore::WriteScope::owner("remote-embedder-example");
    let report = engine.ingest(lore::DEFAULT_COLLECTION, &[folder.into()], &me, &NoProgress)?;
    eprintln!(
        "ingested {} chunks through the service",
        report.chunks_embedded
    );

    let found = engine.search(&SearchRequest::new(query, 3, Mode::Dense))?;
    for hit in &found.hits {
        println!("{:.3}  {}", hit.score, hit.path);
    }
    drop(engine);
    let _ = std::fs::remove_dir_all(&config.index);
    if found.hits.is_empty() {
        return Err("no hits".into());
    }
    Ok(())
}
