//! `lore serve`: the HTTP front end (actix-web). Handlers only translate:
//! JSON in, one call to the shared [`Engine`], JSON or Server-Sent Events
//! out. Model work runs on blocking threads, never on the reactor;
//! generations pass a bounded `Gate` (429 when it is full); keys and
//! metrics are middleware; every error is a JSON body (`ApiError`).

mod ask;
mod auth;
mod collections;
mod documents;
mod error;
mod guard;
mod health;
mod ingest;
mod mcp;
mod metrics;
mod openai;
mod openapi;
mod page;
mod routes;
mod search;
mod status;
mod stream;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ServerConfig;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::types::normalize;
use error::ApiError;

/// Seconds a client told "busy" should wait.
const RETRY_AFTER_S: u64 = 2;
/// Largest JSON body of the endpoints that take no document: a question or
/// a query needs far less, and every connection may hold one in memory.
const MAX_JSON_BYTES: usize = 1 << 20;
/// Uploads read into memory at once (each up to `server.max_body_bytes`);
/// more wait their turn before their bodies are read.
const UPLOADS_AT_ONCE: usize = 2;
/// Open connections per worker (actix-web's default is 25,000).
const CONNECTIONS_PER_WORKER: usize = 512;

/// What every handler shares.
pub struct State {
    engine: Arc<Engine>,
    keys: auth::Keys,
    gate: Gate,
    metrics: metrics::Metrics,
    ingest_roots: Vec<PathBuf>,
    timeout: Duration,
    body_limit: usize,
    /// Token of local processes (see [`crate::announce`]).
    local_token: String,
    /// Turns for blocking work, one per core; a running generation holds
    /// one (while `reserved` lets it) so searches cannot crowd it out.
    cpu: Arc<Semaphore>,
    /// The threads blocking work runs on (searches, ingestion, status), at
    /// a lower priority than generations (`server.work_nice`).
    work: Arc<rayon::ThreadPool>,
    /// Cores generations may hold at once: all but one, so searches always
    /// have a core too.
    reserved: Arc<Semaphore>,
    /// Turns for reading an upload's body.
    uploads: Semaphore,
    /// Host, origin and body-deadline checks.
    guard: guard::Policy,
    /// A replica: writes are refused.
    read_only: bool,
    /// Counters of the `--watch` folders' watchers.
    watching: Vec<Arc<crate::watch::WatchStats>>,
}

impl State {
    /// A generation's turn ([`Gate::enter`]), with a core of its own when
    /// one may be reserved: blocking work (searches) then shares the other
    /// cores, and decoding keeps its speed under a search load (measured
    /// on 2 cores with 8 searching clients: 0.14x of the idle decode rate
    /// without the reservation).
    async fn generation_turn(&self) -> Result<Permits, ApiError> {
        let mut permits = self.gate.enter().await?;
        if let Ok(reservation) = self.reserved.clone().try_acquire_owned() {
            let core = self.cpu.clone().acquire_owned().await.map_err(|_| {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "closing", "shutting down")
            })?;
            permits._core = Some((reservation, core));
        }
        Ok(permits)
    }

    /// The state of the server `req` came to (for middleware).
    fn of(req: &actix_web::dev::ServiceRequest) -> &State {
        req.app_data::<web::Data<State>>()
            .expect("state is registered")
    }

    /// The shared handle on that state (for middleware that awaits).
    fn data(req: &actix_web::dev::ServiceRequest) -> web::Data<State> {
        req.app_data::<web::Data<State>>()
            .expect("state is registered")
            .clone()
    }

    /// True when `req` carries the local token.
    fn is_local(&self, req: &actix_web::HttpRequest) -> bool {
        req.headers()
            .get(crate::announce::LOCAL_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| auth::constant_time_eq(t.as_bytes(), self.local_token.as_bytes()))
    }

    /// What a write by `req` may touch: the documents its key may read,
    /// and (for clients other than local processes) paths under the
    /// ingest roots.
    fn write_scope(&self, req: &actix_web::HttpRequest) -> crate::engine::WriteScope {
        let principal = auth::principal(req);
        crate::engine::WriteScope {
            readers: principal.readers(),
            actor: principal.id,
            roots: (!self.is_local(req)).then(|| self.ingest_roots.clone()),
        }
    }

    /// The canonical server path `requested` names, if `req` may ingest
    /// it: local processes may name any path, clients only paths
    /// under the ingest roots. To a client every refusal reads the same,
    /// so it learns nothing of what exists outside the roots or where a
    /// symlink points. `Ok(None)`: the path does not exist (any more) but
    /// may be named, so its records may still be removed.
    fn resolve(
        &self,
        req: &actix_web::HttpRequest,
        requested: &std::path::Path,
    ) -> Result<Option<PathBuf>, ApiError> {
        let local = self.is_local(req);
        let under_root = |p: &std::path::Path| self.ingest_roots.iter().any(|r| p.starts_with(r));
        match requested.canonicalize() {
            Ok(path) if local || under_root(&path) => Ok(Some(path)),
            Err(_) if local => Ok(None),
            Err(_) if requested.is_absolute() && under_root(&normalize(requested)) => Ok(None),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "path_not_allowed",
                if self.ingest_roots.is_empty() {
                    "no ingest roots are configured (server.ingest_roots)".to_string()
                } else {
                    format!(
                        "{} is not an existing path under the configured ingest roots",
                        requested.display()
                    )
                },
            )),
        }
    }
}

