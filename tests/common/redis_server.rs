//! Redis for the tests: the one at `REDIS_URL` (default
//! `redis://127.0.0.1:6379`), and private `redis-server` processes for
//! tests that restart Redis.
//!
//! Under `CI=true` a test that needs Redis fails when it is unreachable
//! (saying so); elsewhere it skips with a printed notice.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Redis tests talk to.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// `Some(url)` when Redis answers a PING; `None` (after printing why) when
/// it does not and `CI` is not `true`; a panic when it does not under CI.
pub async fn redis_or_skip(test: &str) -> Option<String> {
    let url = redis_url();
    match ping(&url).await {
        Ok(()) => Some(url),
        Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: Redis at {url} is unreachable under CI=true: {error}")
        }
        Err(error) => {
            eprintln!("SKIPPED {test}: Redis at {url} is unreachable ({error}); set REDIS_URL");
            None
        }
    }
}

async fn ping(url: &str) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(url)?;
    let mut connection = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| redis::RedisError::from(std::io::Error::other("connect timed out")))??;
    redis::cmd("PING")
        .query_async::<String>(&mut connection)
        .await?;
    Ok(())
}

/// A unique key prefix, so that tests sharing one Redis never see each
/// other's keys.
pub fn unique_prefix(test: &str) -> String {
    format!("test-{test}-{}", uuid::Uuid::new_v4().simple())
}

/// A `redis-server` of the test's own on a free port, with no persistence:
/// killed on drop, restartable on the same port.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one; `None` (with a notice, or a panic under CI) when
    /// `redis-server` is not installed.
    pub async fn start(test: &str) -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = RedisServer { port, child: None };
        match server.spawn() {
            Ok(()) => {}
            Err(error) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("{test}: cannot start redis-server under CI=true: {error}")
            }
            Err(error) => {
                eprintln!("SKIPPED {test}: cannot start redis-server ({error})");
                return None;
            }
        }
        server.wait_ready().await;
        Some(server)
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (every key is lost: it keeps nothing on disk).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().expect("redis-server restarts");
        self.wait_ready().await;
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&self) {
        let url = self.url();
        for _ in 0..100 {
            if ping(&url).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not answer", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
