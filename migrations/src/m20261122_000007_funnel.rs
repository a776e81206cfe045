//! Analytics: daily rollups updated as things happen, so a stats request sums days instead of
//! scanning the timeline: the funnel per landing page and traffic source (a view, a signup, a
//! confirmation, a first open, click and goal), each workflow step's flow (entered, completed,
//! skipped by reason, messages and what became of them), and each relay's or provider's sends.

use sea_orm_migration::{prelude::*, schema::*};

// Rollups are read in key order and never by rowid: on SQLite they are clustered by their key.
use crate::m20261121_000001_foundation::compact;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(compact(
                manager,
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
                    .col(big_integer("goals").default(0))
                    .primary_key(Index::create().col("day").col("page").col("source").col("medium").col("campaign"))
                    .to_owned(),
            ))
            .await?;
        // One count per workflow, day, step (empty: the workflow as a whole), measure and detail
        // (a skip's reason; otherwise empty). Keyed by workflow first: a workflow's stats read
        // one contiguous range.
        manager
            .create_table(compact(
                manager,
                Table::create()
                    .table("step_daily")
                    .col(string("workflow_id"))
                    .col(string("day"))
                    .col(string("step_id"))
                    .col(string("measure"))
                    .col(string("detail"))
                    .col(big_integer("n").default(0))
                    .primary_key(
                        Index::create().col("workflow_id").col("day").col("step_id").col("measure").col("detail"),
                    )
                    .to_owned(),
            ))
            .await?;
        // Who is at which step of a workflow now: counted from this index alone.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX enrollments_live_step ON enrollments (workflow_id, step_id) WHERE ended_at IS NULL",
            )
            .await?;
        manager
            .create_table(compact(
                manager,
                Table::create()
                    .table("delivery_daily")
                    .col(string("day"))
                    .col(string("channel"))
                    .col(string("relay"))
                    .col(big_integer("sent").default(0))
                    .col(big_integer("failed").default(0))
                    .col(big_integer("retried").default(0))
                    .col(big_integer("attempts").default(0))
                    .col(big_integer("latency_ms").default(0))
                    .primary_key(Index::create().col("day").col("channel").col("relay"))
                    .to_owned(),
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("enrollments_live_step").table("enrollments").to_owned()).await?;
        for table in ["delivery_daily", "step_daily", "funnel_daily"] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
