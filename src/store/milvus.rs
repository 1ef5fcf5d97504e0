//! [`MilvusVectorIndex`]: the [`VectorIndex`] of a collection whose vectors
//! live in a Milvus server (standalone, cluster or managed), behind the
//! `milvus` feature.
//!
//! One Milvus collection per lore index directory, named after the lore
//! collection and the doc store's instance id (so two indexes never share
//! one, and a doc store made anew gets a fresh one): an `Int64` primary key,
//! the slot, and the float vector, searched by cosine. sled stays the truth:
//! - writes are upserts by slot, sent in batches, so sending a batch twice
//!   (a retry, or the replay after a crash) changes nothing;
//! - removals hide the slots at once and are sent as deletes by the next
//!   checkpoint ([`VectorIndex::settle`] returns them once Milvus took them,
//!   so sled's tombstones are cleared only then);
//! - [`VectorIndex::persist`] flushes Milvus and then records the
//!   watermark in `vectors/milvus.json`: on open, everything at or above it
//!   is sent again. A lost or unreadable record means a watermark of 0: all
//!   is sent again, which is slow but never wrong.
//!
//! Every call runs with retries (transport failures and time-outs; a server
//! restarting) up to `milvus.timeout_s`, then fails with an error naming
//! the server. Searches apply the caller's filter to every hit (an access
//! list is never left to the server) and widen the request until `k` hits
//! pass or no more exist; a search among a given set of slots sends the
//! set as a filter expression (`slot in [...]`).
//!
//! A read-only replica (`lore serve --read-only` on a snapshot) attaches to
//! the writer's collection and never writes to it: it counts and sees only
//! the slots its snapshot knows, hides its snapshot's tombstones itself,
//! and leaves a disagreement between the two (the writer's later deletes)
//! as it is, with a warning, instead of remaking the writer's collection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use milvus::v2 as sdk;
use milvus::v2::prelude::*;
use serde::{Deserialize, Serialize};

use super::{SlotSet, VectorIndex, VectorSource, check_dims};
use crate::config::MilvusConfig;
use crate::error::{Error, Result};
use crate::types::Slot;

const SLOT_FIELD: &str = "slot";
const VECTOR_FIELD: &str = "vector";
/// Rows per upsert request.
const BATCH: usize = 1000;
/// Milvus's largest `limit` for one search.
const MAX_LIMIT: usize = 16384;
/// Slots sent as one filter expression; a larger set is scored here,
/// exactly, from the doc store's vectors.
const MAX_FILTER_SLOTS: usize = 16384;
/// The record of what Milvus holds, in the vectors directory.
const META: &str = super::MILVUS_RECORD;

/// What `vectors/milvus.json` records.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    /// The Milvus collection.
    collection: String,
    /// Every live slot below it is in Milvus, flushed.
    watermark: u64,
}

/// Writes not yet acknowledged and removals not yet sent.
#[derive(Default)]
struct State {
    /// Rows Milvus holds, as last counted, plus what was sent since.
    count: u64,
    /// Slots hidden from search whose deletes are not sent yet.
    removed: HashSet<u64>,
    /// Vectors a failed write did not deliver: sent before anything else.
    unsent: BTreeMap<Slot, Vec<f32>>,
}

/// A [`VectorIndex`] served by Milvus.
pub struct MilvusVectorIndex {
    runtime: tokio::runtime::Runtime,
    client: sdk::ClientV2,
    uri: String,
    name: String,
    index_type: sdk::IndexType,
    dim: usize,
    ef: usize,
    timeout: Duration,
    dir: PathBuf,
    source: Arc<dyn VectorSource>,
    /// A replica's bound: see [`MilvusOpen::read_only`].
    read_only: Option<Slot>,
    state: Mutex<State>,
}

fn backend(uri: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::store("vectors", format!("milvus at {uri}: {what}: {e}"))
}

/// Failures worth another try: the transport, a time-out, a server busy.
fn transient(e: &sdk::error::Error) -> bool {
    use sdk::error::Error as E;
    match e {
        E::Grpc(status) => matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::ResourceExhausted
                | tonic::Code::Aborted
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
        ),
        E::Timeout(_) | E::Cancelled(_) => true,
        E::RetryExhausted { source, .. } => transient(source),
        _ => false,
    }
}

