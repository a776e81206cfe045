//! Schema changes keep what was stored before them.

use migration::MigratorTrait;
use ownlist::store::Db;
use ownlist::store::entities::{outbox, outbox_body};
use sea_orm::sea_query::{Alias, Query};
use sea_orm::{ConnectionTrait, EntityTrait};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{Backend, PostgresDatabase, with_each_backend};

/// The URL of an empty database on `backend` (a file in `dir`, or a new PostgreSQL database kept
/// while the guard lives); `None` when PostgreSQL is not configured.
async fn empty_database(backend: Backend, dir: &tempfile::TempDir) -> Option<(String, Option<PostgresDatabase>)> {
    match backend {
        Backend::Sqlite => Some((format!("sqlite://{}?mode=rwc", dir.path().join("ownlist.db").display()), None)),
        Backend::Postgres => {
            let Some(database) = PostgresDatabase::from_env().await else {
                eprintln!("OWNLIST_TEST_DATABASE_URL is not set: PostgreSQL half skipped");
                return None;
            };
            Some((database.url.clone(), Some(database)))
        }
    }
}

/// A message written before bodies were compressed (migration 10): its HTML stays readable and
/// its tracked links move from the message to its bodies.
async fn messages_written_before_compressed_bodies_keep_their_html_and_links(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((url, _database)) = empty_database(backend, &dir).await else { return };
    let db = Db::connect(&url).await.unwrap();
    migration::Migrator::up(db.conn(), Some(9)).await.unwrap();
    let (id, subscriber, now) = (Uuid::now_v7(), Uuid::now_v7(), chrono::Utc::now());
    let links = json!(["https://shop.example/a", "https://shop.example/b"]);
    let html = "<p>Hello Ada, <a href=\"https://news.example/t/c/TOKEN/0\">see</a></p>";
    let message = Query::insert()
        .into_table(Alias::new("outbox"))
        .columns(
            ["id", "idempotency_key", "subscriber_id", "channel", "recipient", "status", "due_at", "created_at"]
                .into_iter()
                .chain(["updated_at", "links"])
                .map(Alias::new),
        )
        .values_panic([
            id.into(),
            "broadcast:old".into(),
            subscriber.into(),
            "email".into(),
            "ada@example.com".into(),
            "queued".into(),
            now.into(),
            now.into(),
            now.into(),
            links.clone().into(),
        ])
        .to_owned();
    let body = Query::insert()
        .into_table(Alias::new("outbox_bodies"))
        .columns(["outbox_id", "html", "text"].map(Alias::new))
        .values_panic([id.into(), html.into(), "".into()])
        .to_owned();
    for statement in [message, body] {
        db.conn().execute(&statement).await.unwrap();
    }

    db.migrate().await.unwrap();
    let stored = outbox_body::Entity::find_by_id(id).one(db.conn()).await.unwrap().unwrap();
    assert_eq!(stored.html(None).unwrap().as_deref(), Some(html), "the old HTML is read as it was");
    assert_eq!(stored.links, Some(links), "the links moved to the bodies");
    let message = outbox::Entity::find_by_id(id).one(db.conn()).await.unwrap().unwrap();
    assert_eq!((message.recipient.as_str(), message.status.as_str()), ("ada@example.com", "queued"));
    db.close().await.unwrap();
}

with_each_backend!(messages_written_before_compressed_bodies_keep_their_html_and_links);

/// Going back before dictionaries (migration 11) is refused while a body needs one (older
/// versions could not read it), and works once none does.
async fn going_back_before_dictionaries_is_refused_while_bodies_need_them(backend: Backend) {
    use ownlist::store::entities::outbox_dictionary;
    use sea_orm::{ActiveModelTrait, IntoActiveModel};
    let dir = tempfile::tempdir().unwrap();
    let Some((url, _database)) = empty_database(backend, &dir).await else { return };
    let db = Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    let now = chrono::Utc::now();
    let dictionary = outbox_dictionary::Model {
        id: Uuid::now_v7(),
        html: "<p>Hello Sample</p>".into(),
        links: None,
        created_at: now,
    };
    dictionary.clone().into_active_model().insert(db.conn()).await.unwrap();
    let id = Uuid::now_v7();
    let body = outbox_body::Model::new(id, Some("<p>Hello Ada</p>"), String::new(), None, Some(&dictionary));
    body.clone().into_row().insert(db.conn()).await.unwrap();

    // Migrations after 11 go back freely; 11 itself is refused.
    let after_eleven = migration::Migrator::migrations().len() - 11;
    migration::Migrator::down(db.conn(), Some(u32::try_from(after_eleven).unwrap())).await.unwrap();
    let refused = migration::Migrator::down(db.conn(), Some(1)).await.unwrap_err().to_string();
    assert!(refused.contains("restore a backup"), "{refused}");
    let stored = outbox_body::Entity::find_by_id(id).one(db.conn()).await.unwrap().unwrap();
    assert_eq!(stored.html(Some(&dictionary)).unwrap().as_deref(), Some("<p>Hello Ada</p>"), "nothing was lost");

    outbox_body::Entity::delete_by_id(id).exec(db.conn()).await.unwrap();
    migration::Migrator::down(db.conn(), Some(1)).await.unwrap();
    db.migrate().await.unwrap();
    db.close().await.unwrap();
}

with_each_backend!(going_back_before_dictionaries_is_refused_while_bodies_need_them);
