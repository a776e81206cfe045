//! Delivery: draining the outbox. Every message was rendered and stored before any attempt to
//! send it; a worker claims due messages, sends them, and records the answer on the message and
//! in the subscriber's timeline.
//!
//! Webhooks are delivered here now; email and SMS workers join them with the delivery issue.

pub mod webhook;
