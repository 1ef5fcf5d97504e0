//! Collections: the named indexes of one index directory. `default` is the
//! directory itself, so an index written before collections existed opens
//! as `default` with nothing moved or re-embedded; every other collection
//! is `collections/NAME/`, a complete index of its own (manifest, documents,
//! vectors, keyword index) with its own embedder, recorded in its
//! `collection.json`. A collection is created under a temporary name and
//! renamed into place, and dropped by renaming it out of the way first, so
//! a killed process never leaves half a collection under a real name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::chunk::Chunker;
use crate::config::{Config, VectorsBackend};
use crate::embed::{Embedder, EmbedderInfo, Precision};
use crate::error::{Error, Result};
use crate::store::manifest::Manifest;
use crate::store::{Index, VectorsAt};

use crate::types::{DEFAULT_COLLECTION, check_collection_name as check_name};
/// Where collections other than `default` live, inside the index directory.
const DIR: &str = "collections";
/// A collection's own record, inside its directory.
const RECORD: &str = "collection.json";
/// Most collections one index directory holds (each open one holds its
/// own stores, files and threads).
pub const MAX_COLLECTIONS: usize = 256;

/// What `collection.json` records.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    /// The embedder's model directory; none: the configured embedder.
    #[serde(default)]
    embedder: Option<PathBuf>,
}

/// An embedder (loaded on first use) and the chunker sized for it.
pub(crate) struct Model {
    info: EmbedderInfo,
    path: PathBuf,
    embedder: OnceLock<Arc<dyn Embedder>>,
    load: Box<dyn Fn() -> Result<Arc<dyn Embedder>> + Send + Sync>,
    chunker: OnceLock<Chunker>,
}

impl Model {
    /// A model whose weights `load` reads on first use.
    pub(crate) fn lazy(
        info: EmbedderInfo,
        path: PathBuf,
        load: impl Fn() -> Result<Arc<dyn Embedder>> + Send + Sync + 'static,
    ) -> Model {
        Model {
            info,
            path,
            embedder: OnceLock::new(),
            load: Box::new(load),
            chunker: OnceLock::new(),
        }
    }

    /// A model around an embedder the caller built, taken to embed
    /// documents in `documents`.
    pub(crate) fn ready(embedder: Arc<dyn Embedder>, documents: Precision) -> Model {
        let info = EmbedderInfo {
            id: embedder.id().to_string(),
            dim: embedder.dim(),
            documents,
        };
        let shared = embedder.clone();
        let model = Model::lazy(info, PathBuf::new(), move || Ok(shared.clone()));
        let _ = model.embedder.set(embedder);
        model
    }
}

/// One named collection: its index and its embedder.
pub struct Collection {
    name: String,
    index: Index,
    model: Arc<Model>,
}

impl Collection {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its stores (benchmarks, tools, the server's probes).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The embedder it was built with, as recorded in its manifest.
    pub fn embedder_info(&self) -> &EmbedderInfo {
        &self.model.info
    }

    /// The model directory of its embedder (empty for one built in code).
    pub fn embedder_path(&self) -> &Path {
        &self.model.path
    }

    /// Its embedder, loading the weights on first use.
    pub fn embedder(&self) -> Result<&Arc<dyn Embedder>> {
        if let Some(embedder) = self.model.embedder.get() {
            return Ok(embedder);
        }
        let loaded = (self.model.load)()?;
        Ok(self.model.embedder.get_or_init(|| loaded))
    }

    /// The chunker sized in its embedder's tokens.
    pub(crate) fn chunker(&self, config: &Config) -> Result<&Chunker> {
        if let Some(chunker) = self.model.chunker.get() {
            return Ok(chunker);
        }
        let sizer = self.embedder()?.sizer()?;
        let chunker = Chunker::new(sizer, config.chunk.max_tokens, config.chunk.overlap_tokens)?;
        Ok(self.model.chunker.get_or_init(|| chunker))
    }
}

/// Finds the model for a collection's recorded embedder (`None`: the
/// configured one), embedding documents in the precision the index
/// recorded (`None`: a new index, whose precision the resolver chooses).
pub(crate) type Resolve =
    dyn Fn(Option<&Path>, Option<Precision>) -> Result<Arc<Model>> + Send + Sync;

/// The collections of one index directory, opened on first use.
pub(crate) struct Collections {
    root: PathBuf,
    open: std::sync::RwLock<BTreeMap<String, Arc<Collection>>>,
}

impl Collections {
    /// The collections under `root`; `default` is opened (or created) at
    /// once, which also takes the index's lock for this process.
    pub(crate) fn open(root: &Path, config: &Config, resolve: &Resolve) -> Result<Collections> {
        let collections = Collections {
            root: root.to_path_buf(),
            open: Default::default(),
        };
        collections.clean_leftovers();
        let default = collections.open_dir(DEFAULT_COLLECTION, root, config, resolve)?;
        collections
            .write()?
            .insert(DEFAULT_COLLECTION.into(), default);
        Ok(collections)
    }

