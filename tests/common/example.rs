//! Runs the real example binaries, as a person would, for the tests that
//! drive them over HTTP.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

/// The built example `name`, next to this test binary:
/// `target/debug/deps/TEST-HASH` -> `target/debug/examples/NAME`.
pub fn example_binary(name: &str) -> PathBuf {
    let mut path = std::env::current_exe().expect("the test binary's path");
    path.pop();
    path.pop();
    path.push("examples");
    path.push(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let rebuild = format!("run `cargo build --example {name}` (`cargo test` builds it)");
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {rebuild}", path.display()));
    // `cargo test --test NAME` builds no examples: refuse to test a
    // binary older than its source, or than the shared modules it includes
    // (`#[path = "support/FILE"]`).
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let main = examples.join(format!("{name}.rs"));
    let text = std::fs::read_to_string(&main).unwrap_or_default();
    let shared = std::fs::read_dir(examples.join("support"))
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            let file = entry.file_name();
            text.contains(&format!("\"support/{}\"", file.to_string_lossy()))
        })
        .map(|entry| entry.path());
    for source in std::iter::once(main.clone()).chain(shared) {
        if let Ok(edited) = std::fs::metadata(&source).and_then(|m| m.modified()) {
            assert!(
                edited <= built,
                "{} is older than {}: {rebuild}",
                path.display(),
                source.display()
            );
        }
    }
    path
}

/// A process's resident memory, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the most resident since start (or the last
    /// [`ExampleServer::reset_peak_memory`]).
    pub peak_rss_kib: u64,
}

/// A running example server; killed when dropped.
pub struct ExampleServer {
    child: Child,
    /// `http://ADDR`.
    pub base: String,
    /// Everything the server has written to stderr so far, read by a
    /// thread as it comes (a full pipe would block the server's logging).
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Drop for ExampleServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ExampleServer {
    /// Starts example `name` on `127.0.0.1:0` with `JWT_SECRET` set to
    /// `secret` (unset for `None`) and `env` on top, stderr piped, and waits
    /// for its first stdout line, `listening on http://ADDR`.
    pub fn start(name: &str, secret: Option<&str>, env: &[(&str, &str)]) -> ExampleServer {
        let mut command = Command::new(example_binary(name));
        command
            .env("BIND_ADDR", "127.0.0.1:0")
            .env_remove("RUST_LOG")
            // Memory limits unless a test shares them on purpose.
            .env_remove("REDIS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match secret {
            Some(secret) => command.env("JWT_SECRET", secret),
            None => command.env_remove("JWT_SECRET"),
        };
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("the example starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        let stderr_reader = std::thread::spawn(move || {
            let mut chunk = [0; 4096];
            while let Ok(read @ 1..) = pipe.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..read]);
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut first = String::new();
            let _ = stdout.read_line(&mut first);
            let _ = tx.send(first);
            // Keep draining, so the example never writes into a closed pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        // Own the child before anything can panic, so it is always killed.
        let mut server = ExampleServer {
            child,
            base: String::new(),
            stderr,
            stderr_reader: Some(stderr_reader),
        };
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the example prints its address within 60 s");
        server.base = first
            .strip_suffix('\n')
            .and_then(|line| line.strip_prefix("listening on "))
            .unwrap_or_else(|| panic!("unexpected first stdout line {first:?}"))
            .to_owned();
        server
    }

    /// The server's process id (for `/proc/PID/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The server's memory now (Linux: `/proc/PID/status`).
    pub fn memory(&self) -> Memory {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
        let kib = |field: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.trim().strip_suffix("kB"))
                .and_then(|number| number.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {field} in {path}"))
        };
        Memory {
            rss_kib: kib("VmRSS:"),
            peak_rss_kib: kib("VmHWM:"),
        }
    }

    /// Starts measuring the peak (`VmHWM`) afresh from the current RSS
    /// (Linux: `echo 5 > /proc/PID/clear_refs`).
    pub fn reset_peak_memory(&self) {
        let path = format!("/proc/{}/clear_refs", self.child.id());
        std::fs::write(&path, "5").unwrap_or_else(|err| panic!("{path}: {err}"));
    }

    /// What the server has written to stderr so far (its log), for a test
    /// that waits for a line while the server runs.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8(self.stderr.lock().unwrap().clone()).expect("stderr is UTF-8")
    }

    /// Stops the server and returns everything it wrote to stderr.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The pipe closes with the process: the reader has read it all.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        self.stderr_so_far()
    }
}
