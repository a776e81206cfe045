//! The bottom layer: pure helpers and value types every other part uses. Nothing here names
//! another module of the crate; it touches no database, no network and no configuration.

pub mod brand;
pub mod clock;
pub mod error;
pub mod health;
pub mod hmac;
pub mod i18n;
pub mod links;
pub mod metrics;
pub mod sms_text;
pub mod text;
pub mod timing;
pub mod values;