/// The dense-vector index types lore can ask for, by their Milvus names.
fn index_type(name: &str) -> Result<sdk::IndexType> {
    use sdk::IndexType as T;
    Ok(match name.to_ascii_uppercase().as_str() {
        "FLAT" => T::Flat,
        "HNSW" => T::Hnsw,
        "HNSW_SQ" => T::HnswSq,
        "HNSW_PQ" => T::HnswPq,
        "IVF_FLAT" => T::IvfFlat,
        "IVF_SQ8" => T::IvfSq8,
        "IVF_PQ" => T::IvfPq,
        "DISKANN" => T::DiskAnn,
        "AUTOINDEX" => T::AutoIndex,
        "SCANN" => T::Scann,
        _ => {
            return Err(Error::Config(format!(
                "milvus.index = '{name}' is not a dense-vector index type lore knows \
                 (FLAT, HNSW, HNSW_SQ, HNSW_PQ, IVF_FLAT, IVF_SQ8, IVF_PQ, DISKANN, AUTOINDEX, SCANN)"
            )));
        }
    })
}

/// The token: `LORE_MILVUS_TOKEN`, else the named file (which must be
/// readable and not empty), else none.
fn token(config: &MilvusConfig) -> Result<Option<String>> {
    if let Some(token) = std::env::var("LORE_MILVUS_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(token));
    }
    let Some(path) = &config.token_file else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::Config(format!(
            "milvus.token_file {} is empty",
            path.display()
        )));
    }
    Ok(Some(token.to_string()))
}

/// The Milvus collection of the lore collection `collection` whose doc
/// store's instance id is `instance`.
pub fn collection_name(config: &MilvusConfig, collection: &str, instance: &str) -> String {
    let clean: String = collection
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let id: String = instance
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    format!("{}_{clean}_{id}", config.prefix)
}

/// How [`MilvusVectorIndex::open`] opens.
pub struct MilvusOpen<'a> {
    /// The server.
    pub config: &'a MilvusConfig,
    /// The Milvus collection.
    pub name: String,
    /// Candidate list size of its searches.
    pub ef: usize,
    /// A read-only replica of a snapshot whose doc store allocated the
    /// slots below this one: it never writes to Milvus (the writer does),
    /// and sees and counts only those slots (the writer's newer ones are
    /// not in its doc store).
    pub read_only: Option<Slot>,
}

