//! Funnel analytics: daily rollups per landing page and traffic source, updated as things
//! happen (a view, a signup, a confirmation), so a stats request sums days instead of scanning
//! the timeline.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("funnel_daily")
                    .col(string("day"))
                    .col(string("page"))
                    .col(string("source"))
                    .col(string("medium"))
                    .col(string("campaign"))
                    .col(big_integer("views").default(0))
                    .col(big_integer("bot_views").default(0))
                    .col(big_integer("signups").default(0))
                    .col(big_integer("confirmed").default(0))
                    .col(big_integer("opened").default(0))
                    .col(big_integer("clicked").default(0))
                    .primary_key(Index::create().col("day").col("page").col("source").col("medium").col("campaign"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("funnel_daily").to_owned()).await
    }
}
