//! What the public reaches without a token: landing pages, confirmation, preference and
//! unsubscribe links, tracking, provider webhooks (bounces, SMS), health and metrics.

pub(crate) mod add_channel;
pub(crate) mod bounces;
pub(crate) mod face;
pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod pages;
pub(crate) mod preferences;
pub(crate) mod sms;
pub(crate) mod tracking;
pub(crate) mod unsubscribe;
