//! Outage readiness:
//! - `broadcasts.reach`: `all` (the default: every channel listed) or `first` (one message each,
//!   on the first channel that works); `broadcasts.whatsapp_template`: the approved template a
//!   WhatsApp message goes in;
//! - `outbox.fallback_id`: the message kept back (`standby`) to send instead should this one
//!   fail for good;
//! - `funnel_daily.second_channel`: subscribers on one channel who confirmed a second;
//! - `subscribers.whatsapp_state`: consent to WhatsApp, a channel of its own (to the phone
//!   number), and its delivery reports found by the provider's reference as SMS's are.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, string, string_null, uuid_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut reach = string("reach");
        reach.default("all");
        manager.alter_table(Table::alter().table("broadcasts").add_column(&mut reach).to_owned()).await?;
        manager
            .alter_table(Table::alter().table("broadcasts").add_column(string_null("whatsapp_template")).to_owned())
            .await?;
        manager.alter_table(Table::alter().table("outbox").add_column(uuid_null("fallback_id")).to_owned()).await?;
        let mut whatsapp = string("whatsapp_state");
        whatsapp.default("none");
        manager.alter_table(Table::alter().table("subscribers").add_column(&mut whatsapp).to_owned()).await?;
        let mut grown = big_integer("second_channel");
        grown.default(0);
        manager.alter_table(Table::alter().table("funnel_daily").add_column(&mut grown).to_owned()).await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX outbox_whatsapp_provider_ref ON outbox (provider_ref) WHERE channel = 'whatsapp'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("outbox_whatsapp_provider_ref").table("outbox").to_owned()).await?;
        manager.alter_table(Table::alter().table("funnel_daily").drop_column("second_channel").to_owned()).await?;
        manager.alter_table(Table::alter().table("subscribers").drop_column("whatsapp_state").to_owned()).await?;
        manager.alter_table(Table::alter().table("outbox").drop_column("fallback_id").to_owned()).await?;
        manager.alter_table(Table::alter().table("broadcasts").drop_column("whatsapp_template").to_owned()).await?;
        manager.alter_table(Table::alter().table("broadcasts").drop_column("reach").to_owned()).await
    }
}
