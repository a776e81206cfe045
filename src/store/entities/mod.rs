//! sea-orm entities: one file per table, mirroring `migrations/`.

pub mod api_token;
pub mod consent;
pub mod event;
pub mod list;
pub mod membership;
pub mod subscriber;
pub mod subscriber_tag;
pub mod suppression;
