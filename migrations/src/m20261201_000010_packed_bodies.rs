//! Smaller outbox rows, written and rewritten faster:
//! - a message's HTML is stored LZ4-compressed (`outbox_bodies.html_lz4`, a third to a quarter of
//!   its size: a 4 KB newsletter fits in a database page instead of spilling into a second one).
//!   Rows written before keep their HTML as text in `html`, which stays and is read as before;
//! - a message's click-tracking links (where each `/t/c/…/N` leads) move from the message's row,
//!   which is rewritten on every attempt, to its bodies, which are written once: an answer
//!   rewrites a row of a few hundred bytes instead of a kilobyte.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{blob_null, json_binary_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [blob_null("html_lz4"), json_binary_null("links")] {
            let mut column = column;
            manager.alter_table(Table::alter().table("outbox_bodies").add_column(&mut column).to_owned()).await?;
        }
        let db = manager.get_connection();
        db.execute_unprepared(
            "UPDATE outbox_bodies SET links = (SELECT o.links FROM outbox o WHERE o.id = outbox_bodies.outbox_id) \
             WHERE outbox_id IN (SELECT id FROM outbox WHERE links IS NOT NULL)",
        )
        .await?;
        manager.alter_table(Table::alter().table("outbox").drop_column("links").to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // Compressed HTML cannot be turned back into text by SQL: going back would lose it.
        let packed = db
            .query_one_raw(sea_orm::Statement::from_string(
                manager.get_database_backend(),
                "SELECT outbox_id FROM outbox_bodies WHERE html_lz4 IS NOT NULL LIMIT 1",
            ))
            .await?;
        if packed.is_some() {
            return Err(DbErr::Migration(
                "messages are stored with compressed HTML, which older versions cannot read: \
                 restore a backup taken before this version instead"
                    .into(),
            ));
        }
        let mut links = json_binary_null("links");
        manager.alter_table(Table::alter().table("outbox").add_column(&mut links).to_owned()).await?;
        db.execute_unprepared(
            "UPDATE outbox SET links = (SELECT b.links FROM outbox_bodies b WHERE b.outbox_id = outbox.id) \
             WHERE id IN (SELECT outbox_id FROM outbox_bodies WHERE links IS NOT NULL)",
        )
        .await?;
        for column in ["links", "html_lz4"] {
            manager.alter_table(Table::alter().table("outbox_bodies").drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