/// The generation queue: `running` generations at once, `slots` in the
/// building (running plus waiting).
struct Gate {
    slots: Arc<Semaphore>,
    running: Arc<Semaphore>,
    capacity: usize,
}

/// Held for the life of one generation.
struct Permits {
    _slot: OwnedSemaphorePermit,
    _run: OwnedSemaphorePermit,
    /// A core of the `cpu` turns, and the reservation that allowed it.
    _core: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl Gate {
    fn new(running: usize, queue: usize) -> Self {
        Gate {
            slots: Arc::new(Semaphore::new(running + queue)),
            running: Arc::new(Semaphore::new(running)),
            capacity: running + queue,
        }
    }

    /// Waits for a turn, or fails at once with 429 when the queue is full.
    async fn enter(&self) -> Result<Permits, ApiError> {
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                "too many generations are running or waiting; retry later",
            );
            err.retry_after = Some(RETRY_AFTER_S);
            err
        })?;
        let run = self.running.clone().acquire_owned().await.map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "closing", "shutting down")
        })?;
        Ok(Permits {
            _slot: slot,
            _run: run,
            _core: None,
        })
    }

    /// Generations running or waiting.
    fn depth(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }
}

/// `cores` threads for blocking work, each `nice` steps below the
/// process's priority: under load
/// the kernel gives a running generation's threads the cores first, and
/// the work the rest (alone, it has them all).
fn work_pool(cores: usize, nice: i32) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(cores)
        .thread_name(|i| format!("lore-work-{i}"))
        .start_handler(move |_| crate::sched::lower_priority(nice))
        .build()
        .map_err(|e| Error::Config(format!("cannot start the work threads: {e}")))
}

/// Host names the server answers to: the configured ones, else the
/// loopback names when bound to loopback (DNS rebinding), else any.
fn allowed_hosts(config: &ServerConfig, loopback: bool) -> Vec<String> {
    if !config.allowed_hosts.is_empty() {
        config
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect()
    } else if loopback {
        guard::Policy::loopback_hosts()
    } else {
        Vec::new()
    }
}

