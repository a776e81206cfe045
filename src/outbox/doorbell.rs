//! The doorbell producers ring after writing to the outbox.

use std::sync::Arc;

/// Rung when messages are written to the outbox, so idle workers look at once instead of at
/// their next one-second poll. (Every process polls anyway: another process's writes ring no
/// bell here.)
#[derive(Debug, Clone)]
pub struct Doorbell(Arc<tokio::sync::watch::Sender<()>>);

impl Doorbell {
    pub fn new() -> Self {
        Self(Arc::new(tokio::sync::watch::channel(()).0))
    }

    pub fn ring(&self) {
        self.0.send_replace(());
    }

    pub fn listen(&self) -> tokio::sync::watch::Receiver<()> {
        self.0.subscribe()
    }
}

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}