impl MilvusVectorIndex {
    /// Connects, makes the collection when it does not exist (or checks
    /// its dimension when it does), loads it, and returns it with the
    /// watermark recorded in `dir`.
    pub fn open(
        dir: &Path,
        dim: usize,
        how: MilvusOpen<'_>,
        source: Arc<dyn VectorSource>,
    ) -> Result<(Self, Slot)> {
        let MilvusOpen {
            config,
            name,
            ef,
            read_only,
        } = how;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let index_type = index_type(&config.index)?;
        let uri = config.uri.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lore-milvus")
            .enable_all()
            .build()
            .map_err(|e| backend(&uri, "starting its runtime", e))?;
        let timeout = Duration::from_secs(config.timeout_s);
        let mut connect = ConnectConfig::new()
            .uri(uri.clone())
            .database(config.database.clone())
            .connect_timeout(timeout);
        if let Some(token) = token(config)? {
            connect = connect.token(token);
        }
        if let Some(ca) = &config.ca_file {
            // Checked here: the SDK would fall back to the system's roots
            // (and fail less clearly) on a path it cannot read.
            std::fs::metadata(ca).map_err(|e| Error::io(ca, e))?;
            connect = connect.ca_certificate(ca.to_string_lossy());
        }
        let client = run(&runtime, async {
            tokio::time::timeout(timeout, sdk::ClientV2::new(&connect)).await
        })
        .map_err(|_| backend(&uri, "connecting", "timed out"))?
        .map_err(|e| backend(&uri, "connecting", e))?;
        let index = MilvusVectorIndex {
            runtime,
            client,
            uri,
            name,
            index_type,
            dim,
            ef,
            timeout,
            dir: dir.to_path_buf(),
            source,
            read_only,
            state: Mutex::new(State::default()),
        };
        if read_only.is_some() {
            index.attach()?;
        } else {
            index.ensure_collection()?;
        }
        let count = index.count()?;
        index.state().count = count;
        let watermark = index.read_watermark();
        if read_only.is_none() && !dir.join(META).exists() {
            // From now on the directory says where its vectors are.
            index.write_watermark(watermark)?;
        }
        tracing::info!(collection = %index.name, rows = count, watermark = watermark.0, "milvus collection open");
        Ok((index, watermark))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `op` until it succeeds, fails for good, or the time is up.
    fn call<T, F>(&self, what: &str, op: impl Fn() -> F + Sync) -> Result<T>
    where
        T: Send,
        F: Future<Output = sdk::error::Result<T>> + Send,
    {
        let deadline = Instant::now() + self.timeout;
        let attempt = async {
            let mut wait = Duration::from_millis(100);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, op()).await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(e)) if transient(&e) && Instant::now() + wait < deadline => {
                        tracing::warn!(error = %e, what, "milvus call failed; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(2));
                    }
                    Ok(Err(e)) => return Err(backend(&self.uri, what, e)),
                    Err(_) => {
                        let secs = self.timeout.as_secs();
                        return Err(backend(&self.uri, what, format!("no answer in {secs} s")));
                    }
                }
            }
        };
        run(&self.runtime, attempt)
    }

    /// A replica's open: the writer's collection must exist; it is loaded,
    /// nothing is made.
    fn attach(&self) -> Result<()> {
        if !self.exists()? {
            return Err(Error::store(
                "vectors",
                format!(
                    "milvus at {}: the writer's collection {} does not exist",
                    self.uri, self.name
                ),
            ));
        }
        self.check_dimension()?;
        self.load()
    }

    fn exists(&self) -> Result<bool> {
        let has = sdk::request::collection::HasCollectionRequest::builder()
            .collection_name(&self.name)
            .build()
            .map_err(|e| backend(&self.uri, "has_collection", e))?;
        let found = self.call("checking the collection", || {
            self.client.has_collection(has.clone())
        })?;
        Ok(found.exists())
    }

    fn load(&self) -> Result<()> {
        let load = sdk::request::collection::LoadCollectionRequest::builder()
            .collection_name(&self.name)
            .build()
            .map_err(|e| backend(&self.uri, "load", e))?;
        self.call("loading the collection", || {
            self.client.load_collection(load.clone())
        })
    }

    /// Refuses a write on a replica (which `Index` never asks for except
    /// through recovery, whose writes are the writer's to make).
    fn writes(&self, what: &str) -> bool {
        if self.read_only.is_some() {
            tracing::debug!(
                what,
                "read-only replica: the writer keeps Milvus up to date"
            );
            return false;
        }
        true
    }

    fn ensure_collection(&self) -> Result<()> {
        if self.exists()? {
            self.check_dimension()?;
        } else {
            self.create()?;
        }
        // Also for one that exists: its making may have been cut short.
        if !self.has_index()? {
            self.create_index()?;
        }
        self.load()
    }

    fn create(&self) -> Result<()> {
        let schema = sdk::CollectionSchema::new()
            .add_field(
                sdk::FieldSchema::new()
                    .name(SLOT_FIELD)
                    .data_type(sdk::DataType::Int64)
                    .primary_key(true),
            )
            .add_field(
                sdk::FieldSchema::new()
                    .name(VECTOR_FIELD)
                    .data_type(sdk::DataType::FloatVector)
                    .dimension(self.dim as u32),
            );
        let create = sdk::request::collection::CreateCollectionRequest::builder()
            .collection_name(&self.name)
            .schema(schema)
            .build()
            .map_err(|e| backend(&self.uri, "create_collection", e))?;
        self.call("creating the collection", || {
            self.client.create_collection(create.clone())
        })?;
        tracing::info!(collection = %self.name, index = ?self.index_type, "made a milvus collection");
        Ok(())
    }

    /// True when the vector field has an index (a server that says it has
    /// none answers with an error, which is also taken as none).
    fn has_index(&self) -> Result<bool> {
        let describe = sdk::request::index::DescribeIndexRequest::builder()
            .collection_name(&self.name)
            .field_name(VECTOR_FIELD)
            .build()
            .map_err(|e| backend(&self.uri, "describe_index", e))?;
        let found = self.call("describing the index", || {
            self.client.describe_index(describe.clone())
        });
        Ok(found.is_ok_and(|r| !r.indexes().is_empty()))
    }

    /// Asks for the vector field's index; not waiting for it to be built
    /// (searches are answered meanwhile, and not every server can be
    /// polled for it).
    fn create_index(&self) -> Result<()> {
        let index = sdk::request::index::CreateIndexRequest::builder()
            .collection_name(&self.name)
            .index_param(
                sdk::IndexParam::new()
                    .field_name(VECTOR_FIELD)
                    .index_type(self.index_type)
                    .metric_type(sdk::MetricType::Cosine),
            )
            .sync(false)
            .build()
            .map_err(|e| backend(&self.uri, "create_index", e))?;
        self.call("indexing the collection", || {
            self.client.create_index(index.clone())
        })
    }

    fn check_dimension(&self) -> Result<()> {
        let describe = DescribeCollectionRequest::builder()
            .collection_name(&self.name)
            .build()
            .map_err(|e| backend(&self.uri, "describe_collection", e))?;
        let response = self.call("describing the collection", || {
            self.client.describe_collection(describe.clone())
        })?;
        let schema = response.description().get_schema();
        let field = schema
            .get_fields()
            .iter()
            .find(|f| f.get_name() == VECTOR_FIELD)
            .ok_or_else(|| {
                Error::store(
                    "vectors",
                    format!("milvus collection {} has no vector field", self.name),
                )
            })?;
        match field.get_dimension() {
            dim if dim as usize == self.dim => Ok(()),
            other => Err(Error::store(
                "vectors",
                format!(
                    "milvus collection {} holds vectors of dimension {other}, not {}",
                    self.name, self.dim
                ),
            )),
        }
    }

    /// Rows Milvus holds.
    fn count(&self) -> Result<u64> {
        let mut query = QueryRequest::builder()
            .collection_name(&self.name)
            .output_fields(["count(*)"])
            .consistency_level(ConsistencyLevel::Strong);
        if let Some(bound) = self.read_only {
            query = query.filter(format!("{SLOT_FIELD} < {}", bound.0));
        }
        let query = query.build().map_err(|e| backend(&self.uri, "count", e))?;
        let response = self.call("counting", || self.client.query(query.clone()))?;
        let mut rows = response
            .results()
            .rows()
            .map_err(|e| backend(&self.uri, "count", e))?;
        let Some(row) = rows.next() else {
            return Err(backend(&self.uri, "count", "no answer"));
        };
        match row.get("count(*)") {
            Ok(ResultValue::Int64(n)) => Ok(n.max(0) as u64),
            other => Err(backend(
                &self.uri,
                "count",
                format!("unexpected answer {other:?}"),
            )),
        }
    }

    fn read_watermark(&self) -> Slot {
        let path = self.dir.join(META);
        let Ok(bytes) = std::fs::read(&path) else {
            return Slot(0);
        };
        match serde_json::from_slice::<Meta>(&bytes) {
            Ok(meta) if meta.collection == self.name => Slot(meta.watermark),
            Ok(_) => Slot(0),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable milvus record; sending every vector again");
                Slot(0)
            }
        }
    }

    fn write_watermark(&self, watermark: Slot) -> Result<()> {
        let meta = Meta {
            collection: self.name.clone(),
            watermark: watermark.0,
        };
        let bytes = serde_json::to_vec(&meta).map_err(|e| Error::store("vectors", e))?;
        let path = self.dir.join(META);
        let tmp = self.dir.join(format!("{META}.tmp"));
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::io(&path, e))
    }

    /// Upserts `items`, a batch at a time.
    fn upsert(&self, items: &[(Slot, Vec<f32>)]) -> Result<()> {
        for batch in items.chunks(BATCH) {
            let rows: Vec<serde_json::Value> = batch
                .iter()
                .map(|(slot, v)| serde_json::json!({ SLOT_FIELD: slot.0 as i64, VECTOR_FIELD: v }))
                .collect();
            let insert = sdk::request::dml::InsertRequest::builder()
                .collection_name(&self.name)
                .rows(rows)
                .build()
                .map_err(|e| backend(&self.uri, "upsert", e))?;
            let upsert = sdk::request::dml::UpsertRequest::builder()
                .insert(insert)
                .build()
                .map_err(|e| backend(&self.uri, "upsert", e))?;
            self.call("writing vectors", || self.client.upsert(upsert.clone()))?;
        }
        Ok(())
    }

    /// Sends what earlier failed writes did not deliver.
    fn send_unsent(&self) -> Result<()> {
        let unsent: Vec<(Slot, Vec<f32>)> = {
            let state = self.state();
            state.unsent.iter().map(|(s, v)| (*s, v.clone())).collect()
        };
        if unsent.is_empty() {
            return Ok(());
        }
        self.upsert(&unsent)?;
        let mut state = self.state();
        unsent.iter().for_each(|(s, _)| {
            state.unsent.remove(s);
        });
        Ok(())
    }

    fn delete(&self, slots: &[u64]) -> Result<()> {
        for batch in slots.chunks(BATCH) {
            // By expression: the SDK sends an id list as a filter template,
            // which Milvus Lite cannot parse.
            let list: Vec<String> = batch.iter().map(u64::to_string).collect();
            let delete = sdk::request::dml::DeleteRequest::builder()
                .collection_name(&self.name)
                .filter(format!("{SLOT_FIELD} in [{}]", list.join(",")))
                .build()
                .map_err(|e| backend(&self.uri, "delete", e))?;
            self.call("deleting vectors", || self.client.delete(delete.clone()))?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let flush = FlushRequest::builder()
            .collection_names([self.name.clone()])
            .wait_flushed_ms(self.timeout.as_millis() as i64)
            .build()
            .map_err(|e| backend(&self.uri, "flush", e))?;
        self.call("flushing", || self.client.flush(flush.clone()))
            .map(drop)
    }

    /// The `limit` nearest rows, optionally only among `among`.
    fn query(
        &self,
        query: &[f32],
        limit: usize,
        among: Option<Vec<i64>>,
    ) -> Result<Vec<(Slot, f32)>> {
        let mut builder = SearchRequest::builder()
            .collection_name(&self.name)
            .vector_field(VECTOR_FIELD)
            .vectors(SearchVectors::Float(vec![query.to_vec()]))
            .limit(limit as i64)
            .extra_params(HashMap::from([(
                "ef".to_string(),
                self.ef.max(limit).to_string(),
            )]))
            .consistency_level(ConsistencyLevel::Strong);
        if let Some(slots) = among {
            // A literal list: every server parses it (Milvus Lite has no
            // filter templates).
            let list: Vec<String> = slots.iter().map(i64::to_string).collect();
            builder = builder.filter(format!("{SLOT_FIELD} in [{}]", list.join(",")));
        }
        let search = builder
            .build()
            .map_err(|e| backend(&self.uri, "search", e))?;
        let response = self.call("searching", || self.client.search(search.clone()))?;
        let mut hits = Vec::new();
        for result in response.results() {
            for row in result.rows().map_err(|e| backend(&self.uri, "search", e))? {
                let slot = match row.get(SLOT_FIELD) {
                    Ok(ResultValue::Int64(id)) if id >= 0 => Slot(id as u64),
                    other => {
                        return Err(backend(
                            &self.uri,
                            "search",
                            format!("unexpected id {other:?}"),
                        ));
                    }
                };
                let score = match row.get("score") {
                    Ok(ResultValue::Float(score)) => score,
                    other => {
                        return Err(backend(
                            &self.uri,
                            "search",
                            format!("unexpected score {other:?}"),
                        ));
                    }
                };
                hits.push((slot, score));
            }
        }
        Ok(hits)
    }
}