/// Serves `engine` at `config.addr` until SIGINT/SIGTERM, then drains
/// in-flight requests and flushes the index.
pub fn serve(engine: Engine, config: &ServerConfig) -> Result<()> {
    let keys = auth::Keys::new(&config.api_keys, crate::keys::KeyStore::open(engine.dir()));
    let loopback = config.is_loopback()?;
    if keys.is_empty()? && !loopback {
        return Err(Error::Config(format!(
            "refusing to serve {} without API keys: create one (lore key create) or set \
             LORE_API_KEYS (e.g. read:KEY,write:KEY) \
             or bind a loopback address",
            config.addr
        )));
    }
    let ingest_roots = config
        .ingest_roots
        .iter()
        .map(|r| r.canonicalize().map_err(|e| Error::io(r, e)))
        .collect::<Result<Vec<_>>>()?;
    // Load the default embedder now so the first search is not slow and
    // /readyz is honest.
    engine
        .collection(crate::types::DEFAULT_COLLECTION)?
        .embedder()?;
    let cores = engine.config().threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let work = Arc::new(work_pool(cores, config.work_nice)?);
    // candle's decoding workers start with the priority and slice of the
    // thread that first decodes: start them now, before any lowered thread
    // exists.
    crate::sched::start_decoding_threads();
    let local_token = crate::types::random_id();
    let index_dir = engine.dir().to_path_buf();
    let engine = Arc::new(engine);
    let watchers = watch(&engine, &config.watch, &ingest_roots)?;
    let state = web::Data::new(State {
        engine: engine.clone(),
        keys,
        gate: Gate::new(config.generations, config.queue),
        metrics: metrics::Metrics::default(),
        ingest_roots,
        timeout: Duration::from_secs(config.request_timeout_s),
        body_limit: config.max_body_bytes,
        local_token: local_token.clone(),
        cpu: Arc::new(Semaphore::new(cores)),
        work,
        reserved: Arc::new(Semaphore::new(cores.saturating_sub(1))),
        uploads: Semaphore::new(UPLOADS_AT_ONCE),
        guard: guard::Policy {
            hosts: allowed_hosts(config, loopback),
            origins: [&config.allowed_origins[..], &config.cors_origins[..]].concat(),
            body_timeout: Duration::from_secs(config.body_timeout_s),
        },
        read_only: config.read_only,
        watching: watchers.iter().map(crate::watch::Watcher::stats).collect(),
    });
    let mcp_service = web::Data::new(mcp::service(state.clone(), MAX_JSON_BYTES));
    if let Some(dir) = &config.snapshot_dir {
        publish_snapshots(engine.clone(), dir.clone(), config.snapshot_every_s);
    }
    if !config.read_only {
        settle_merges(engine.clone());
    }
    let body_limit = config.max_body_bytes;
    let cors_origins = config.cors_origins.clone();
    let addr = config.addr.clone();
    let dir = index_dir.clone();
    let system = actix_web::rt::System::new();
    let served = system.block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(mcp_service.clone())
                .app_data(routes::json_config(body_limit.min(MAX_JSON_BYTES)))
                .app_data(routes::query_config())
                .app_data(routes::path_config())
                .app_data(web::PayloadConfig::new(body_limit))
                .wrap(page::cors(&cors_origins))
                .wrap(from_fn(guard::check))
                .wrap(from_fn(metrics::record))
                .wrap(from_fn(page::secure_headers))
                .configure(page::configure)
                .configure(routes::configure)
                .configure(openai::configure)
                .default_service(web::to(routes::not_found))
        })
        .workers(cores)
        .max_connections(CONNECTIONS_PER_WORKER)
        // A client that closes its side is gone: drop its handler (and so
        // its generation) instead of finishing the answer for nobody.
        .h1_allow_half_closed(false)
        .shutdown_timeout(30)
        .bind(&addr)
        .map_err(|e| Error::io(PathBuf::from(&addr), e))?;
        // The bound address, which differs from `addr` for port 0.
        let bound = server
            .addrs()
            .first()
            .map_or_else(|| addr.clone(), ToString::to_string);
        let announcement = crate::announce::Announcement {
            addr: bound.clone(),
            token: local_token,
        };
        announcement.write(&dir)?;
        tracing::info!(addr = %bound, "serving");
        eprintln!("lore: serving on http://{bound}");
        server
            .run()
            .await
            .map_err(|e| Error::io(PathBuf::from(&addr), e))
    });
    crate::announce::Announcement::remove(&index_dir);
    drop(watchers);
    served?;
    if config.read_only {
        return Ok(());
    }
    tracing::info!("server stopped; flushing the index");
    engine.checkpoint()
}

/// Watchers of the `--watch` folders, each inside an ingest root, into the
/// configured collection (an initial rescan catches what changed while
/// the server was down).
fn watch(
    engine: &Arc<Engine>,
    folders: &[PathBuf],
    ingest_roots: &[PathBuf],
) -> Result<Vec<crate::watch::Watcher>> {
    let collection = engine.config().collection.clone();
    let config = engine.config().watch.clone();
    folders
        .iter()
        .map(|folder| {
            let canonical = folder.canonicalize().map_err(|e| Error::io(folder, e))?;
            if !ingest_roots.iter().any(|root| canonical.starts_with(root)) {
                return Err(Error::Config(format!(
                    "--watch {}: not inside an ingest root (server.ingest_roots, --ingest-root)",
                    folder.display()
                )));
            }
            crate::watch::Watcher::for_engine(
                engine.clone(),
                &collection,
                &[canonical],
                true,
                &config,
                Box::new(|_| {}),
            )
        })
        .collect()
}

/// Puts in place, every two seconds, vector merges that finished in the
/// background (on a thread of its own; it takes the writer lock only when
/// one did).
fn settle_merges(engine: Arc<Engine>) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(2));
            if let Err(e) = engine.settle_merges() {
                tracing::error!(error = %e, "could not put a finished merge in place");
            }
        }
    });
}

/// Publishes a snapshot into `dir` now and every `every_s` seconds, on a
/// thread of its own (writes wait while one is copied; reads go on).
fn publish_snapshots(engine: Arc<Engine>, dir: PathBuf, every_s: u64) {
    std::thread::spawn(move || {
        loop {
            match engine.publish_snapshot(&dir) {
                Ok(report) => tracing::info!(
                    path = %report.path.display(),
                    files = report.files,
                    bytes = report.bytes,
                    seconds = report.seconds,
                    "snapshot published"
                ),
                Err(e) => tracing::error!(error = %e, dir = %dir.display(), "snapshot failed"),
            }
            std::thread::sleep(Duration::from_secs(every_s.max(1)));
        }
    });
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The calling thread's nice value.
    fn nice() -> i32 {
        // SAFETY: a system call about the calling thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn work_threads_run_below_the_process_priority_and_nothing_else_does() {
        let before = nice();
        let pool = super::work_pool(2, 7).unwrap();
        let inside = pool.install(nice);
        assert_eq!(inside, (before + 7).min(19));
        assert_eq!(nice(), before, "the calling thread kept its priority");
        let off = super::work_pool(1, 0).unwrap();
        assert_eq!(off.install(nice), before);
    }
}
