//! The `funnel_daily` table: views, signups, confirmations and first engagements per page, source
//! and day.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "funnel_daily")]
pub struct Model {
    /// `YYYY-MM-DD` (UTC).
    #[sea_orm(primary_key, auto_increment = false)]
    pub day: String,
    /// The landing page's slug.
    #[sea_orm(primary_key, auto_increment = false)]
    pub page: String,
    /// The visit's source, medium and campaign (empty when unknown).
    #[sea_orm(primary_key, auto_increment = false)]
    pub source: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub medium: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub campaign: String,
    /// Page views by people (no cookies: every view counts).
    pub views: i64,
    /// Views by crawlers, link previewers and HEAD requests, kept apart.
    pub bot_views: i64,
    pub signups: i64,
    pub confirmed: i64,
    /// Subscribers who opened their first email (of any kind) that day, by where they came from.
    pub opened: i64,
    /// Subscribers who clicked a link in an email for the first time that day.
    pub clicked: i64,
    /// Subscribers who reached a goal for the first time that day (a workflow's `exit_when`, or
    /// the event named as their landing page's `goal`).
    pub goals: i64,
    /// Subscribers reachable on one channel who confirmed a second that day (a number after
    /// email, an email address after texts): they became multi-channel.
    pub second_channel: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
