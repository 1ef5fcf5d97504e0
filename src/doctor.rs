//! `lore doctor`: checks what lore needs and says what to fix. The models
//! (present, and the pinned defaults byte for byte by SHA-256), the index
//! (its format, each collection's stores in agreement, its embedder), the
//! configuration (each value that differs from the default, and whether a
//! file, the environment or a flag set it), the CPU features the kernels
//! use, and what `lore serve` would do with its address and keys. It
//! downloads and creates nothing; opening the index does what every open
//! does (as `lore status` would): unfinished writes are replayed and an
//! unusable vector graph is rebuilt from the document store.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use sha2::Digest;

use crate::config::Config;
use crate::engine::Engine;
use crate::error::Error;

/// The models' files and their SHA-256, as `scripts/install-models.sh`
/// installs them (the last one with `--large`; a test keeps the two lists
/// the same).
pub const PINNED: &[(&str, &str)] = &[
    (
        "all-minilm-l6-v2/model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    (
        "all-minilm-l6-v2/tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    (
        "all-minilm-l6-v2/config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
    (
        "smollm2-135m-instruct-q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    (
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    (
        "gemma-3-270m-q4_k_m.gguf",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    (
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
];

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Fine.
    Ok,
    /// Works, but worth knowing.
    Note,
    /// Something lore needs is missing or wrong.
    Fail,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `models`, `index`, `config`, `cpu` or `server`.
    pub area: &'static str,
    /// What was checked.
    pub name: String,
    /// How it came out.
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// What to do about it, when something is to be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(area: &'static str, name: impl Into<String>, outcome: Outcome, detail: String) -> Check {
        Check {
            area,
            name: name.into(),
            outcome,
            detail,
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// Where each setting came from.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
    /// The settings before the environment (defaults and the file).
    pub before_env: Option<Config>,
    /// The settings before the command line's flags.
    pub before_flags: Option<Config>,
}

/// Every check, in the order they are printed.
pub fn examine(config: &Config, layers: &Layers) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.extend(models(config));
    checks.extend(index(config));
    checks.extend(settings(config, layers));
    checks.extend(cpu());
    checks.extend(server(config));
    checks
}

/// The configured embedder and generator, and every pinned default that is
/// installed.
fn models(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    let embedder = config.embedder_dir();
    for file in ["model.safetensors", "tokenizer.json", "config.json"] {
        checks.push(model_file(config, &embedder.join(file), "embedder"));
    }
    checks.push(model_file(config, &config.generator_path(), "generator"));
    // The other pinned defaults: checked when installed, noted when not.
    for (name, _) in PINNED {
        let path = config.models.join(name);
        let used = path == config.generator_path() || path.starts_with(&embedder);
        if !used && path.is_file() {
            checks.push(model_file(config, &path, "installed"));
        }
    }
    checks
}

fn model_file(config: &Config, path: &Path, role: &str) -> Check {
    let name = format!("{role} {}", path.display());
    let install = "make models (or bash scripts/install-models.sh; add --large for `large`)";
    if !path.is_file() {
        return Check::new("models", name, Outcome::Fail, "missing".into()).fix(install);
    }
    let pinned = PINNED
        .iter()
        .find(|(file, _)| config.models.join(file) == path);
    let Some((_, want)) = pinned else {
        return Check::new(
            "models",
            name,
            Outcome::Note,
            "your own model: present, no checksum pinned for it".into(),
        );
    };
    match sha256(path) {
        Ok(got) if got == *want => Check::new(
            "models",
            name,
            Outcome::Ok,
            "SHA-256 matches the pin".into(),
        ),
        Ok(got) => Check::new(
            "models",
            name,
            Outcome::Fail,
            format!("SHA-256 {got}, pinned {want}: damaged or replaced"),
        )
        .fix(format!("delete it and run {install}")),
        Err(err) => Check::new("models", name, Outcome::Fail, err.to_string()),
    }
}

fn sha256(path: &Path) -> crate::error::Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .fold(String::new(), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        }))
}