/// Runs `fut` on `runtime`, also from a thread that is already inside a
/// runtime (an HTTP worker), where blocking on another one would panic.
fn run<F>(runtime: &tokio::runtime::Runtime, fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(|| runtime.block_on(fut))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    } else {
        runtime.block_on(fut)
    }
}

impl VectorIndex for MilvusVectorIndex {
    fn insert(&self, items: &[(Slot, Vec<f32>)]) -> Result<()> {
        check_dims(self.dim, items.iter().map(|(_, v)| v.as_slice()))?;
        if items.is_empty() || !self.writes("insert") {
            return Ok(());
        }
        let sent = self.send_unsent().and_then(|()| self.upsert(items));
        let mut state = self.state();
        match sent {
            Ok(()) => {
                state.count += items.len() as u64;
                Ok(())
            }
            Err(e) => {
                // sled holds them: the next write or checkpoint sends them
                // again, and so does the next open (they are above the
                // watermark).
                state.unsent.extend(items.iter().cloned());
                Err(e)
            }
        }
    }

    fn remove(&self, slots: &[Slot]) {
        let mut state = self.state();
        for slot in slots {
            if state.unsent.remove(slot).is_none() {
                state.removed.insert(slot.0);
            }
        }
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&(dyn Fn(Slot) -> bool + Sync)>,
    ) -> Result<Vec<(Slot, f32)>> {
        check_dims(self.dim, [query])?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let removed = self.state().removed.clone();
        let known = |slot: Slot| self.read_only.is_none_or(|bound| slot < bound);
        let keep = |slot: Slot| {
            known(slot) && !removed.contains(&slot.0) && filter.is_none_or(|f| f(slot))
        };
        let mut limit = (k + removed.len()).clamp(1, MAX_LIMIT);
        if filter.is_some() || self.read_only.is_some() {
            limit = (limit * 4).min(MAX_LIMIT);
        }
        loop {
            let found = self.query(query, limit, None)?;
            let complete = found.len() < limit;
            let hits: Vec<(Slot, f32)> = found.into_iter().filter(|(s, _)| keep(*s)).collect();
            if hits.len() >= k || complete {
                return Ok(super::top_k(hits, k));
            }
            if limit == MAX_LIMIT {
                return Ok(super::top_k(
                    super::score_source(self.source.as_ref(), query, &keep)?,
                    k,
                ));
            }
            limit = (limit * 4).min(MAX_LIMIT);
        }
    }

