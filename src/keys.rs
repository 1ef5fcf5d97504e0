//! The key store: API keys with a role, the collections they may use and
//! the groups they belong to, kept in `<index>/keys.json` (mode 0600).
//! Only a salted argon2id hash of each secret is stored, next to a public
//! key id. A secret names its key (`lore_<id>_<random>`), so checking one
//! costs one hash; secrets already checked are remembered by their BLAKE3
//! hash, so a request does not pay argon2's deliberate cost every time.
//! The file is re-read when it changes: `lore key create` and `revoke`
//! take effect on a running server. Changes are read-modify-write under
//! an exclusive lock on `keys.json.lock`, each writer through its own
//! temporary file, synced, then renamed: concurrent changes never lose a
//! key or bring back a revoked one.
//!
//! The store fails closed. Once the file has been seen (at open or any
//! time after), a missing, unreadable or malformed file is an error
//! ([`Error::Unavailable`]), never "no keys". Secrets that fail are
//! remembered per key id: after a failure that id's next unverified
//! secrets are refused without hashing for a while ([`BACKOFF_MAX`]), so
//! guessing costs the guesser time, not the server's cores.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

use crate::access::Readers;
use crate::error::{Error, Result};

/// The key store's file inside the index directory.
pub const KEYS_FILE: &str = "keys.json";
/// The lock file that serialises changes to the key store.
const LOCK_FILE: &str = "keys.json.lock";
/// Random bytes in a secret.
const SECRET_BYTES: usize = 24;
/// Longest wait a key id is given after failed secrets (it doubles per
/// failure from 50 ms).
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Wait after the first failed secret of a key id.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
/// Key ids whose failures are remembered; past that the oldest go.
const MAX_FAILING_IDS: usize = 4096;

/// What a key may do, each role including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Search, ask, chat, models, embeddings; read documents.
    Read,
    /// Also add, delete, ingest and remove documents.
    Write,
    /// Also manage collections and keys.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        })
    }
}

/// One key as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Public id (appears in logs and the audit trail).
    pub id: String,
    /// What it may do.
    pub role: Role,
    /// Collections it may use; `*` for all.
    pub collections: Vec<String>,
    /// Groups it belongs to (for documents with an access list).
    pub groups: Vec<String>,
    /// Unix seconds when it was created.
    pub created: u64,
    /// argon2id hash of the secret (PHC string, salt included).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub hash: String,
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// Key id (`local` for the local CLI, `env-…` for configured keys).
    pub id: String,
    /// What it may do.
    pub role: Role,
    /// Collections it may use; `*` for all.
    pub collections: Vec<String>,
    /// Groups it belongs to.
    pub groups: Vec<String>,
    /// Reads every document, access lists regardless (the local CLI, a
    /// server without keys).
    pub reads_everything: bool,
}

impl Principal {
    /// A principal with every collection and no groups.
    pub fn everywhere(id: impl Into<String>, role: Role) -> Principal {
        Principal {
            id: id.into(),
            role,
            collections: vec!["*".into()],
            groups: Vec::new(),
            reads_everything: false,
        }
    }

    /// The machine's own user: every role, collection and document.
    pub fn owner(id: impl Into<String>) -> Principal {
        Principal {
            reads_everything: true,
            ..Principal::everywhere(id, Role::Admin)
        }
    }

    /// Who reads, for retrieval and every other way to see a document.
    pub fn readers(&self) -> Readers {
        if self.reads_everything {
            Readers::Everyone
        } else {
            Readers::Groups(self.groups.clone())
        }
    }

    /// True when it may use `collection`.
    pub fn may_use(&self, collection: &str) -> bool {
        self.collections.iter().any(|c| c == "*" || c == collection)
    }
}

impl From<&KeyRecord> for Principal {
    fn from(key: &KeyRecord) -> Principal {
        Principal {
            id: key.id.clone(),
            role: key.role,
            collections: key.collections.clone(),
            groups: key.groups.clone(),
            reads_everything: false,
        }
    }
}

#[derive(Default)]
struct Loaded {
    /// True once the file was read.
    read: bool,
    /// Modification time of the file when read (None: no file).
    modified: Option<SystemTime>,
    keys: Vec<KeyRecord>,
    /// BLAKE3 of secrets already verified → key id.
    verified: HashMap<[u8; 32], String>,
}

/// Failed secrets of one key id.
struct Failures {
    count: u32,
    /// Unverified secrets of this id are refused until then.
    until: Instant,
}

