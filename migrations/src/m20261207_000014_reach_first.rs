//! Reaching each person once on the first channel that works (`reach: first`):
//! `broadcasts.reach` (`all`, the default: every channel listed; or `first`), and
//! `outbox.fallback_id`: the message kept back (`standby`) to send instead should this one fail
//! for good.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{string, uuid_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut reach = string("reach");
        reach.default("all");
        manager.alter_table(Table::alter().table("broadcasts").add_column(&mut reach).to_owned()).await?;
        manager.alter_table(Table::alter().table("outbox").add_column(uuid_null("fallback_id")).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("outbox").drop_column("fallback_id").to_owned()).await?;
        manager.alter_table(Table::alter().table("broadcasts").drop_column("reach").to_owned()).await
    }
}
