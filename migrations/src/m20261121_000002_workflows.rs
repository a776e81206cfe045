//! Workflows: stored versions, enrollments, pending triggers, and the outbox.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per workflow file: which version runs, and whether it is paused.
        manager
            .create_table(
                Table::create()
                    .table("workflows")
                    .col(string("id").primary_key())
                    .col(integer("current_version"))
                    .col(string("status"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        // Every version ever loaded, as checked JSON: enrollments name the version they run.
        manager
            .create_table(
                Table::create()
                    .table("workflow_versions")
                    .col(string("workflow_id"))
                    .col(integer("version"))
                    .col(json_binary("definition"))
                    .col(string("digest"))
                    .col(timestamp_with_time_zone("created_at"))
                    .primary_key(Index::create().col("workflow_id").col("version"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("enrollments")
                    .col(pk_uuid("id"))
                    .col(string("workflow_id"))
                    .col(integer("version"))
                    .col(uuid("subscriber_id"))
                    .col(string("status"))
                    .col(string_null("step_id"))
                    .col(timestamp_with_time_zone_null("next_run_at"))
                    .col(timestamp_with_time_zone_null("wait_started_at"))
                    .col(string_null("waiting_for"))
                    .col(string_null("end_reason"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("ended_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("enrollments", "subscriber_id")
                            .to("subscribers", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("enrollments_due")
                    .table("enrollments")
                    .col("status")
                    .col("next_run_at")
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("enrollments_subscriber")
                    .table("enrollments")
                    .col("subscriber_id")
                    .col("workflow_id")
                    .to_owned(),
            )
            .await?;
        // At most one live enrollment per subscriber and workflow (the same SQL on both databases).
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX enrollments_live ON enrollments (workflow_id, subscriber_id) WHERE ended_at IS NULL",
            )
            .await?;
        // Things that may start workflows, written in the same transaction as what happened.
        manager
            .create_table(
                Table::create()
                    .table("pending_triggers")
                    .col(pk_uuid("id"))
                    .col(uuid("subscriber_id"))
                    .col(string("kind"))
                    .col(string("name"))
                    .col(json_binary("data"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        // Recurring broadcasts: the last cron tick fired, and progress through the list for the
        // tick being fired, so each tick enrolls each member exactly once, even across a crash.
        manager
            .create_table(
                Table::create()
                    .table("schedule_runs")
                    .col(string("workflow_id").primary_key())
                    .col(timestamp_with_time_zone("last_tick"))
                    .col(timestamp_with_time_zone_null("firing_tick"))
                    .col(uuid_null("after_subscriber"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        // Rendered messages waiting for delivery; the key makes a step's message unique.
        manager
            .create_table(
                Table::create()
                    .table("outbox")
                    .col(pk_uuid("id"))
                    .col(string_uniq("idempotency_key"))
                    .col(uuid("subscriber_id"))
                    .col(uuid_null("enrollment_id"))
                    .col(string_null("workflow_id"))
                    .col(string_null("step_id"))
                    .col(string("channel"))
                    .col(string("recipient"))
                    .col(text_null("subject"))
                    .col(text_null("body_html"))
                    .col(text("body_text"))
                    .col(string("status"))
                    .col(integer("attempts").default(0))
                    .col(text_null("last_error"))
                    .col(timestamp_with_time_zone_null("sent_at"))
                    .col(timestamp_with_time_zone("due_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("outbox_due").table("outbox").col("status").col("due_at").to_owned())
            .await?;
        manager
            .create_index(Index::create().name("outbox_subscriber").table("outbox").col("subscriber_id").to_owned())
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["outbox", "schedule_runs", "pending_triggers", "enrollments", "workflow_versions", "workflows"] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