/// What the fast part of a check found.
enum Lookup {
    /// The secret names no key (or was refused during a back-off).
    Refused,
    /// Verified before.
    Known(Principal),
    /// Needs argon2: the key and the secret's fingerprint.
    Hash(Box<KeyRecord>, [u8; 32]),
}

/// The keys of one index.
pub struct KeyStore {
    path: PathBuf,
    /// The file has existed: from now on it must (fail closed).
    seen: AtomicBool,
    loaded: Mutex<Loaded>,
    failures: Mutex<HashMap<String, Failures>>,
}

impl KeyStore {
    fn audit(&self, actor: &str, action: crate::audit::Action, id: &str) {
        if let Some(index) = self.path.parent() {
            crate::audit::Event::new(actor, "*", action)
                .object(id)
                .record(index);
        }
    }

    /// The store of the index at `index_dir` (empty when it has no file).
    pub fn open(index_dir: &Path) -> KeyStore {
        let path = index_dir.join(KEYS_FILE);
        KeyStore {
            seen: AtomicBool::new(path.exists()),
            path,
            loaded: Mutex::new(Loaded::default()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Every key, without hashes.
    pub fn list(&self) -> Result<Vec<KeyRecord>> {
        let keys = self.read()?;
        Ok(keys
            .into_iter()
            .map(|k| KeyRecord {
                hash: String::new(),
                ..k
            })
            .collect())
    }

    /// True once the store's file was seen, by this value or on disk (it
    /// stays, empty, when the last key is revoked: a server that required
    /// keys keeps doing so). Only ever turns from false to true: a file
    /// that disappears later makes checks fail, it never opens anything.
    pub fn exists(&self) -> bool {
        if !self.seen.load(Ordering::SeqCst) && self.path.exists() {
            self.seen.store(true, Ordering::SeqCst);
        }
        self.seen.load(Ordering::SeqCst)
    }

    /// True when the store holds no key.
    pub fn is_empty(&self) -> Result<bool> {
        self.with_fresh(|loaded| loaded.keys.is_empty())
    }

    /// Creates a key on behalf of `actor` (audited); returns its record
    /// and its secret (shown once).
    pub fn create(
        &self,
        actor: &str,
        role: Role,
        collections: Vec<String>,
        groups: Vec<String>,
    ) -> Result<(KeyRecord, String)> {
        for name in collections.iter().filter(|c| *c != "*") {
            crate::types::check_collection_name(name)?;
        }
        check_groups(&groups)?;
        if collections.is_empty() {
            return Err(Error::InvalidRequest(
                "a key needs at least one collection (or *)".into(),
            ));
        }
        let id = hex(&random_bytes::<6>()?);
        let secret = format!("lore_{id}_{}", hex(&random_bytes::<SECRET_BYTES>()?));
        let salt = SaltString::encode_b64(&random_bytes::<16>()?)
            .map_err(|e| Error::InvalidRequest(format!("salt: {e}")))?;
        let hash = Argon2::default()
            .hash_password(secret.as_bytes(), &salt)
            .map_err(|e| Error::InvalidRequest(format!("hashing the key: {e}")))?
            .to_string();
        let record = KeyRecord {
            id,
            role,
            collections,
            groups,
            created: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            hash,
        };
        self.modify(|keys| {
            keys.push(record.clone());
            Ok(())
        })?;
        self.audit(actor, crate::audit::Action::KeyCreate, &record.id);
        Ok((
            KeyRecord {
                hash: String::new(),
                ..record
            },
            secret,
        ))
    }

    /// Revokes the key with `id` on behalf of `actor` (audited); returns
    /// its record.
    pub fn revoke(&self, actor: &str, id: &str) -> Result<KeyRecord> {
        let removed = self.modify(|keys| {
            let at = keys
                .iter()
                .position(|k| k.id == id)
                .ok_or_else(|| Error::NotFound(format!("key {id}")))?;
            Ok(keys.remove(at))
        })?;
        self.audit(actor, crate::audit::Action::KeyRevoke, id);
        Ok(KeyRecord {
            hash: String::new(),
            ..removed
        })
    }

    /// The principal `secret` stands for, if it is a live key. Costs one
    /// argon2 hash for a secret not verified before (none during its key
    /// id's back-off); an unreadable store is [`Error::Unavailable`].
    pub fn verify(&self, secret: &str) -> Result<Option<Principal>> {
        let (key, fingerprint) = match self.lookup(secret)? {
            Lookup::Refused => return Ok(None),
            Lookup::Known(principal) => return Ok(Some(principal)),
            Lookup::Hash(key, fingerprint) => (key, fingerprint),
        };
        let parsed = PasswordHash::new(&key.hash)
            .map_err(|e| Error::unavailable(format!("key {}: bad hash: {e}", key.id)))?;
        if Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_err()
        {
            self.failed(&key.id)?;
            return Ok(None);
        }
        self.with_fresh(|loaded| loaded.verified.insert(fingerprint, key.id.clone()))?;
        self.failures
            .lock()
            .map_err(|_| Error::unavailable("an earlier key check panicked"))?
            .remove(&key.id);
        Ok(Some(Principal::from(&*key)))
    }

    /// The cheap part of [`KeyStore::verify`]: which key `secret` names,
    /// and whether it was verified before.
    fn lookup(&self, secret: &str) -> Result<Lookup> {
        let fingerprint = *blake3::hash(secret.as_bytes()).as_bytes();
        let (key, known) = self.with_fresh(|loaded| {
            let id = secret.strip_prefix("lore_").and_then(|s| s.split_once('_'));
            let key = id.and_then(|(id, _)| loaded.keys.iter().find(|k| k.id == id).cloned());
            let known = key
                .as_ref()
                .is_some_and(|k| loaded.verified.get(&fingerprint) == Some(&k.id));
            (key, known)
        })?;
        Ok(match key {
            None => Lookup::Refused,
            Some(key) if known => Lookup::Known(Principal::from(&key)),
            Some(key) if self.backing_off(&key.id)? => Lookup::Refused,
            Some(key) => Lookup::Hash(Box::new(key), fingerprint),
        })
    }

    fn backing_off(&self, id: &str) -> Result<bool> {
        let failures = self
            .failures
            .lock()
            .map_err(|_| Error::unavailable("an earlier key check panicked"))?;
        Ok(failures.get(id).is_some_and(|f| Instant::now() < f.until))
    }

    /// Records a failed secret for key `id`: its back-off doubles.
    fn failed(&self, id: &str) -> Result<()> {
        let mut failures = self
            .failures
            .lock()
            .map_err(|_| Error::unavailable("an earlier key check panicked"))?;
        if failures.len() >= MAX_FAILING_IDS && !failures.contains_key(id) {
            let now = Instant::now();
            failures.retain(|_, f| f.until > now);
            if failures.len() >= MAX_FAILING_IDS {
                failures.clear();
            }
        }
        let entry = failures.entry(id.to_string()).or_insert(Failures {
            count: 0,
            until: Instant::now(),
        });
        entry.count = entry.count.saturating_add(1);
        let wait = BACKOFF_FIRST
            .saturating_mul(1u32 << entry.count.min(16).saturating_sub(1))
            .min(BACKOFF_MAX);
        entry.until = Instant::now() + wait;
        Ok(())
    }

    /// Runs `f` on the keys as they are on disk now (re-read when the file
    /// changed, which also forgets every verified secret). Once the file
    /// was seen, its absence is an error: keys never silently vanish.
    fn with_fresh<T>(&self, f: impl FnOnce(&mut Loaded) -> T) -> Result<T> {
        let modified = match std::fs::metadata(&self.path) {
            Ok(meta) => Some(meta.modified().map_err(|e| self.unreadable(e))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.exists() => None,
            Err(e) => return Err(self.unreadable(e)),
        };
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| Error::unavailable("an earlier key check panicked"))?;
        if !loaded.read || loaded.modified != modified {
            let keys = self.read().map_err(|e| self.unreadable(e))?;
            *loaded = Loaded {
                read: true,
                modified,
                keys,
                verified: HashMap::new(),
            };
        }
        Ok(f(&mut loaded))
    }

    fn unreadable(&self, err: impl std::fmt::Display) -> Error {
        Error::unavailable(format!(
            "the key store {} cannot be read, so no stored key is accepted: {err}",
            self.path.display()
        ))
    }

    /// The keys on disk: none when the file was never created.
    fn read(&self) -> Result<Vec<KeyRecord>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                self.seen.store(true, Ordering::SeqCst);
                serde_json::from_slice(&bytes)
                    .map_err(|e| Error::store("keys", format!("{}: {e}", self.path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.exists() => Ok(Vec::new()),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }

    /// Read-modify-write of the key list under the store's lock: `change`
    /// sees the keys as they are now and its result is written (each
    /// writer through its own temporary, synced, renamed, directory
    /// synced). Returns what `change` returned.
    fn modify<T>(&self, change: impl FnOnce(&mut Vec<KeyRecord>) -> Result<T>) -> Result<T> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        let mut keys = self.read()?;
        let result = change(&mut keys)?;
        self.write(&keys)?;
        Ok(result)
    }

    /// Replaces the file atomically, readable by its owner only.
    fn write(&self, keys: &[KeyRecord]) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let temp = dir.join(format!(
            "{KEYS_FILE}.tmp-{}-{}",
            std::process::id(),
            hex(&random_bytes::<4>()?)
        ));
        let json = serde_json::to_vec_pretty(keys)
            .map_err(|e| Error::store("keys", format!("serialize: {e}")))?;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut file| {
                file.write_all(&json)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&temp, &self.path))
            .and_then(|()| std::fs::File::open(dir)?.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(Error::io(&self.path, e));
        }
        self.seen.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Group names are plain words: letters, digits, `-`, `_`, `.`.
fn check_groups(names: &[String]) -> Result<()> {
    match names.iter().find(|name| !crate::types::is_group_name(name)) {
        Some(name) => Err(Error::InvalidRequest(format!(
            "group name '{name}' must be letters, digits, '-', '_' or '.' (at most 64)"
        ))),
        None => Ok(()),
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::InvalidRequest(format!("no randomness from the OS: {e}")))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_verifies_until_revoked_and_only_its_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path());
        assert!(store.is_empty().unwrap());
        let (key, secret) = store
            .create(
                "test",
                Role::Read,
                vec!["handbook".into()],
                vec!["sre".into()],
            )
            .unwrap();
        assert!(secret.starts_with(&format!("lore_{}_", key.id)));
        let on_disk = std::fs::read_to_string(dir.path().join(KEYS_FILE)).unwrap();
        assert!(!on_disk.contains(&secret), "the secret was stored");
        assert!(on_disk.contains("$argon2id$"), "{on_disk}");
        let principal = store.verify(&secret).unwrap().unwrap();
        assert_eq!(principal.role, Role::Read);
        assert!(principal.may_use("handbook") && !principal.may_use("hr"));
        // Remembered: the second check is answered without argon2.
        assert_eq!(store.verify(&secret).unwrap(), Some(principal));
        let mut wrong = secret.clone();
        wrong.pop();
        wrong.push('x');
        assert_eq!(store.verify(&wrong).unwrap(), None);
        assert_eq!(store.verify("lore_nokey_abc").unwrap(), None);
        assert_eq!(store.verify("").unwrap(), None);
        // Revoked in another process: the file changes, the key is gone.
        let other = KeyStore::open(dir.path());
        other.revoke("test", &key.id).unwrap();
        assert_eq!(store.verify(&secret).unwrap(), None);
        assert!(store.list().unwrap().is_empty());
        assert!(
            store.exists(),
            "the emptied store still says keys are required"
        );
    }

    #[test]
    fn a_wrong_secret_backs_its_key_id_off_and_a_missing_store_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path());
        let (key, secret) = store
            .create("test", Role::Read, vec!["*".into()], vec![])
            .unwrap();
        let guess = format!("lore_{}_{}", key.id, "0".repeat(48));
        assert_eq!(store.verify(&guess).unwrap(), None);
        // During the back-off even the right secret is not hashed yet ...
        assert_eq!(store.verify(&secret).unwrap(), None);
        std::thread::sleep(BACKOFF_FIRST * 2);
        // ... and afterwards it is, and then remembered.
        assert!(store.verify(&secret).unwrap().is_some());
        assert_eq!(store.verify(&guess).unwrap(), None);
        assert!(
            store.verify(&secret).unwrap().is_some(),
            "a known secret is not backed off"
        );
        // The file goes: every check fails, none lets a key in.
        std::fs::remove_file(dir.path().join(KEYS_FILE)).unwrap();
        assert!(matches!(store.verify(&secret), Err(Error::Unavailable(_))));
        assert!(store.exists(), "a store once seen stays required");
        // A fresh view of the same directory that never saw it: no keys.
        assert!(!KeyStore::open(dir.path()).exists());
    }

    #[test]
    fn names_are_plain_words() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path());
        assert!(
            store
                .create("test", Role::Admin, vec!["*".into()], vec![])
                .is_ok()
        );
        for bad in ["", "a b", "../x", "x\n"] {
            assert!(
                store
                    .create("test", Role::Read, vec![bad.into()], vec![])
                    .is_err(),
                "{bad:?}"
            );
        }
        assert!(store.create("test", Role::Read, vec![], vec![]).is_err());
        assert!(
            store
                .create("test", Role::Read, vec!["a".into()], vec!["*".into()])
                .is_err()
        );
    }
}
