//! What a restart needs to keep serving while a workflow file is invalid, and bootstrap logins:
//! - `pages`: the landing pages of the last valid version of each workflow file, so a file with
//!   a mistake in it keeps its pages up (as its workflow keeps its last valid version);
//! - `admin_sessions.token_digest`: for a login with the bootstrap token (`admin_token`), the
//!   SHA-256 of that token, so the session ends when the setting changes or goes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{json_binary, string, string_null, timestamp_with_time_zone};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("pages")
                    .col(string("slug").primary_key())
                    .col(string("file"))
                    .col(json_binary("definition"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        let mut column = string_null("token_digest");
        manager.alter_table(Table::alter().table("admin_sessions").add_column(&mut column).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("admin_sessions").drop_column("token_digest").to_owned()).await?;
        manager.drop_table(Table::drop().table("pages").to_owned()).await
    }
}
