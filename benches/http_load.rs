//! An HTTP load test of the real `password_flow` example: requests per
//! second of `GET /health` (no token) and `GET /status` (bearer token:
//! credentials, verified-token cache, user lookup, `Authenticated<User>`),
//! in alternating rounds in one run, and their ratio. Both routes answer
//! the same `{"status":"ok"}` through the same optional `AuthLayer`: they
//! differ by the token alone.
//!
//! ```text
//! cargo build --release --example password_flow
//! cargo bench --bench http_load
//! ```
//!
//! The example binary must be built first (`cargo bench` holds the build
//! directory, so the bench cannot build it itself); the bench refuses one
//! older than its sources.
//!
//! The server gets one tokio worker (`TOKIO_WORKER_THREADS=1`) and, when
//! `taskset` is installed, CPU 0; the client is one thread of `hyper`
//! HTTP/1.1 keep-alive connections on loopback. Settings (environment):
//!
//! - `HTTP_LOAD_REQUESTS`: requests per route per round (default 20000)
//! - `HTTP_LOAD_ROUNDS`: rounds, each `/health` then `/status` (default 5)
//! - `HTTP_LOAD_CONCURRENCY`: connections, one request in flight on each
//!   (default 16)
//! - `HTTP_LOAD_ALG`: `HS256` (default), `RS256`, `ES256` or `EdDSA`; the
//!   asymmetric ones sign with the keys in `tests/keys`.
//! - `HTTP_LOAD_FLOODERS`: connections that log in without pause during the
//!   last phase (default 4), which compares the median latency of
//!   `GET /status` alone and during that login flood: argon2 runs off the
//!   async worker, so authenticated requests should barely notice. The
//!   flood's logins succeed: the login throttle counts failures only, so it
//!   lets them through (a flood of wrong passwords would get 429 after five,
//!   without argon2). It counts logins in flight against the failure budget,
//!   though: one address may have at most 5 logins of one user in flight,
//!   so with more than 5 flooders the excess is answered 429 and only the
//!   successful logins are counted. johndoe's tutorial hash is rehashed
//!   with the current parameters by the bench's first login, so the flood
//!   runs argon2 with the current parameters (m = 19456 KiB, t = 2).
//!
//! Under `cargo test` (no `--bench` argument) it does nothing.
//!
//! With [wrk](https://github.com/wg/wrk) installed, the same measurement:
//!
//! ```text
//! TOKIO_WORKER_THREADS=1 JWT_SECRET=0123456789abcdef0123456789abcdef \
//!   BIND_ADDR=127.0.0.1:3000 RUST_LOG=warn taskset -c 0 target/release/examples/password_flow &
//! TOKEN=$(curl -s -d 'username=johndoe&password=secret' http://127.0.0.1:3000/token \
//!   | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
//! taskset -c 1 wrk -t1 -c16 -d10s http://127.0.0.1:3000/health
//! taskset -c 1 wrk -t1 -c16 -d10s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/status
//! ```
//!
//! (run the two `wrk` lines alternately a few times; the ratio is
//! `/status` req/s ÷ `/health` req/s).
//!
//! The client shares the machine: pin it to the other core
//! (`taskset -c 1 cargo bench --bench http_load`), or its scheduling shows up
//! as noise in req/s. The server's CPU time per request (read from
//! `/proc/PID/stat`) is printed too: on a 2-core machine it is the steadier
//! figure, as it does not depend on how fast the client keeps up.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Instant, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::task::JoinSet;

const SECRET: &str = "an http_load secret of more than thirty-two bytes";

type Sender = SendRequest<Full<Bytes>>;

fn setting(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

/// `target/release/deps/http_load-HASH` -> `target/release/examples/password_flow`.
fn example_binary() -> PathBuf {
    let mut path = std::env::current_exe().expect("the bench's own path");
    path.pop();
    path.pop();
    path.push("examples");
    path.push(format!("password_flow{}", std::env::consts::EXE_SUFFIX));
    path
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest of the example's and the library's sources.
fn newest_source() -> Option<SystemTime> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut newest = modified(&root.join("examples/password_flow.rs"));
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                newest = newest.max(modified(&path));
            }
        }
    }
    newest
}

