//! Roles for admin tokens (`api_tokens.role`: `viewer`, `editor` or `admin`). Tokens made before
//! roles existed could do everything, so they stay `admin`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::string;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut column = string("role");
        column.default("admin");
        manager.alter_table(Table::alter().table("api_tokens").add_column(&mut column).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("api_tokens").drop_column("role").to_owned()).await
    }
}
