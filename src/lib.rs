//! ownlist: self-hosted marketing funnels and list automation.
//!
//! The crate is organised by what the product does:
//! - [`audience`]: subscribers, lists, tags, consent, the timeline, import and export (the domain;
//!   it never touches HTTP),
//! - [`store`]: the database connection, migrations and sea-orm entities,
//! - [`http`]: the admin API and health endpoints,
//! - [`config`], [`cli`], [`app`]: start-up and the one binary's subcommands.

pub mod app;
pub mod audience;
pub mod config;
pub mod core;
pub mod delivery;
pub mod inbound_sms;
pub mod outbox;
pub mod pages;
pub mod rollups;
pub mod stats;
pub mod store;
pub mod tokens;
pub mod web;
pub mod workflow;