/// The server's CPU time so far (user + system), from `/proc/PID/stat`, in
/// microseconds; `None` off Linux.
fn server_cpu_micros(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 1e6 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The running example; killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(alg: &str) -> (Server, String, bool) {
    let binary = example_binary();
    let build = "run `cargo build --release --example password_flow` first";
    let built =
        modified(&binary).unwrap_or_else(|| panic!("{} is missing: {build}", binary.display()));
    if newest_source().is_some_and(|source| source > built) {
        panic!("{} is older than its sources: {build}", binary.display());
    }
    let pinned = Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut command = if pinned {
        let mut command = Command::new("taskset");
        command.arg("-c").arg("0").arg(&binary);
        command
    } else {
        Command::new(&binary)
    };
    command
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("TOKIO_WORKER_THREADS", "1")
        .env("RUST_LOG", "warn")
        .env("JWT_SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if alg != "HS256" {
        let stem = match alg {
            "RS256" => "rsa",
            "ES256" => "ec256",
            "EdDSA" => "ed25519",
            other => panic!("HTTP_LOAD_ALG={other}: use HS256, RS256, ES256 or EdDSA"),
        };
        let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
        command
            .env("JWT_ALG", alg)
            .env("JWT_PRIVATE_KEY", keys.join(format!("{stem}_private.pem")))
            .env("JWT_PUBLIC_KEY", keys.join(format!("{stem}_public.pem")));
    }
    let mut child = command.spawn().expect("password_flow starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server(child);
    let mut stdout = BufReader::new(stdout);
    let mut first = String::new();
    stdout.read_line(&mut first).expect("password_flow prints");
    // Keep draining, so the server never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr = first
        .trim_end()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    (server, addr, pinned)
}

async fn connect(addr: &str) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    sender
}

fn request(path: &str, token: Option<&str>, body: Option<&'static str>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().uri(path).header("host", "127.0.0.1");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    match body {
        Some(form) => builder
            .method("POST")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(form.as_bytes()))),
        None => builder.body(Full::new(Bytes::new())),
    }
    .expect("a valid request")
}

