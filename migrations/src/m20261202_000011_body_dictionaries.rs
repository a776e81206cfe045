//! Message bodies compressed against a shared reference (a "dictionary"): a broadcast's messages
//! are one template rendered for each subscriber, so each differs from a rendering for a sample
//! subscriber only where it is personal. Compressed against that rendering, a 4 KB newsletter
//! is stored in about 300 bytes instead of 1,200, and its click-tracking links, the same for
//! every subscriber, are stored once with the reference instead of with each message.
//! - `outbox_dictionaries`: the references (id, HTML, links), written once, never changed;
//!   made from a sample subscriber's rendering, so they hold no subscriber's data;
//! - `outbox_bodies.dictionary_id`: the reference a body's `html_lz4` was compressed against
//!   (none: compressed alone, as before); its `links`, when absent, are the reference's.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{json_binary_null, text, timestamp_with_time_zone, uuid, uuid_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("outbox_dictionaries")
                    .col(uuid("id").primary_key())
                    .col(text("html"))
                    .col(json_binary_null("links"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        let mut column = uuid_null("dictionary_id");
        manager.alter_table(Table::alter().table("outbox_bodies").add_column(&mut column).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // Such bodies cannot be read without their dictionary: going back would lose them.
        let referenced = db
            .query_one_raw(sea_orm::Statement::from_string(
                manager.get_database_backend(),
                "SELECT outbox_id FROM outbox_bodies WHERE dictionary_id IS NOT NULL LIMIT 1",
            ))
            .await?;
        if referenced.is_some() {
            return Err(DbErr::Migration(
                "messages are stored compressed against shared references, which older versions cannot read: \
                 restore a backup taken before this version instead"
                    .into(),
            ));
        }
        manager.alter_table(Table::alter().table("outbox_bodies").drop_column("dictionary_id").to_owned()).await?;
        manager.drop_table(Table::drop().table("outbox_dictionaries").to_owned()).await
    }
}
