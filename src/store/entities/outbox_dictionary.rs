//! The `outbox_dictionaries` table: what a broadcast's bodies are compressed against.

use sea_orm::entity::prelude::*;

/// A reference that message bodies are compressed against (`outbox_dictionaries`): a
/// broadcast's template rendered for a sample subscriber, with its tracking links rewritten.
/// Each message of the broadcast is stored as what differs from it (see
/// [`super::outbox_body::Model::new`]). Written once, never changed; it holds no subscriber's
/// data. A broadcast's dictionary has the broadcast's id.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox_dictionaries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The reference HTML.
    pub html: String,
    /// Where the reference's click-tracking links lead, in order: the links of every body that
    /// stores none of its own.
    pub links: Option<Json>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
