//! sea-orm entities: one file per table, mirroring `migrations/`.

pub mod admin_session;
pub mod api_token;
pub mod audit_entry;
pub mod broadcast;
pub mod consent;
pub mod delivery_day;
pub mod enrollment;
pub mod event;
pub mod funnel_day;
pub mod lease;
pub mod list;
pub mod membership;
pub mod outbox;
pub mod outbox_body;
pub mod outbox_dictionary;
pub mod page;
pub mod page_count;
pub mod pending_trigger;
pub mod schedule_run;
pub mod signup_confirmation;
pub mod step_day;
pub mod subscriber;
pub mod subscriber_tag;
pub mod suppression;
pub mod workflow;
pub mod workflow_version;
