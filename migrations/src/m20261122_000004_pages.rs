//! Landing pages and opt-in: the confirmations a double opt-in waits for, per-page counters
//! (rejected bot submissions), which page and page version a consent was given on, and the rest
//! of a subscriber's first touch (utm_content, utm_term, the click id a social network added).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per confirmation message sent (email link or SMS asking for YES): the link's
        // token names the row, so it works once and can say "already confirmed" after.
        manager
            .create_table(
                Table::create()
                    .table("signup_confirmations")
                    .col(pk_uuid("id"))
                    .col(uuid("subscriber_id"))
                    .col(uuid("list_id"))
                    .col(string("page"))
                    .col(string("page_version"))
                    .col(string("channel"))
                    .col(text_null("consent_text"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .col(timestamp_with_time_zone_null("confirmed_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("signup_confirmations_subscriber")
                    .table("signup_confirmations")
                    .col("subscriber_id")
                    .col("channel")
                    .col("created_at")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("page_counts")
                    .col(string("page"))
                    .col(string("day"))
                    .col(string("kind"))
                    .col(big_integer("n").default(0))
                    .primary_key(Index::create().col("page").col("day").col("kind"))
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per ALTER TABLE.
        for (table, column) in [
            ("consents", string_null("page")),
            ("consents", string_null("page_version")),
            ("subscribers", string_null("content")),
            ("subscribers", string_null("term")),
            ("subscribers", string_null("click_id")),
        ] {
            let mut column = column;
            manager.alter_table(Table::alter().table(table).add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, column) in [
            ("consents", "page"),
            ("consents", "page_version"),
            ("subscribers", "content"),
            ("subscribers", "term"),
            ("subscribers", "click_id"),
        ] {
            manager.alter_table(Table::alter().table(table).drop_column(column).to_owned()).await?;
        }
        manager.drop_table(Table::drop().table("page_counts").to_owned()).await?;
        manager.drop_table(Table::drop().table("signup_confirmations").to_owned()).await?;
        Ok(())
    }
}
