//! PDF text extraction in a child process under hard limits. A PDF can
//! hold a stream that inflates to gigabytes or objects nested deep enough
//! to overflow a stack; both abort a process, and `catch_unwind` catches
//! neither. So the parser runs in a helper process (this same executable,
//! started with [`HELPER_ARG`]) with an address-space limit, a CPU limit
//! and a wall-clock deadline, and its output is capped: whatever the file
//! holds, the worst outcome is a skipped file with a reason.
//!
//! A program that wants the isolation calls [`init`] first thing in
//! `main` (the `lore` binary does), or names a `lore` binary with
//! [`use_helper`] or `LORE_EXTRACT_HELPER`. Without any of these (unit
//! tests, a library user who did none) extraction runs in-process with
//! panics caught only.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::Reason;
use super::SkipKind::{ExtractorFailed, Malformed, TooLarge};

/// First argument that makes this executable the extraction helper.
pub const HELPER_ARG: &str = "__lore-extract-pdf";
/// Address space the helper may map.
const MEMORY_LIMIT: u64 = 512 << 20;
/// CPU seconds the helper may use.
const CPU_LIMIT_S: u64 = 30;
/// Wall-clock seconds before the helper is killed.
const DEADLINE: Duration = Duration::from_secs(60);

static HELPER: OnceLock<PathBuf> = OnceLock::new();

/// Call first in `main`: when this process was started as the helper, it
/// extracts (stdin → stdout) and exits; otherwise it registers its own
/// executable as the helper for every later PDF.
pub fn init() {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(HELPER_ARG)) {
        std::process::exit(helper_main());
    }
    if let Ok(exe) = std::env::current_exe() {
        let _ = HELPER.set(exe);
    }
}

/// Uses the `lore` binary at `path` as the helper (for programs that
/// cannot call [`init`] in their own `main`, and for tests).
pub fn use_helper(path: PathBuf) {
    let _ = HELPER.set(path);
}

fn helper() -> Option<PathBuf> {
    HELPER
        .get()
        .cloned()
        .or_else(|| std::env::var_os("LORE_EXTRACT_HELPER").map(PathBuf::from))
}

/// The helper's side: PDF bytes on stdin, text on stdout, a reason on
/// stderr with exit code 2.
fn helper_main() -> i32 {
    // A parser panic becomes the reason below, not a message on stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("cannot read input: {e}");
        return 2;
    }
    match in_process(&bytes) {
        Ok(text) => match std::io::stdout().write_all(text.as_bytes()) {
            Ok(()) => 0,
            Err(_) => 2,
        },
        Err(reason) => {
            eprint!("{reason}");
            2
        }
    }
}

/// The text layer of a PDF, at most `max_bytes` of it, extracted under
/// limits (in the helper when there is one).
pub fn pdf_text(bytes: &[u8], max_bytes: usize) -> Result<String, Reason> {
    let text = match helper() {
        Some(helper) => in_child(&helper, bytes, max_bytes)?,
        None => in_process(bytes)?,
    };
    if text.len() > max_bytes {
        return Err(too_much(max_bytes));
    }
    Ok(text)
}

fn too_much(max_bytes: usize) -> Reason {
    Reason::new(
        TooLarge,
        format!("PDF text is over {max_bytes} bytes (ingest.max_file_bytes)"),
    )
}

/// pdf-extract panics on some malformed files: fenced, so any failure is
/// a reason. (An abort is not catchable: that is what the helper is for.)
fn in_process(bytes: &[u8]) -> Result<String, Reason> {
    let extracted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pdf_extract::extract_text_from_mem(bytes)
    }));
    match extracted {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(Reason::new(
            Malformed,
            format!("corrupt or unreadable PDF: {e}"),
        )),
        Err(_) => Err(Reason::new(
            Malformed,
            "corrupt PDF (the PDF parser gave up)",
        )),
    }
}

fn in_child(helper: &std::path::Path, bytes: &[u8], max_bytes: usize) -> Result<String, Reason> {
    let mut command = Command::new(helper);
    command
        .arg(HELPER_ARG)
        .env("RAYON_NUM_THREADS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    limit(&mut command);
    let mut child = command.spawn().map_err(|e| {
        Reason::new(
            ExtractorFailed,
            format!("cannot start the PDF extractor: {e}"),
        )
    })?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (text, reason, ran) = std::thread::scope(|scope| {
        scope.spawn(move || stdin.map(|mut s| s.write_all(bytes)));
        let text = scope.spawn(move || read_capped(stdout, max_bytes + 1));
        let reason = scope.spawn(move || read_capped(stderr, 4096));
        let ran = wait(&mut child);
        (
            text.join().unwrap_or_default(),
            reason.join().unwrap_or_default(),
            ran,
        )
    });
    match ran {
        Some(status) if status.success() => String::from_utf8(text)
            .map_err(|_| Reason::new(Malformed, "the PDF extractor wrote invalid UTF-8")),
        _ if text.len() > max_bytes => Err(too_much(max_bytes)),
        Some(status) if status.code() == Some(2) => {
            Err(Reason::new(Malformed, String::from_utf8_lossy(&reason)))
        }
        Some(_) => Err(Reason::new(
            ExtractorFailed,
            format!(
                "the PDF extractor failed within its limits ({} MiB of memory, {CPU_LIMIT_S} s \
                 of CPU): a decompression bomb, or too deeply nested",
                MEMORY_LIMIT >> 20
            ),
        )),
        None => Err(Reason::new(
            ExtractorFailed,
            format!(
                "the PDF extractor took longer than {} s",
                DEADLINE.as_secs()
            ),
        )),
    }
}

/// Waits for the child until the deadline; kills it past that (`None`).
fn wait(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if start.elapsed() < DEADLINE => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Reads at most `max` bytes; closing the pipe early makes a child that
/// writes more fail (it then exits, or is killed at the deadline).
fn read_capped(pipe: Option<impl Read>, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(pipe) = pipe {
        let _ = pipe.take(max as u64).read_to_end(&mut out);
    }
    out
}

/// Address space, CPU time and no core dumps for the child.
fn limit(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let set = |resource, value: u64| {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit is async-signal-safe and only touches the child.
        if unsafe { libc::setrlimit(resource, &limit) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: the closure only calls setrlimit, sigemptyset and
    // pthread_sigmask (async-signal-safe) between fork and exec, and
    // allocates nothing. The child gets an empty signal mask: a parent
    // that holds SIGINT/SIGTERM for `sigwait` (`lore ingest --watch`)
    // must not pass that on.
    unsafe {
        command.pre_exec(move || {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            set(libc::RLIMIT_AS, MEMORY_LIMIT)?;
            set(libc::RLIMIT_CPU, CPU_LIMIT_S)?;
            set(libc::RLIMIT_CORE, 0)
        });
    }
}
