//! `GET /api/v1/reachability?without=…`: who could still be reached, with consent, if a channel,
//! a relay or provider, or a social platform went dark (the drill `ownlist drill` prints).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::audience::reach::{self, Reachability, Without};
use crate::config::Config;
use crate::core::clock::SharedClock;
use crate::store::Db;
use crate::web::AppState;
use crate::web::error::ApiResult;
use crate::web::extract::ApiQuery;

pub fn routes() -> Router<AppState> {
    Router::new().route("/reachability", get(reachability))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReachQuery {
    /// What goes dark, comma-separated: a channel (`email`, `sms`), a relay or provider by the
    /// name the delivery statistics use (`mail.example:587`, `twilio:api.twilio.com`), or
    /// `source:NAME` (the people who came from there, with only what the business owns).
    /// Nothing: today's reach.
    #[param(max_length = 1000)]
    pub without: Option<String>,
}

/// Per list and per source: the audience, how many are still reachable with consent on a
/// channel left, how many on one channel only, where one outage message would reach each, and
/// how long it would take at the broadcast delivery rates of the last 30 days; and the weakest
/// single point of failure.
#[utoipa::path(get, path = "/api/v1/reachability", tag = "stats", security(("bearer" = [])), params(ReachQuery), responses(
    (status = 200, description = "The drill's report", body = Reachability),
    (status = 422, description = "Something in `without` that is not a channel, a relay or provider, or source:NAME", body = crate::web::error::Problem),
))]
pub async fn reachability(
    State(db): State<Db>,
    State(config): State<Arc<Config>>,
    State(clock): State<SharedClock>,
    ApiQuery(query): ApiQuery<ReachQuery>,
) -> ApiResult<Json<Reachability>> {
    let providers = config.reach_providers();
    let without = Without::parse(query.without.as_deref(), &providers)?;
    Ok(Json(reach::report(&db, &providers, &without, clock.now()).await?))
}
