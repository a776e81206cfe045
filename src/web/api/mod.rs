//! The admin API under `/api/v1`: bearer-token authenticated, audited, described by the OpenAPI
//! document. Handlers extract, call the domain, and shape the answer.

pub(crate) mod audit;
pub(crate) mod broadcasts;
pub(crate) mod lists;
pub(crate) mod reach;
pub(crate) mod stats;
pub(crate) mod subscribers;
pub(crate) mod tokens;
pub(crate) mod transfer;
pub(crate) mod workflows;
