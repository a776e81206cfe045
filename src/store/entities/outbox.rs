use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub idempotency_key: String,
    pub subscriber_id: Uuid,
    pub enrollment_id: Option<Uuid>,
    pub workflow_id: Option<String>,
    pub step_id: Option<String>,
    pub channel: String,
    pub recipient: String,
    pub subject: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTimeUtc>,
    pub due_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The broadcast that produced the message (none for a workflow's).
    pub broadcast_id: Option<Uuid>,
    /// The list the message is sent to, for `List-Id` (list mail only).
    pub list_slug: Option<String>,
    /// SMS only: how many segments the body takes.
    pub segments: Option<i32>,
    /// The provider's id for the message (an SMS provider's message SID), for status callbacks.
    pub provider_ref: Option<String>,
    /// When the message was first seen opened (pixel or click), and first clicked.
    pub opened_at: Option<DateTimeUtc>,
    pub clicked_at: Option<DateTimeUtc>,
    /// Several instances (PostgreSQL): until when the process `lease_owner` holds the message it
    /// claimed; once the lease has ended, another may take it over.
    pub lease_until: Option<DateTimeUtc>,
    pub lease_owner: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
