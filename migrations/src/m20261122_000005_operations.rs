//! Operations: the audit log of admin API changes.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per admin request that may change something, written before it runs (status
        // empty) and completed after (status), so even a crash mid-request leaves its trace.
        manager
            .create_table(
                Table::create()
                    .table("audit_log")
                    .col(pk_uuid("id"))
                    .col(timestamp_with_time_zone("at"))
                    .col(string("actor"))
                    .col(string("method"))
                    .col(string("path"))
                    .col(string_null("query"))
                    .col(integer_null("status"))
                    .col(string_null("request_id"))
                    .col(string_null("ip"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("audit_log").to_owned()).await
    }
}
