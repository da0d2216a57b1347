//! [`RedisStore`]: the state an app's instances share, on one Redis
//! (feature `redis`). Every instance of an app connects to the same Redis
//! with the same key prefix.
//!
//! Keys are namespaced by the prefix (default `tower-auth`) and expire on
//! their own; every update that reads and writes is one atomic step in
//! Redis (a Lua script), so two instances racing behave as one would.

mod counters;

use std::fmt;
use std::sync::Arc;

use redis::aio::ConnectionManager;

use crate::counters::StoreError;

/// The key prefix a [`RedisStore`] uses unless told otherwise.
pub const DEFAULT_PREFIX: &str = "tower-auth";

/// The state an app's instances share, on Redis. Cheap to clone (clones
/// share the connection and the local state).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Reconnects by itself; commands are multiplexed over one connection.
    connection: ConnectionManager,
    prefix: String,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://host:port/db`), with the
    /// default key prefix.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(store_error)?;
        let connection = ConnectionManager::new(client).await.map_err(store_error)?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                connection,
                prefix: DEFAULT_PREFIX.to_owned(),
            }),
        })
    }

    /// A connection for one command or script (a clone of the shared,
    /// multiplexed one).
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.inner.connection.clone()
    }

    /// The key `prefix:kind:id`.
    pub(crate) fn key(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{id}", self.inner.prefix)
    }
}

/// A Redis error as the store reports it (logged, never sent).
pub(crate) fn store_error(error: redis::RedisError) -> StoreError {
    StoreError(Box::new(error))
}
