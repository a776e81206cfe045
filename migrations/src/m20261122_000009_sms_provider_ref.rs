//! Only SMS status callbacks look messages up by the provider's reference, so only SMS messages
//! are indexed by it: an email's SMTP reply (kept on the message as its answer) no longer costs
//! an index entry when the message is written and another when it is sent.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Lookups name the channel as a literal (`channel = 'sms'`), so both databases can
        // prove the index covers them.
        manager
            .get_connection()
            .execute_unprepared("CREATE INDEX outbox_sms_provider_ref ON outbox (provider_ref) WHERE channel = 'sms'")
            .await?;
        manager.drop_index(Index::drop().name("outbox_provider_ref").table("outbox").to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("outbox_sms_provider_ref").table("outbox").to_owned()).await?;
        manager
            .create_index(Index::create().name("outbox_provider_ref").table("outbox").col("provider_ref").to_owned())
            .await
    }
}
