//! The core of the state an app's instances share: [`StoreError`], what a
//! shared store answers when it cannot be trusted. The store itself, and
//! what it keeps, is the [`store`](crate::store) module's.

use crate::user::BoxError;

/// The shared state failed (unreachable, or too stale to trust): answered
/// as 503 `temporarily_unavailable`. The source is logged, never sent.
#[derive(Debug, thiserror::Error)]
#[error("shared store failed")]
pub struct StoreError(#[source] pub BoxError);

impl StoreError {
    /// A store error with this message (logged, never sent to a client).
    pub fn new(message: impl Into<String>) -> Self {
        StoreError(message.into().into())
    }
}
