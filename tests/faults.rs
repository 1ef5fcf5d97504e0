//! Fault injection at each write step (ingest, import, remove, key and
//! collection changes, a snapshot, and `status`, which opens the stores).
//! A full disk: a small tmpfs holds a copy of an index and a filler file
//! leaves a few bytes free. A kill -9: each command is killed at points
//! spread over its own uninterrupted run time, so every phase is hit on a
//! fast or a slow machine alike. After each fault the index must open
//! consistent, hold everything a command acknowledged, and take the next
//! command. Each test prints its matrix of step × fault → outcome.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{copy_dir, ingested, json, lore};

/// A tmpfs mounted for one test, unmounted when dropped.
struct Disk {
    path: PathBuf,
}

impl Disk {
    fn mount(path: &Path, megabytes: u64) -> Disk {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(path)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "the fault-injection suite mounts a small tmpfs (it needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Disk {
            path: path.to_path_buf(),
        }
    }

    fn free_bytes(&self) -> u64 {
        let c = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs fills plain data for a valid C string.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut stat) }, 0);
        stat.f_bavail * stat.f_frsize
    }

    /// Fills the disk until `leave` bytes are free.
    fn fill(&self, leave: u64) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.filler()).unwrap();
        let block = vec![0u8; 1 << 16];
        loop {
            let free = self.free_bytes();
            if free <= leave {
                break;
            }
            let n = ((free - leave) as usize).min(block.len());
            if file.write_all(&block[..n]).is_err() {
                break;
            }
        }
        let _ = file.sync_all();
    }

    fn make_room(&self) {
        let _ = std::fs::remove_file(self.filler());
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// What one command did: exit code, or the signal that ended it.
fn outcome(cmd: &mut Command) -> (String, bool) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A Rust panic prints "thread '…' panicked at file:line"; tantivy's
    // own error for a writer thread that hit the full disk says
    // "encountered an error … or panicked", which is an error, not a panic.
    assert!(
        !stderr.contains("panicked at"),
        "a command panicked: {stderr}"
    );
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {stderr}"));
    (format!("exit {code}"), code == 0)
}

