//! The outbox port: every producer of messages (workflow steps, broadcasts, signup
//! confirmations, SMS keyword replies) writes them here, in its own transaction, as a typed
//! [`compose::Draft`] made into rows by [`compose::NewMessage`]. The delivery workers
//! ([`crate::delivery`]) drain what is written; producers never talk to a relay.

pub mod compose;
pub mod doorbell;

pub use doorbell::Doorbell;
