//! The foundation: subscribers, lists, memberships, tags, consent, events, suppressions, tokens.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn created_at() -> ColumnDef {
    timestamp_with_time_zone("created_at")
}

fn updated_at() -> ColumnDef {
    timestamp_with_time_zone("updated_at")
}

fn cascade_fk(from_table: &'static str, column: &'static str, to_table: &'static str) -> ForeignKeyCreateStatement {
    ForeignKey::create().from(from_table, column).to(to_table, "id").on_delete(ForeignKeyAction::Cascade).to_owned()
}

fn index(name: &'static str, table: &'static str, columns: &[&'static str]) -> IndexCreateStatement {
    let mut statement = Index::create();
    statement.name(name).table(table);
    for column in columns {
        statement.col(*column);
    }
    statement.to_owned()
}

/// On SQLite, narrow tables keyed by something other than an integer are stored WITHOUT ROWID:
/// the primary key is the table, so every insert updates one B-tree fewer.
pub(crate) fn compact(manager: &SchemaManager, mut table: TableCreateStatement) -> TableCreateStatement {
    if manager.get_database_backend() == sea_orm_migration::sea_orm::DbBackend::Sqlite {
        table.extra("WITHOUT ROWID");
    }
    table
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("lists")
                    .col(pk_uuid("id"))
                    .col(string_uniq("slug"))
                    .col(string("name"))
                    .col(text_null("description"))
                    .col(boolean("double_opt_in"))
                    .col(created_at())
                    .col(updated_at())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("subscribers")
                    .col(pk_uuid("id"))
                    .col(string_null("email"))
                    // The lower-cased address: uniqueness is case-insensitive on both databases.
                    .col(string_null("email_key").unique_key())
                    .col(string_null("phone").unique_key())
                    .col(string_null("first_name"))
                    .col(string_null("last_name"))
                    .col(string_null("timezone"))
                    .col(string_null("locale"))
                    .col(json_binary("attributes"))
                    .col(string("status"))
                    .col(string("email_state"))
                    .col(string("sms_state"))
                    .col(string_null("source"))
                    .col(string_null("medium"))
                    .col(string_null("campaign"))
                    .col(text_null("referrer"))
                    .col(text_null("landing_page"))
                    .col(created_at())
                    .col(updated_at())
                    .to_owned(),
            )
            .await?;
        manager.create_index(index("subscribers_status", "subscribers", &["status"])).await?;

        manager
            .create_table(compact(
                manager,
                Table::create()
                    .table("memberships")
                    .col(uuid("subscriber_id"))
                    .col(uuid("list_id"))
                    .col(string("status"))
                    .col(created_at())
                    .col(updated_at())
                    .col(timestamp_with_time_zone_null("confirmed_at"))
                    .col(timestamp_with_time_zone_null("unsubscribed_at"))
                    .primary_key(Index::create().col("subscriber_id").col("list_id"))
                    .foreign_key(&mut cascade_fk("memberships", "subscriber_id", "subscribers"))
                    .foreign_key(&mut cascade_fk("memberships", "list_id", "lists"))
                    .to_owned(),
            ))
            .await?;
        manager.create_index(index("memberships_list", "memberships", &["list_id", "status"])).await?;

        manager
            .create_table(compact(
                manager,
                Table::create()
                    .table("subscriber_tags")
                    .col(uuid("subscriber_id"))
                    .col(string("tag"))
                    .col(created_at())
                    .primary_key(Index::create().col("subscriber_id").col("tag"))
                    .foreign_key(&mut cascade_fk("subscriber_tags", "subscriber_id", "subscribers"))
                    .to_owned(),
            ))
            .await?;
        manager.create_index(index("subscriber_tags_tag", "subscriber_tags", &["tag"])).await?;

        manager
            .create_table(compact(
                manager,
                Table::create()
                    .table("consents")
                    .col(pk_uuid("id"))
                    .col(uuid("subscriber_id"))
                    .col(string("channel"))
                    .col(boolean("granted"))
                    .col(string("method"))
                    .col(text_null("consent_text"))
                    .col(string_null("text_hash"))
                    .col(string_null("text_version"))
                    .col(string_null("source"))
                    .col(string_null("ip"))
                    .col(text_null("user_agent"))
                    .col(created_at())
                    .foreign_key(&mut cascade_fk("consents", "subscriber_id", "subscribers"))
                    .to_owned(),
            ))
            .await?;
        manager.create_index(index("consents_subscriber", "consents", &["subscriber_id"])).await?;

        // Events have no foreign key: the `erased` event outlives the subscriber it names.
        manager
            .create_table(compact(
                manager,
                Table::create()
                    .table("events")
                    .col(pk_uuid("id"))
                    .col(uuid("subscriber_id"))
                    .col(string("kind"))
                    .col(json_binary("data"))
                    .col(created_at())
                    .to_owned(),
            ))
            .await?;
        manager.create_index(index("events_subscriber", "events", &["subscriber_id", "id"])).await?;

        manager
            .create_table(compact(
                manager,
                Table::create()
                    .table("suppressions")
                    .col(string("hash").primary_key())
                    .col(string("channel"))
                    .col(string("reason"))
                    .col(created_at())
                    .to_owned(),
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("api_tokens")
                    .col(pk_uuid("id"))
                    .col(string_uniq("name"))
                    .col(string_uniq("token_hash"))
                    .col(created_at())
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "api_tokens",
            "suppressions",
            "events",
            "consents",
            "subscriber_tags",
            "memberships",
            "subscribers",
            "lists",
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