/// The index: opens, each collection's stores agree.
fn index(config: &Config) -> Vec<Check> {
    let name = format!("{}", config.index.display());
    let engine = match Engine::open_existing(config.clone()) {
        Ok(engine) => engine,
        Err(err @ Error::NoIndex { .. }) => {
            return vec![
                Check::new("index", name, Outcome::Note, err.to_string()).fix("lore ingest DIR"),
            ];
        }
        Err(err @ Error::IndexLocked { .. }) => {
            return vec![
                Check::new(
                    "index",
                    name,
                    Outcome::Note,
                    format!("{err}; it was not examined"),
                )
                .fix("stop that process to examine it, or run `lore status` (it asks the server)"),
            ];
        }
        Err(err) => {
            return vec![
                Check::new("index", name, Outcome::Fail, err.to_string())
                    .fix("restore a snapshot (lore snapshot) or re-ingest into a new --index"),
            ];
        }
    };
    let mut checks = vec![Check::new(
        "index",
        name,
        Outcome::Ok,
        format!(
            "opens (format version {}, which this lore {} reads)",
            crate::store::manifest::FORMAT_VERSION,
            env!("CARGO_PKG_VERSION")
        ),
    )];
    let collections = match engine.collection_names() {
        Ok(names) => names,
        Err(err) => {
            checks.push(Check::new(
                "index",
                "collections",
                Outcome::Fail,
                err.to_string(),
            ));
            return checks;
        }
    };
    for collection in collections {
        let name = format!("collection {collection}");
        checks.push(match engine.status(&collection) {
            Ok(status) if status.consistent => Check::new(
                "index",
                name,
                Outcome::Ok,
                format!(
                    "{} documents, {} chunks, {} vectors, embedder {}",
                    status.documents, status.chunks, status.vectors, status.embedder.id
                ),
            ),
            Ok(status) => Check::new(
                "index",
                name,
                Outcome::Fail,
                format!(
                    "the stores disagree: {} chunks, {} vectors, {} keyword documents",
                    status.chunks, status.vectors, status.keyword_docs
                ),
            )
            .fix(format!(
                "lore --collection {collection} ingest DIR (or re-create the collection)"
            )),
            Err(err) => Check::new("index", name, Outcome::Fail, err.to_string()),
        });
    }
    checks
}

/// Each setting that differs from the default, with the layer that set it.
fn settings(config: &Config, layers: &Layers) -> Vec<Check> {
    let flat = |c: &Config| flatten(&serde_json::to_value(c).unwrap_or(Value::Null));
    let defaults = flat(&Config::default());
    let before_env = layers.before_env.as_ref().map(flat);
    let before_flags = layers.before_flags.as_ref().map(flat);
    let file = layers
        .file
        .as_ref()
        .map_or_else(|| "the file".to_string(), |f| f.display().to_string());
    let mut checks = vec![Check::new(
        "config",
        "file",
        Outcome::Ok,
        layers.file.as_ref().map_or_else(
            || "none (./lore.toml is absent and --config was not given)".into(),
            |f| format!("{} read", f.display()),
        ),
    )];
    for (key, value) in flat(config) {
        let default = defaults.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
        if default == Some(&value) || key.contains("api_keys") {
            continue;
        }
        let differs = |layer: &Option<Vec<(String, String)>>| {
            layer.as_ref().is_some_and(|l| {
                l.iter()
                    .find(|(k, _)| *k == key)
                    .is_none_or(|(_, v)| *v != value)
            })
        };
        let source = if differs(&before_flags) {
            "a flag".to_string()
        } else if differs(&before_env) {
            "the environment".to_string()
        } else {
            file.clone()
        };
        checks.push(Check::new(
            "config",
            key,
            Outcome::Ok,
            format!("{value} (from {source})"),
        ));
    }
    checks.push(Check::new(
        "config",
        "api keys",
        Outcome::Ok,
        format!(
            "{} configured (values not shown)",
            config.server.api_keys.len()
        ),
    ));
    checks
}

/// `value`'s leaves as dotted keys and their JSON text.
fn flatten(value: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, inner, out);
                }
            }
            leaf => out.push((prefix.to_string(), leaf.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("", value, &mut out);
    out
}

/// The CPU features this build and its kernels use.
fn cpu() -> Vec<Check> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut checks = vec![Check::new("cpu", "cores", Outcome::Ok, cores.to_string())];
    #[cfg(target_arch = "x86_64")]
    {
        let has = |needed: bool, name: &str, why: &str| {
            if needed {
                Check::new("cpu", name, Outcome::Ok, why.into())
            } else {
                Check::new("cpu", name, Outcome::Note, format!("absent: {why}"))
            }
        };
        let base = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        checks.push(if base {
            has(true, "avx2+fma", "the x86-64-v3 build's kernels (candle, embedding, decoding)")
        } else {
            Check::new(
                "cpu",
                "avx2+fma",
                Outcome::Fail,
                "absent, but this build was compiled for x86-64-v3 and may stop on an illegal instruction".into(),
            )
            .fix("rebuild with RUSTFLAGS=\"-C target-cpu=native\" cargo build --release")
        });
        checks.push(has(
            std::arch::is_x86_feature_detected!("avx512f"),
            "avx512f",
            "16-lane GELU, softmax and layer norm, and the AVX-512 GEMM",
        ));
        checks.push(has(
            std::arch::is_x86_feature_detected!("avx512vnni"),
            "avx512vnni",
            "not used yet (int8 dot products)",
        ));
    }
    checks
}