    fn search_among(&self, query: &[f32], k: usize, slots: &SlotSet) -> Result<Vec<(Slot, f32)>> {
        check_dims(self.dim, [query])?;
        let removed = self.state().removed.clone();
        let live: Vec<i64> = slots
            .iter()
            .filter(|s| !removed.contains(&s.0))
            .map(|s| s.0 as i64)
            .collect();
        if live.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        if live.len() > MAX_FILTER_SLOTS {
            let keep = |slot: Slot| slots.contains(slot) && !removed.contains(&slot.0);
            return Ok(super::top_k(
                super::score_source(self.source.as_ref(), query, &keep)?,
                k,
            ));
        }
        let limit = k.min(live.len()).min(MAX_LIMIT);
        self.query(query, limit, Some(live))
    }

    fn len(&self) -> u64 {
        let state = self.state();
        (state.count + state.unsent.len() as u64).saturating_sub(state.removed.len() as u64)
    }

    fn tombstone_count(&self) -> u64 {
        self.state().removed.len() as u64
    }

    fn restore_tombstones(&self, slots: &[Slot]) -> Result<Vec<Slot>> {
        if !self.writes("restore_tombstones") {
            // Hidden here; the writer sends the deletes.
            self.remove(slots);
            return Ok(Vec::new());
        }
        // Deletes are idempotent: send them all again, and once Milvus has
        // them (flushed) sled may forget them.
        let ids: Vec<u64> = slots.iter().map(|s| s.0).collect();
        self.delete(&ids)?;
        self.flush()?;
        if !ids.is_empty() {
            self.state().count = self.count()?;
        }
        Ok(slots.to_vec())
    }