#[test]
fn a_full_disk_at_any_write_step_loses_nothing_acknowledged() {
    let (tmp, base) = ingested("corpora/tiny");
    let base_docs = crate::util::status(&base)["documents"].as_u64().unwrap();
    let extra = tmp.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    for i in 0..3 {
        let text =
            format!("Fault note {i}: the spare grinder burrs are in drawer {i}.\n").repeat(40);
        std::fs::write(extra.join(format!("note{i}.md")), text).unwrap();
    }
    let more = tmp.path().join("more");
    std::fs::create_dir_all(&more).unwrap();
    std::fs::write(
        more.join("after.md"),
        "After the fault: the descaler is under the sink.\n",
    )
    .unwrap();
    // Import rows made once, outside the small disk.
    let rows = tmp.path().join("rows.jsonl");
    let row = serde_json::json!({"path": "rows/fault.md", "text": "Imported fault row about grinder burrs."});
    embed_rows(&tmp.path().join("scratch"), &[row], &rows);

    let disk = Disk::mount(&tmp.path().join("disk"), 160);
    let index = disk.path.join("index");
    let snapshot = disk.path.join("snap");
    type Step<'a> = (&'a str, Box<dyn Fn() -> Command + 'a>);
    let steps: Vec<Step> = vec![
        (
            "ingest",
            Box::new(|| {
                let mut c = lore(&index);
                c.arg("ingest").arg(&extra);
                c
            }),
        ),
        (
            "import",
            Box::new(|| {
                let mut c = lore(&index);
                c.arg("import").arg(&rows);
                c
            }),
        ),
        (
            "key create",
            Box::new(|| {
                let mut c = lore(&index);
                c.args(["key", "create", "--role", "read", "--json"]);
                c
            }),
        ),
        (
            "collection create",
            Box::new(|| {
                let mut c = lore(&index);
                c.args(["collection", "create", "extra"]);
                c
            }),
        ),
        (
            "snapshot",
            Box::new(|| {
                let mut c = lore(&index);
                c.arg("snapshot").arg(&snapshot);
                c
            }),
        ),
        (
            "status",
            Box::new(|| {
                let mut c = lore(&index);
                c.args(["status", "--json"]);
                c
            }),
        ),
    ];
    let mut matrix = Vec::new();
    for (name, step) in &steps {
        for leave in [0u64, 16 << 10, 256 << 10] {
            let _ = std::fs::remove_dir_all(&index);
            let _ = std::fs::remove_dir_all(&snapshot);
            copy_dir(&base, &index);
            disk.fill(leave);
            let (during, acknowledged) = outcome(&mut step());
            // A read on the still-full disk must fail cleanly if it fails.
            let (status_full, _) = outcome(lore(&index).args(["status", "--json"]));
            disk.make_room();
            let status = json(lore(&index).args(["status", "--json"]));
            assert_eq!(
                status["consistent"], true,
                "{name} with {leave} bytes left: {status}"
            );
            let docs = status["documents"].as_u64().unwrap();
            let want = match *name {
                "ingest" if acknowledged => base_docs + 3,
                "import" if acknowledged => base_docs + 1,
                _ => base_docs,
            };
            assert!(
                docs >= want,
                "{name} with {leave} bytes left acknowledged a write that is gone: {docs} < {want}"
            );
            if *name == "key create" && acknowledged {
                let keys = json(lore(&index).args(["key", "list", "--json"]));
                assert_eq!(
                    keys.as_array().unwrap().len(),
                    1,
                    "an acknowledged key is lost"
                );
            }
            if *name == "snapshot" && acknowledged {
                let copy = json(lore(&snapshot).args(["status", "--json"]));
                assert_eq!(copy["consistent"], true);
            }
            // And the next command works.
            json(lore(&index).args(["ingest", "--json"]).arg(&more));
            let next = json(lore(&index).args(["status", "--json"]));
            assert_eq!(next["consistent"], true, "{next}");
            matrix.push(format!(
                "{name:>17} | {leave:>6} B left | {during:>7} | status on full disk: {status_full:>7} | after: consistent, {docs} docs, next ingest ok"
            ));
        }
    }
    drop(disk);
    println!(
        "fault matrix (step | space left | outcome):\n{}",
        matrix.join("\n")
    );
}

/// Import rows for the Markdown files under `docs`.
fn embedded_rows(scratch: &Path, docs: &Path, rows: &Path) {
    fn markdown(dir: &Path, into: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                markdown(&path, into);
            } else if path.extension().is_some_and(|e| e == "md") {
                into.push(path);
            }
        }
    }
    let mut files = Vec::new();
    markdown(docs, &mut files);
    let documents: Vec<serde_json::Value> = files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let name = path.strip_prefix(docs).unwrap().to_string_lossy();
            serde_json::json!({"path": format!("rows/{name}"), "text": text})
        })
        .collect();
    embed_rows(scratch, &documents, rows);
}

