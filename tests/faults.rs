//! Fault injection: a full disk at each write step. A small tmpfs holds a
//! copy of an index; a filler file leaves a few bytes free, and each
//! command that writes (ingest, import, key and collection changes, a
//! snapshot, and `status`, which opens the stores) runs against it. Then
//! space returns, and the index must open consistent, hold everything a
//! command acknowledged, and take the next ingest. The matrix of step ×
//! space left → outcome is printed.

use std::path::{Path, PathBuf};
use std::process::Command;

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
    assert!(!stderr.contains("panicked"), "a command panicked: {stderr}");
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
    let mut embed = lore(&tmp.path().join("scratch"));
    embed
        .arg("embed")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = embed.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", serde_json::json!({"path": "rows/fault.md", "text": "Imported fault row about grinder burrs."})).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    std::fs::write(&rows, &out.stdout).unwrap();

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