/// What `lore serve` would do with the configured address and keys.
fn server(config: &Config) -> Vec<Check> {
    let addr = &config.server.addr;
    let loopback = config.server.is_loopback();
    let store = crate::keys::KeyStore::open(&config.index);
    let stored = match store.list() {
        Ok(keys) => Ok(keys.len()),
        Err(err) => Err(err),
    };
    let configured = config.server.api_keys.len();
    let mut checks = Vec::new();
    match (&stored, loopback) {
        (Err(err), _) => checks.push(
            Check::new(
                "server",
                "key store",
                Outcome::Fail,
                format!("{err}: lore serve refuses to start rather than serve without its keys"),
            )
            .fix("restore keys.json from a snapshot, or move it away and create keys again"),
        ),
        (Ok(0), Ok(false)) if configured == 0 => checks.push(
            Check::new(
                "server",
                addr.clone(),
                Outcome::Fail,
                "not a loopback address and no API keys: lore serve refuses to start".into(),
            )
            .fix("lore key create --role read (or LORE_API_KEYS), or bind 127.0.0.1"),
        ),
        (Ok(stored), Ok(loopback)) => checks.push(Check::new(
            "server",
            addr.clone(),
            Outcome::Ok,
            format!(
                "{}; {stored} stored and {configured} configured keys{}",
                if loopback {
                    "loopback only"
                } else {
                    "reachable from other machines"
                },
                if *stored + configured == 0 {
                    " (every local client may read and write)"
                } else {
                    " (every route needs one)"
                }
            ),
        )),
        (Ok(_), Err(err)) => checks.push(
            Check::new("server", addr.clone(), Outcome::Fail, err.to_string())
                .fix("set server.addr (or --addr) to HOST:PORT"),
        ),
    }
    checks
}

/// The checks as text, one line each, then a summary.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    let mut area = "";
    for check in checks {
        if check.area != area {
            area = check.area;
            let _ = writeln!(out, "{area}");
        }
        let mark = match check.outcome {
            Outcome::Ok => "ok  ",
            Outcome::Note => "note",
            Outcome::Fail => "FAIL",
        };
        let _ = writeln!(out, "  {mark} {}: {}", check.name, check.detail);
        if let Some(fix) = &check.fix {
            let _ = writeln!(out, "       fix: {fix}");
        }
    }
    let failed = checks.iter().filter(|c| c.outcome == Outcome::Fail).count();
    let _ = writeln!(
        out,
        "{}",
        if failed == 0 {
            "nothing to fix".to_string()
        } else {
            format!("{failed} to fix")
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pins_are_those_the_installer_checks() {
        let script = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-models.sh"),
        )
        .unwrap();
        for (file, sha) in PINNED {
            assert!(
                script.contains(sha),
                "{file}: {sha} is not in install-models.sh"
            );
        }
    }

    #[test]
    fn settings_name_the_layer_that_set_them() {
        let defaults = Config::default();
        let mut from_file = defaults.clone();
        from_file.search.depth_factor = 7;
        let mut from_env = from_file.clone();
        from_env.threads = Some(3);
        let mut from_flags = from_env.clone();
        from_flags.collection = "oncall".into();
        let layers = Layers {
            file: Some(PathBuf::from("lore.toml")),
            before_env: Some(from_file),
            before_flags: Some(from_env),
        };
        let checks = settings(&from_flags, &layers);
        let find = |key: &str| {
            checks
                .iter()
                .find(|c| c.name == key)
                .unwrap()
                .detail
                .clone()
        };
        assert_eq!(find("search.depth_factor"), "7 (from lore.toml)");
        assert_eq!(find("threads"), "3 (from the environment)");
        assert_eq!(find("collection"), "\"oncall\" (from a flag)");
        assert!(
            checks.iter().all(|c| c.name != "hnsw.m"),
            "defaults are not listed"
        );
    }

    #[test]
    fn an_unreadable_key_store_or_an_open_address_without_keys_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            index: dir.path().to_path_buf(),
            ..Config::default()
        };
        assert_eq!(server(&config)[0].outcome, Outcome::Ok, "loopback, no keys");
        config.server.addr = "0.0.0.0:8080".into();
        assert_eq!(server(&config)[0].outcome, Outcome::Fail, "open, no keys");
        std::fs::write(dir.path().join("keys.json"), b"{ not json").unwrap();
        let checks = server(&config);
        assert_eq!(checks[0].outcome, Outcome::Fail, "{checks:?}");
        assert!(checks[0].fix.is_some());
    }

    #[test]
    fn a_missing_model_is_a_failure_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            models: dir.path().to_path_buf(),
            ..Config::default()
        };
        let checks = models(&config);
        assert!(
            checks
                .iter()
                .all(|c| c.outcome == Outcome::Fail && c.fix.is_some())
        );
        std::fs::write(dir.path().join(PINNED[3].0), b"not the model").unwrap();
        let damaged = model_file(&config, &dir.path().join(PINNED[3].0), "generator");
        assert_eq!(damaged.outcome, Outcome::Fail);
        assert!(damaged.detail.contains("damaged"), "{}", damaged.detail);
    }
}
