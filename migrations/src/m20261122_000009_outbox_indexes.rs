//! Leaner outbox indexes, kept to the rows their queries look for:
//! - claims read only queued messages, so only queued messages are in the claim index: a sent
//!   message leaves it (one index write when it is sent, not two), and the index stays the size
//!   of the queue however long the history grows;
//! - only SMS status callbacks look messages up by the provider's reference, so only SMS messages
//!   are indexed by it: an email's SMTP reply (kept on the message) costs no index entry.
//!
//! Queries name the literal (`status = 'queued'`, `channel = 'sms'`) rather than a parameter,
//! so both databases can prove these indexes cover them.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("CREATE INDEX outbox_queued ON outbox (channel, due_at, id) WHERE status = 'queued'")
            .await?;
        db.execute_unprepared("CREATE INDEX outbox_sms_provider_ref ON outbox (provider_ref) WHERE channel = 'sms'")
            .await?;
        manager.drop_index(Index::drop().name("outbox_claim").table("outbox").to_owned()).await?;
        manager.drop_index(Index::drop().name("outbox_provider_ref").table("outbox").to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("outbox_claim")
                    .table("outbox")
                    .col("channel")
                    .col("status")
                    .col("due_at")
                    .col("id")
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("outbox_provider_ref").table("outbox").col("provider_ref").to_owned())
            .await?;
        manager.drop_index(Index::drop().name("outbox_queued").table("outbox").to_owned()).await?;
        manager.drop_index(Index::drop().name("outbox_sms_provider_ref").table("outbox").to_owned()).await
    }
}
