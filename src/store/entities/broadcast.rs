//! The `broadcasts` table: one-off sends to a list, with the cursor of their writing.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "broadcasts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub list_id: Uuid,
    pub list_slug: String,
    pub tag: Option<String>,
    pub condition: Option<Json>,
    pub channels: Json,
    pub subject: Option<String>,
    pub template: Option<String>,
    pub html: Option<String>,
    pub text: Option<String>,
    pub sms_text: Option<String>,
    /// WhatsApp: the approved template (its name or Content SID) the text goes in.
    pub whatsapp_template: Option<String>,
    pub track: bool,
    /// `scheduled` (before send_at), `queueing` (fan-out under way), `queued` (every message is in
    /// the outbox), or `cancelled`.
    pub status: String,
    pub cursor: Option<Uuid>,
    pub queued: i64,
    pub skipped: i64,
    pub send_at: DateTimeUtc,
    pub queued_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// `all`: a message on every channel listed that reaches the person; `first`: one message,
    /// on the first of them that does, the next ones kept back in case it fails for good.
    pub reach: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