    fn dir_of(&self, name: &str) -> PathBuf {
        if name == DEFAULT_COLLECTION {
            self.root.clone()
        } else {
            self.root.join(DIR).join(name)
        }
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Collection>>>> {
        self.open
            .write()
            .map_err(|_| Error::store("collections", "an earlier change panicked"))
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Collection>>>> {
        self.open
            .read()
            .map_err(|_| Error::store("collections", "an earlier change panicked"))
    }

    /// Removes what a killed create or drop left behind (dot-named).
    fn clean_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(self.root.join(DIR)) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.')
                && let Err(e) = std::fs::remove_dir_all(entry.path())
            {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a leftover collection");
            }
        }
    }

    fn open_dir(
        &self,
        name: &str,
        dir: &Path,
        config: &Config,
        resolve: &Resolve,
    ) -> Result<Arc<Collection>> {
        let record = read_record(dir)?;
        // An index keeps the precision its vectors were computed in.
        let recorded = Manifest::read(dir)?.map(|m| m.embedder.documents);
        let model = resolve(record.embedder.as_deref(), recorded)?;
        let index = Index::open_with(dir, &model.info, &config.hnsw, vectors_at(config, name))?;
        Ok(Arc::new(Collection {
            name: name.to_string(),
            index,
            model,
        }))
    }

    /// Names of every collection, `default` first, then by name.
    pub(crate) fn names(&self) -> Result<Vec<String>> {
        let mut names = vec![DEFAULT_COLLECTION.to_string()];
        let dir = self.root.join(DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut others: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| check_name(n).is_ok() && n != DEFAULT_COLLECTION)
            .collect();
        others.sort();
        names.extend(others);
        Ok(names)
    }

    /// True when `name` exists (opened or not).
    pub(crate) fn exists(&self, name: &str) -> bool {
        name == DEFAULT_COLLECTION || (check_name(name).is_ok() && self.dir_of(name).is_dir())
    }

    /// The collection `name`, opening it on first use.
    pub(crate) fn get(
        &self,
        name: &str,
        config: &Config,
        resolve: &Resolve,
    ) -> Result<Arc<Collection>> {
        if let Some(open) = self.read()?.get(name) {
            return Ok(open.clone());
        }
        check_name(name)?;
        let mut open = self.write()?;
        if let Some(opened) = open.get(name) {
            return Ok(opened.clone());
        }
        if !self.exists(name) {
            return Err(Error::NotFound(format!("collection {name}")));
        }
        let collection = self.open_dir(name, &self.dir_of(name), config, resolve)?;
        open.insert(name.to_string(), collection.clone());
        Ok(collection)
    }

    /// Every collection opened so far.
    pub(crate) fn opened(&self) -> Result<Vec<Arc<Collection>>> {
        Ok(self.read()?.values().cloned().collect())
    }