async fn login(addr: &str) -> String {
    let mut sender = connect(addr).await;
    let response = sender
        .send_request(request(
            "/token",
            None,
            Some("username=johndoe&password=secret"),
        ))
        .await
        .expect("login");
    assert_eq!(response.status(), 200, "login refused");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    json["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

/// What one round measured.
struct Round {
    requests_per_second: f64,
    /// Server CPU time per request, in microseconds (Linux only).
    server_cpu_micros: Option<f64>,
}

/// `total` requests to `path` over `senders` (one in flight on each);
/// returns what it measured, and the senders for the next round.
async fn round(
    server_pid: u32,
    senders: Vec<Sender>,
    path: &'static str,
    token: Option<&str>,
    total: usize,
) -> (Round, Vec<Sender>) {
    let per_connection = total / senders.len();
    // The requests are built before the clock starts.
    let template = request(path, token, None);
    let cpu_before = server_cpu_micros(server_pid);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for mut sender in senders {
        let headers = template.headers().clone();
        tasks.spawn(async move {
            for _ in 0..per_connection {
                let mut request = Request::get(path)
                    .body(Full::new(Bytes::new()))
                    .expect("a valid request");
                *request.headers_mut() = headers.clone();
                sender.ready().await.expect("connection open");
                let response = sender.send_request(request).await.expect("response");
                assert_eq!(response.status(), 200, "GET {path}");
                response.into_body().collect().await.expect("body");
            }
            sender
        });
    }
    let senders = tasks.join_all().await;
    let elapsed = start.elapsed().as_secs_f64();
    let sent = (per_connection * senders.len()) as f64;
    let cpu = server_cpu_micros(server_pid)
        .zip(cpu_before)
        .map(|(after, before)| (after - before) / sent);
    let measured = Round {
        requests_per_second: sent / elapsed,
        server_cpu_micros: cpu,
    };
    (measured, senders)
}

/// The median latency of `count` authenticated requests sent one after the
/// other on one connection, in microseconds.
async fn median_latency(addr: &str, token: &str, count: usize) -> f64 {
    let mut sender = connect(addr).await;
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let request = request("/status", Some(token), None);
        let start = Instant::now();
        sender.ready().await.expect("connection open");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200, "GET /status");
        response.into_body().collect().await.expect("body");
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    median(&mut latencies)
}

/// `/status` latency alone, then while `flooders` connections log in
/// without pause (argon2 on every login): the road must stay responsive.
async fn login_flood(addr: &str, token: &str, flooders: usize) {
    const SAMPLES: usize = 2_000;
    let quiet = median_latency(addr, token, SAMPLES).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = JoinSet::new();
    for _ in 0..flooders {
        let (addr, stop) = (addr.to_owned(), stop.clone());
        flood.spawn(async move {
            let mut sender = connect(&addr).await;
            let mut logins = 0_u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let form = Some("username=johndoe&password=secret");
                sender.ready().await.expect("connection open");
                let response = sender
                    .send_request(request("/token", None, form))
                    .await
                    .expect("login");
                let ok = response.status() == 200;
                response.into_body().collect().await.expect("body");
                logins += u64::from(ok);
            }
            logins
        });
    }
    let start = Instant::now();
    let flooded = median_latency(addr, token, SAMPLES).await;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let logins: u64 = flood.join_all().await.into_iter().sum();
    println!(
        "  login flood ({flooders} connections, {:.0} logins/s): median GET /status latency \
         {quiet:.0} µs alone vs {flooded:.0} µs during the flood (x{:.2})",
        logins as f64 / elapsed,
        flooded / quiet
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("http_load: skipped (run it with `cargo bench --bench http_load`)");
        return;
    }
    let requests = setting("HTTP_LOAD_REQUESTS", 20_000);
    let rounds = setting("HTTP_LOAD_ROUNDS", 5).max(1);
    let concurrency = setting("HTTP_LOAD_CONCURRENCY", 16).max(1);
    let alg = std::env::var("HTTP_LOAD_ALG").unwrap_or_else(|_| "HS256".into());
    let (server, addr, pinned) = start_server(&alg);
    let pid = server.0.id();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let token = login(&addr).await;
        let mut senders = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            senders.push(connect(&addr).await);
        }
        println!(
            "http_load: password_flow ({alg}), 1 server worker{}, {concurrency} connections, \
             {rounds} rounds x {requests} requests per route",
            if pinned { " pinned to CPU 0" } else { "" }
        );
        // Warm-up, not counted.
        (_, senders) = round(pid, senders, "/health", None, requests / 4).await;
        (_, senders) = round(pid, senders, "/status", Some(&token), requests / 4).await;

        let (mut ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
        for i in 1..=rounds {
            let (health, status);
            (health, senders) = round(pid, senders, "/health", None, requests).await;
            (status, senders) = round(pid, senders, "/status", Some(&token), requests).await;
            let ratio = status.requests_per_second / health.requests_per_second;
            print!(
                "  round {i}: GET /health {:>8.0} req/s   GET /status {:>8.0} req/s   ratio x{ratio:.2}",
                health.requests_per_second, status.requests_per_second
            );
            if let (Some(h), Some(s)) = (health.server_cpu_micros, status.server_cpu_micros) {
                print!("   server CPU/request {h:.1} µs vs {s:.1} µs (x{:.2})", h / s);
                cpu_ratios.push(h / s);
            }
            println!();
            ratios.push(ratio);
        }
        println!(
            "  median throughput ratio /status vs /health: x{:.2}",
            median(&mut ratios)
        );
        if !cpu_ratios.is_empty() {
            println!(
                "  median server-CPU ratio (CPU per /health request / CPU per /status request): x{:.2}",
                median(&mut cpu_ratios)
            );
        }
        drop(senders);
        login_flood(&addr, &token, setting("HTTP_LOAD_FLOODERS", 4)).await;
    });
}
