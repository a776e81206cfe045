//! Dashboard sessions: a login with an admin token opens one; the browser holds only a random
//! secret in an HttpOnly cookie, the database its SHA-256 and when it ends. Logout deletes it.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("admin_sessions")
                    .col(string("id").primary_key())
                    .col(string("actor"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("admin_sessions_expiry").table("admin_sessions").col("expires_at").to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("admin_sessions").to_owned()).await
    }
}