    fn persist(&self, watermark: Slot) -> Result<()> {
        if !self.writes("persist") {
            return Ok(());
        }
        self.send_unsent()?;
        self.flush()?;
        self.state().count = self.count()?;
        self.write_watermark(watermark)
    }

    fn rebuild(&self, items: &[(Slot, Vec<f32>)]) -> Result<()> {
        check_dims(self.dim, items.iter().map(|(_, v)| v.as_slice()))?;
        if self.read_only.is_some() {
            // The writer's collection has moved on since the snapshot (the
            // writer deleted some of its rows): a replica never remakes it.
            tracing::warn!(
                collection = %self.name,
                snapshot = items.len(),
                "a read-only replica's snapshot disagrees with the writer's milvus \
                 collection; serving what both hold"
            );
            return Ok(());
        }
        // Dropped and made anew: nothing it held survives but `items`.
        let drop = sdk::request::collection::DropCollectionRequest::builder()
            .collection_name(&self.name)
            .build()
            .map_err(|e| backend(&self.uri, "drop_collection", e))?;
        self.call("dropping the collection", || {
            self.client.drop_collection(drop.clone())
        })?;
        self.ensure_collection()?;
        self.upsert(items)?;
        self.flush()?;
        let count = self.count()?;
        let mut state = self.state();
        state.removed.clear();
        state.unsent.clear();
        state.count = count;
        Ok(())
    }

    fn settle(&self) -> Result<Vec<Slot>> {
        if !self.writes("settle") {
            return Ok(Vec::new());
        }
        let removed: Vec<u64> = self.state().removed.iter().copied().collect();
        if removed.is_empty() {
            return Ok(Vec::new());
        }
        self.delete(&removed)?;
        self.flush()?;
        let mut state = self.state();
        removed.iter().for_each(|s| {
            state.removed.remove(s);
        });
        state.count = state.count.saturating_sub(removed.len() as u64);
        Ok(removed.into_iter().map(Slot).collect())
    }
}
