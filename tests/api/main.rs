//! Integration tests: the real app, a real database, driven over HTTP.
//! Set `OWNLIST_TEST_DATABASE_URL=postgres://…` to run every test on PostgreSQL too;
//! `TEST_LOG=1` shows the app's logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_sms;
mod helpers;
#[path = "../support/small_disk.rs"]
mod small_disk;
mod smtp_sink;
#[path = "../support/tools.rs"]
mod tools;

mod archive;
mod auth;
mod bounces;
mod broadcasts;
mod browser;
mod contract;
mod dashboard;
mod deliverability;
mod email;
mod engine;
mod face;
mod face_browser;
mod faults;
mod hardening;
mod lists;
mod migrations;
mod operations;
mod pages;
mod policy;
mod providers;
mod reach;
mod sms;
mod stats;
mod subscribers;
mod tracking;
mod transfer;
mod webhooks;
mod whatsapp;
