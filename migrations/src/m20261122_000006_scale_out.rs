//! Several instances on one PostgreSQL database: leases on claimed outbox messages (a message
//! claimed by a process that died is taken over once its lease ends), and named leases such as
//! the workflow engine's (one instance runs the engine at a time; another takes over when it
//! stops renewing).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [timestamp_with_time_zone_null("lease_until"), string_null("lease_owner")] {
            let mut column = column;
            manager.alter_table(Table::alter().table("outbox").add_column(&mut column).to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table("leases")
                    .col(string("name").primary_key())
                    .col(string("owner"))
                    .col(timestamp_with_time_zone("until"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("leases").to_owned()).await?;
        for column in ["lease_until", "lease_owner"] {
            manager.alter_table(Table::alter().table("outbox").drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