    /// Creates `name` with the embedder in `embedder` (a model directory;
    /// none: the configured one).
    pub(crate) fn create(
        &self,
        name: &str,
        embedder: Option<&Path>,
        config: &Config,
        resolve: &Resolve,
    ) -> Result<Arc<Collection>> {
        check_name(name)?;
        let mut open = self.write()?;
        if self.exists(name) {
            return Err(Error::Conflict(format!("collection {name} already exists")));
        }
        if self.names()?.len() >= MAX_COLLECTIONS {
            return Err(Error::InvalidRequest(format!(
                "this index already holds {MAX_COLLECTIONS} collections, the most it may"
            )));
        }
        // A named embedder is the caller's input: one that is missing or
        // does not load is their mistake, not the server's.
        let model = resolve(embedder, None).map_err(|e| match (embedder, e) {
            (Some(path), err @ (Error::Model { .. } | Error::Io { .. })) => {
                Error::InvalidRequest(format!("embedder {} does not load: {err}", path.display()))
            }
            (_, err) => err,
        })?;
        let parent = self.root.join(DIR);
        let temp = parent.join(format!(".new-{name}-{}", crate::types::random_id()));
        std::fs::create_dir_all(&temp).map_err(|e| Error::io(&temp, e))?;
        let record = Record {
            embedder: embedder.map(Path::to_path_buf),
        };
        write_record(&temp, &record)?;
        drop(Index::open_with(
            &temp,
            &model.info,
            &config.hnsw,
            vectors_at(config, name),
        )?);
        let dir = self.dir_of(name);
        std::fs::rename(&temp, &dir).map_err(|e| Error::io(&dir, e))?;
        sync_dir(&parent);
        let collection = Arc::new(Collection {
            name: name.to_string(),
            index: Index::open_with(&dir, &model.info, &config.hnsw, vectors_at(config, name))?,
            model,
        });
        open.insert(name.to_string(), collection.clone());
        Ok(collection)
    }

    /// Drops `name` and everything in it. Searches already running on it
    /// finish on the open stores; nothing new reaches it.
    pub(crate) fn drop_collection(&self, name: &str) -> Result<()> {
        check_name(name)?;
        if name == DEFAULT_COLLECTION {
            return Err(Error::InvalidRequest(
                "the default collection cannot be dropped (remove its documents instead)".into(),
            ));
        }
        let mut open = self.write()?;
        if !self.exists(name) {
            return Err(Error::NotFound(format!("collection {name}")));
        }
        open.remove(name);
        let dir = self.dir_of(name);
        let parent = self.root.join(DIR);
        let gone = parent.join(format!(".dropped-{name}-{}", crate::types::random_id()));
        std::fs::rename(&dir, &gone).map_err(|e| Error::io(&dir, e))?;
        sync_dir(&parent);
        std::fs::remove_dir_all(&gone).map_err(|e| Error::io(&gone, e))
    }
}

fn read_record(dir: &Path) -> Result<Record> {
    let path = dir.join(RECORD);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::store("collections", format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
        Err(e) => Err(Error::io(&path, e)),
    }
}

fn write_record(dir: &Path, record: &Record) -> Result<()> {
    let path = dir.join(RECORD);
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| Error::store("collections", e))?;
    std::fs::write(&path, bytes)
        .and_then(|()| std::fs::File::open(&path)?.sync_all())
        .map_err(|e| Error::io(&path, e))
}

/// Makes a rename inside `dir` durable (best effort: not every file
/// system lets a directory be opened for syncing).
fn sync_dir(dir: &Path) {
    if let Ok(file) = std::fs::File::open(dir) {
        let _ = file.sync_all();
    }
}

/// Where collection `name` keeps its vectors.
fn vectors_at<'a>(config: &'a Config, name: &'a str) -> VectorsAt<'a> {
    match config.vectors_backend(name) {
        VectorsBackend::Hnsw => VectorsAt::Embedded,
        VectorsBackend::Milvus => VectorsAt::Milvus {
            config: &config.milvus,
            collection: name,
            read_only: config.server.read_only,
        },
    }
}