/// Import rows for `documents` (`{path, text}`), made by `lore embed`
/// outside any index, written to `rows`.
fn embed_rows(scratch: &Path, documents: &[serde_json::Value], rows: &Path) {
    use std::io::Write;
    let mut embed = lore(scratch);
    embed
        .arg("embed")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = embed.spawn().unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for document in documents {
            writeln!(stdin, "{document}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(rows, &out.stdout).unwrap();
}

/// Runs `cmd`, killing it with SIGKILL after `after` unless it ended
/// first; true when it ended by itself with success (acknowledged).
fn run_killed(cmd: &mut Command, after: Duration) -> (String, bool) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return (
                format!("exit {}", status.code().unwrap_or(-1)),
                status.success(),
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    ("killed".into(), false)
}

#[test]
fn kill_9_at_any_write_step_loses_nothing_acknowledged() {
    let (tmp, base) = ingested("corpora/tiny");
    let base_docs = crate::util::status(&base)["documents"].as_u64().unwrap();
    let handbook = crate::util::root().join("corpora/handbook/docs");
    let rows = tmp.path().join("rows.jsonl");
    embedded_rows(&tmp.path().join("scratch"), &handbook, &rows);
    let tiny = crate::util::root().join("corpora/tiny");
    let index = tmp.path().join("killed");
    let snapshot = tmp.path().join("snap");
    // Checkpoints every few chunks, so kills land between them too.
    let config = tmp.path().join("small-checkpoints.toml");
    std::fs::write(
        &config,
        "[ingest]\ncheckpoint_chunks = 24\n[hnsw]\nmerge_min = 10\n",
    )
    .unwrap();
    let command = |args: &[&str], path: Option<&Path>| {
        let mut c = lore(&index);
        c.arg("--config").arg(&config).args(args).args(path);
        c
    };
    type Step<'a> = (&'a str, Box<dyn Fn() -> Command + 'a>);
    let steps: Vec<Step> = vec![
        ("ingest", Box::new(|| command(&["ingest"], Some(&handbook)))),
        ("import", Box::new(|| command(&["import"], Some(&rows)))),
        ("remove", Box::new(|| command(&["remove"], Some(&tiny)))),
        (
            "key create",
            Box::new(|| command(&["key", "create", "--role", "read"], None)),
        ),
        (
            "collection create",
            Box::new(|| command(&["collection", "create", "extra"], None)),
        ),
        (
            "snapshot",
            Box::new(|| command(&["snapshot"], Some(&snapshot))),
        ),
    ];
    let fresh = || {
        let _ = std::fs::remove_dir_all(&index);
        let _ = std::fs::remove_dir_all(&snapshot);
        copy_dir(&base, &index);
    };
    let mut matrix = Vec::new();
    for (name, step) in &steps {
        // The uninterrupted run: how long it takes and what it leaves.
        fresh();
        let start = Instant::now();
        let (whole, ok) = outcome(&mut step());
        assert!(ok, "{name} fails uninterrupted: {whole}");
        let took = start.elapsed();
        let done_docs = crate::util::status(&index)["documents"].as_u64().unwrap();
        // Denser towards the end, where the commits are.
        for percent in [10u32, 30, 50, 70, 80, 90, 95, 98] {
            fresh();
            let (during, acknowledged) = run_killed(&mut step(), took * percent / 100);
            let status = json(lore(&index).args(["status", "--json"]));
            let cell = format!("{name} ({during} at {percent}%)");
            assert_eq!(status["consistent"], true, "{cell}: {status}");
            let docs = status["documents"].as_u64().unwrap();
            let (low, high) = if acknowledged {
                (done_docs, done_docs)
            } else {
                (base_docs.min(done_docs), base_docs.max(done_docs))
            };
            assert!(
                (low..=high).contains(&docs),
                "{cell}: {docs} documents, not in {low}..={high}"
            );
            let keys = json(lore(&index).args(["key", "list", "--json"]));
            let keys = keys.as_array().unwrap().len();
            if *name == "key create" && acknowledged {
                assert_eq!(keys, 1, "{cell}: an acknowledged key is lost");
            }
            let copied = snapshot.exists();
            if copied {
                let copy = json(lore(&snapshot).args(["status", "--json"]));
                assert_eq!(copy["consistent"], true, "{cell}: a torn snapshot");
            }
            // The same command again, to the end: it may refuse only when
            // the killed run got as far as its effect (what it would create
            // exists, what it would remove is gone).
            let (again, ok) = outcome(&mut step());
            let done = match *name {
                "remove" => docs == done_docs,
                "snapshot" => copied,
                _ => name.ends_with("create"),
            };
            assert!(ok || done, "{cell}, then again: {again}");
            let after = crate::util::status(&index);
            assert_eq!(after["consistent"], true, "{cell}, then again: {after}");
            assert_eq!(
                after["documents"].as_u64().unwrap(),
                done_docs,
                "{cell}: {after}"
            );
            matrix.push(format!(
                "{name:>17} | kill at {percent:>2}% of {:>5} ms | {during:>7} | then: consistent, \
                 {docs} docs, {keys} keys | again: {again}",
                took.as_millis()
            ));
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "abandoned snapshot copies: {leftovers:?}"
    );
    println!(
        "kill -9 matrix (step | kill point | outcome):\n{}",
        matrix.join("\n")
    );
}
