//! The owned audience: subscribers, lists, tags, consent, their timeline, import and export.
//!
//! This module holds the rules (what a valid subscriber is, what an erasure leaves behind, how an
//! import upserts). It speaks to the database through [`crate::store`] and never imports axum:
//! the HTTP layer and the CLI are two front ends over the same functions.

pub mod archive;
pub mod bounces;
pub mod engagement;
pub mod events;
pub mod export;
pub mod goals;
pub mod import;
pub mod lists;
pub mod machines;
pub mod reach;
pub mod records;
pub mod subscribers;

/// Who asked for a change: recorded in the timeline and consent records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An admin API token, by its name.
    Token(String),
    /// The bootstrap token from `OWNLIST_ADMIN_TOKEN`.
    Bootstrap,
    /// The command line on the server itself.
    Cli,
}

impl Actor {
    pub fn label(&self) -> String {
        match self {
            Actor::Token(name) => format!("token:{name}"),
            Actor::Bootstrap => "token:bootstrap".into(),
            Actor::Cli => "cli".into(),
        }
    }
}
