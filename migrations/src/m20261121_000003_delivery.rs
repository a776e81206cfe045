//! Delivery: broadcasts, the bodies of outbox messages in a table of their own, and what the
//! outbox needs beyond a workflow's messages (the broadcast
//! or list a message belongs to, its tracked links and first open and click, its SMS segments,
//! the provider's id for it).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A one-off message to a list. `cursor` is the last subscriber id turned into outbox rows:
        // fan-out goes in subscriber-id order, a batch and its cursor in one transaction.
        manager
            .create_table(
                Table::create()
                    .table("broadcasts")
                    .col(pk_uuid("id"))
                    .col(uuid("list_id"))
                    .col(string("list_slug"))
                    .col(string_null("tag"))
                    .col(json_binary_null("condition"))
                    .col(json_binary("channels"))
                    .col(text_null("subject"))
                    .col(string_null("template"))
                    .col(text_null("html"))
                    .col(text_null("text"))
                    .col(text_null("sms_text"))
                    .col(boolean("track").default(true))
                    .col(string("status"))
                    .col(uuid_null("cursor"))
                    .col(big_integer("queued").default(0))
                    .col(big_integer("skipped").default(0))
                    .col(timestamp_with_time_zone("send_at"))
                    .col(timestamp_with_time_zone_null("queued_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("broadcasts_due").table("broadcasts").col("status").col("send_at").to_owned(),
            )
            .await?;
        // A message's bodies, apart from its state: they never change, while the state row is
        // rewritten on every attempt (a rewritten row is written whole, bodies included).
        manager
            .create_table(
                Table::create()
                    .table("outbox_bodies")
                    .col(pk_uuid("outbox_id"))
                    .col(text_null("html"))
                    .col(text("text"))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "INSERT INTO outbox_bodies (outbox_id, html, text) SELECT id, body_html, body_text FROM outbox",
        )
        .await?;
        for column in ["body_html", "body_text"] {
            db.execute_unprepared(&format!("ALTER TABLE outbox DROP COLUMN {column}")).await?;
        }
        // SQLite adds one column per ALTER TABLE.
        for column in [
            uuid_null("broadcast_id"),
            string_null("list_slug"),
            json_binary_null("links"),
            integer_null("segments"),
            string_null("provider_ref"),
            timestamp_with_time_zone_null("opened_at"),
            timestamp_with_time_zone_null("clicked_at"),
        ] {
            let mut column = column;
            manager.alter_table(Table::alter().table("outbox").add_column(&mut column).to_owned()).await?;
        }
        // Workers claim a channel's due messages in (due time, id) order, batch after batch.
        manager
            .create_index(
                Index::create()
                    .name("outbox_claim")
                    .table("outbox")
                    .col("channel")
                    .col("status")
                    .col("due_at")
                    .col("id")
                    .to_owned(),
            )
            .await?;
        manager.drop_index(Index::drop().name("outbox_due").table("outbox").to_owned()).await?;
        // Covers a broadcast's progress (counts by channel and status) without reading messages.
        manager
            .create_index(
                Index::create()
                    .name("outbox_broadcast")
                    .table("outbox")
                    .col("broadcast_id")
                    .col("channel")
                    .col("status")
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("outbox_provider_ref").table("outbox").col("provider_ref").to_owned())
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("outbox_provider_ref").table("outbox").to_owned()).await?;
        manager
            .create_index(Index::create().name("outbox_due").table("outbox").col("status").col("due_at").to_owned())
            .await?;
        manager.drop_index(Index::drop().name("outbox_claim").table("outbox").to_owned()).await?;
        manager.drop_index(Index::drop().name("outbox_broadcast").table("outbox").to_owned()).await?;
        for column in ["clicked_at", "opened_at", "provider_ref", "segments", "links", "list_slug", "broadcast_id"] {
            manager.alter_table(Table::alter().table("outbox").drop_column(column).to_owned()).await?;
        }
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE outbox ADD COLUMN body_html text NULL").await?;
        db.execute_unprepared("ALTER TABLE outbox ADD COLUMN body_text text NOT NULL DEFAULT ''").await?;
        db.execute_unprepared(
            "UPDATE outbox SET body_html = (SELECT html FROM outbox_bodies b WHERE b.outbox_id = outbox.id), \
             body_text = COALESCE((SELECT text FROM outbox_bodies b WHERE b.outbox_id = outbox.id), '')",
        )
        .await?;
        manager.drop_table(Table::drop().table("outbox_bodies").to_owned()).await?;
        manager.drop_table(Table::drop().table("broadcasts").to_owned()).await?;
        Ok(())
    }
}
