//! The `outbox` table: messages to send, each with its channel, status and attempts.

use sea_orm::entity::prelude::*;

use crate::core::values::{OutboxChannel, OutboxStatus};

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
    pub channel: OutboxChannel,
    pub recipient: String,
    pub subject: Option<String>,
    pub status: OutboxStatus,
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
    /// `reach: first`: the message kept back (`standby`) to send instead should this one fail
    /// for good (see [`crate::audience::reach::fallback`]).
    pub fallback_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// Marketing: written by a broadcast or a workflow step (a confirmation, a test send or a
    /// reply is not). Marketing mail is bulk mail, and the send policy caps it.
    pub fn is_marketing(&self) -> bool {
        self.broadcast_id.is_some() || self.workflow_id.is_some()
    }
}

/// Messages each with its bodies, read in one query: `None` for a message whose bodies are
/// missing. Read the rows with [`all_with_bodies`].
pub fn with_bodies() -> sea_orm::SelectTwo<Entity, super::outbox_body::Entity> {
    use sea_orm::QuerySelect;
    let bodies =
        Entity::belongs_to(super::outbox_body::Entity).from(Column::Id).to(super::outbox_body::Column::OutboxId).into();
    Entity::find().join(sea_orm::JoinType::LeftJoin, bodies).select_also(super::outbox_body::Entity)
}

/// The rows of a [`with_bodies`] query, each column read by its position (the query selects
/// the message's columns, then the bodies', each table's in the order of its model's fields).
/// sea-orm's own reading looks each column up by a name it formats for every row: for the
/// delivery workers' claims that was a twentieth of the CPU a message takes.
pub async fn all_with_bodies(
    query: sea_orm::SelectTwo<Entity, super::outbox_body::Entity>,
    db: &impl ConnectionTrait,
) -> Result<Vec<(Model, Option<super::outbox_body::Model>)>, DbErr> {
    let rows = db.query_all_raw(sea_orm::QueryTrait::build(&query, db.get_database_backend())).await?;
    rows.iter()
        .map(|row| {
            let mut columns = crate::store::Positional::new(row);
            let message = Model::read(&mut columns)?;
            let body = super::outbox_body::Model::read_joined(&mut columns)?;
            Ok((message, body))
        })
        .collect()
}

impl Model {
    /// The message from the next columns of a row, in the order of the fields.
    fn read(columns: &mut crate::store::Positional<'_>) -> Result<Self, DbErr> {
        Ok(Self {
            id: columns.take()?,
            idempotency_key: columns.take()?,
            subscriber_id: columns.take()?,
            enrollment_id: columns.take()?,
            workflow_id: columns.take()?,
            step_id: columns.take()?,
            channel: columns.take()?,
            recipient: columns.take()?,
            subject: columns.take()?,
            status: columns.take()?,
            attempts: columns.take()?,
            last_error: columns.take()?,
            sent_at: columns.take()?,
            due_at: columns.take()?,
            created_at: columns.take()?,
            updated_at: columns.take()?,
            broadcast_id: columns.take()?,
            list_slug: columns.take()?,
            segments: columns.take()?,
            provider_ref: columns.take()?,
            opened_at: columns.take()?,
            clicked_at: columns.take()?,
            lease_until: columns.take()?,
            lease_owner: columns.take()?,
            fallback_id: columns.take()?,
        })
    }
}
