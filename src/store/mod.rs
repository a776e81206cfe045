//! The database: connecting (SQLite or PostgreSQL from one URL), migrating, and write transactions.
//!
//! This module owns how ownlist talks to its database; it knows nothing of subscribers or HTTP.

pub mod bulk;
pub mod entities;

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

/// The connection pool, with the knowledge of which database is behind it.
#[derive(Debug, Clone)]
pub struct Db {
    conn: DatabaseConnection,
    /// Where write transactions run. On SQLite this is one dedicated connection: SQLite allows
    /// one writer at a time anyway, and a connection drops its page cache whenever another one
    /// has written, so writing always through the same one keeps the cache warm from one batch
    /// to the next. On PostgreSQL it is the pool.
    writer: DatabaseConnection,
    /// The folder of the SQLite database file (none on PostgreSQL, whose disk is the server's).
    folder: Option<std::path::PathBuf>,
    /// The connections of the background (delivery, the engine), apart from those of requests,
    /// so that a burst of requests cannot take every connection from them: on SQLite, readers
    /// of their own (writes share the one writer); on PostgreSQL, a pool of their own.
    background: DatabaseConnection,
    /// On SQLite, for requests: one write at a time may wait for the writer. The writer's queue
    /// is first come, first served, so a background write waits for at most the transaction
    /// under way and one request's, however many requests are writing.
    foreground_turn: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

/// Below this much free space where the SQLite file lives, the instance is not ready: writes may
/// fail at any moment (a small one can still fit in room the write-ahead log already has).
pub const DISK_FREE_MIN: u64 = 1024 * 1024;

impl Db {
    /// Connects to `url`. For SQLite the file (and its folder) is created when missing, in WAL
    /// mode with foreign keys enforced.
    pub async fn connect(url: &str) -> Result<Self, DbErr> {
        let mut options = ConnectOptions::new(url.to_owned());
        options.sqlx_logging(false).connect_timeout(Duration::from_secs(10));
        let mut folder = None;
        if url.starts_with("sqlite:") {
            let parsed: SqliteConnectOptions =
                url.parse().map_err(|e| DbErr::Custom(format!("invalid SQLite URL: {e}")))?;
            let parent = parsed.get_filename().parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(parent) = parent {
                std::fs::create_dir_all(parent).map_err(|e| {
                    DbErr::Custom(format!("cannot create the database folder {}: {e}", parent.display()))
                })?;
            }
            folder = Some(parent.map_or_else(|| ".".into(), std::path::Path::to_path_buf));
            options
                // WAL lets readers run beside the one writer; write transactions are IMMEDIATE
                // (see `begin_write`) so they queue on the busy timeout instead of failing.
                .max_connections(4)
                .map_sqlx_sqlite_opts(|opts| {
                    opts.create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .foreign_keys(true)
                        .busy_timeout(Duration::from_secs(30))
                        // Checkpoint every ~40 MB of WAL instead of 4 MB: a page changed many
                        // times during a bulk write is copied back once.
                        .pragma("wal_autocheckpoint", "10000")
                        // 4 MiB of page cache per reading connection (2 MiB is SQLite's default);
                        // the writer gets more below.
                        .pragma("cache_size", "-4096")
                        // Statement journals of multi-row writes in memory, not in temp files.
                        .pragma("temp_store", "memory")
                        // Rows come from the connection's thread through a channel: room for a
                        // whole batch (a delivery claim, a fan-out's members), so that thread
                        // never stops to wait for the reader, nor wakes it row after row.
                        .row_buffer_size(1024)
                });
        } else {
            options.max_connections(16);
        }
        let sqlite = url.starts_with("sqlite:");
        let mut writer_options = options.clone();
        let mut background_options = options.clone();
        background_options.max_connections(if sqlite { 2 } else { 4 });
        let conn = Database::connect(options).await?;
        let background = Database::connect(background_options).await?;
        let writer = if sqlite {
            // 16 MiB of page cache for the one writer: the scheduler's batches touch index pages
            // all over a large table. (Readers keep 4 MiB each: with four of them, the delivery
            // benchmark's peak memory was a quarter page caches filled with message bodies.)
            writer_options
                .max_connections(1)
                .min_connections(1)
                .map_sqlx_sqlite_opts(|opts| opts.pragma("cache_size", "-16384"));
            Database::connect(writer_options).await?
        } else {
            conn.clone()
        };
        let foreground_turn = sqlite.then(|| std::sync::Arc::new(tokio::sync::Semaphore::new(1)));
        Ok(Self { conn, writer, folder, background, foreground_turn })
    }

    /// The same database as seen by the background (delivery workers, the engine): its own
    /// connections, and its writes never queue behind more than one request's.
    pub fn background(&self) -> Self {
        let writer = if self.backend() == DbBackend::Sqlite { self.writer.clone() } else { self.background.clone() };
        Self {
            conn: self.background.clone(),
            writer,
            folder: self.folder.clone(),
            background: self.background.clone(),
            foreground_turn: None,
        }
    }

    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    pub fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    /// Brings the schema up to date.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        Migrator::up(&self.conn, None).await
    }

    /// The names of the migrations not applied yet (nothing is changed).
    pub async fn pending_migrations(&self) -> Result<Vec<String>, DbErr> {
        Ok(Migrator::get_pending_migrations_read_only(&self.conn).await?.iter().map(|m| m.name().to_owned()).collect())
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock up front, so two
    /// writers never deadlock upgrading from a read lock.
    pub async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        let _turn = match &self.foreground_turn {
            Some(turn) => Some(turn.acquire().await.map_err(|e| DbErr::Custom(format!("write turn: {e}")))?),
            None => None,
        };
        if self.backend() == DbBackend::Sqlite {
            self.reopen_writer_if_stranded().await?;
        }
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        self.writer.begin_with_options(options).await
    }

    /// SQLite rolls a transaction back by itself when the disk is full (or on an I/O error), and a
    /// COMMIT or ROLLBACK that fails leaves the driver counting a transaction SQLite may or may not
    /// still hold. A connection in that state turns every later transaction into a savepoint of
    /// one that never commits: writes are acknowledged and lost, and the lock it keeps blocks
    /// every other connection. Between transactions the writer is idle, so a transaction it still
    /// counts is such a leftover: the connection is closed (SQLite rolls back whatever it held)
    /// and the pool opens a fresh one.
    async fn reopen_writer_if_stranded(&self) -> Result<(), DbErr> {
        use sea_orm::sqlx::Connection;
        let pool = self.writer.get_sqlite_connection_pool();
        let connection = pool.acquire().await.map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into())))?;
        if connection.is_in_transaction() {
            tracing::warn!("a failed write left the database connection inside a transaction: it is reopened");
            crate::core::metrics::inc("ownlist_database_connections_reopened_total", &[]);
            if let Err(e) = connection.close().await {
                tracing::warn!(error = %e, "closing the stranded database connection");
            }
        }
        Ok(())
    }

    /// Writes (and commits) a row, to learn whether writes work now: a full disk or a read-only
    /// file system fails here while reads still answer.
    pub async fn probe_write(&self, now: chrono::DateTime<chrono::Utc>) -> Result<(), DbErr> {
        hold_lease(self, "write-probe", "write-probe", now, chrono::Duration::zero()).await.map(|_| ())
    }

    /// Free bytes on the file system of the SQLite database (`None` on PostgreSQL, or when the
    /// system does not say).
    pub fn disk_free(&self) -> Option<u64> {
        self.folder.as_ref().and_then(|folder| fs4::available_space(folder).ok())
    }

    /// Answers whether the database responds.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.conn.ping().await
    }

    pub async fn close(self) -> Result<(), DbErr> {
        let sqlite = self.backend() == DbBackend::Sqlite;
        self.background.close().await?;
        if sqlite {
            self.writer.close().await?;
        }
        self.conn.close().await
    }

    /// Runs a statement that has no result.
    pub async fn execute_unprepared(&self, sql: &str) -> Result<(), DbErr> {
        self.conn.execute_unprepared(sql).await.map(|_| ())
    }
}

/// A row's columns read one after the other, by position.
pub struct Positional<'a> {
    row: &'a sea_orm::QueryResult,
    at: usize,
}

impl<'a> Positional<'a> {
    pub fn new(row: &'a sea_orm::QueryResult) -> Self {
        Self { row, at: 0 }
    }

    /// The next column's value.
    pub fn take<T: sea_orm::TryGetable>(&mut self) -> Result<T, DbErr> {
        self.at += 1;
        self.row.try_get_by_index(self.at - 1)
    }

    /// Passes over `n` columns.
    pub fn skip(&mut self, n: usize) {
        self.at += n;
    }
}

/// `status = 'queued'` for outbox queries, written as a literal: the claim index holds only
/// queued messages (migration m9), and a database can use such a partial index only when the
/// query names the same constant.
pub fn queued() -> sea_orm::sea_query::SimpleExpr {
    sea_orm::sea_query::Expr::cust("status = 'queued'")
}

/// Whether a transaction failed for a reason of the moment, so that running it again may work:
/// PostgreSQL broke a deadlock or a serialization conflict, or SQLite stayed busy.
pub fn is_transient(err: &crate::core::error::Error) -> bool {
    let crate::core::error::Error::Database(db) = err else { return false };
    let text = db.to_string();
    ["deadlock detected", "could not serialize access", "database is locked"].iter().any(|t| text.contains(t))
}

/// Whether a database error says its storage is full: SQLite's `SQLITE_FULL`, PostgreSQL's
/// `disk_full` (53100) or an operating system's ENOSPC.
pub fn is_storage_full(err: &DbErr) -> bool {
    let text = err.to_string();
    ["database or disk is full", "No space left on device", "could not extend file", "(code: 13)", "53100"]
        .iter()
        .any(|t| text.contains(t))
}

/// Counts a database error in the metrics (`ownlist_database_errors_total`), by kind.
pub fn count_error(err: &DbErr) {
    let kind = if is_storage_full(err) {
        "storage_full"
    } else if err.to_string().contains("database is locked") {
        "busy"
    } else {
        "other"
    };
    crate::core::metrics::inc("ownlist_database_errors_total", &[("kind", kind)]);
}

/// Whether a database error is a unique-constraint violation.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

/// Takes or renews the named lease (say, `engine`) for `owner` until `now + ttl`: it succeeds
/// when nobody holds it, when `owner` already does, or when the holder's lease has ended. Two
/// processes asking at once cannot both get it (the update re-checks the row it locks).
pub async fn hold_lease(
    db: &Db,
    name: &str,
    owner: &str,
    now: chrono::DateTime<chrono::Utc>,
    ttl: chrono::Duration,
) -> Result<bool, DbErr> {
    use sea_orm::sea_query::{Expr, OnConflict};
    use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

    use entities::lease;
    let until = now + ttl;
    let txn = db.begin_write().await?;
    let row = lease::ActiveModel { name: Set(name.to_owned()), owner: Set(owner.to_owned()), until: Set(until) };
    lease::Entity::insert(row)
        .on_conflict(OnConflict::column(lease::Column::Name).do_nothing().to_owned())
        .exec_without_returning(&txn)
        .await?;
    let updated = lease::Entity::update_many()
        .col_expr(lease::Column::Owner, Expr::value(owner))
        .col_expr(lease::Column::Until, Expr::value(until))
        .filter(lease::Column::Name.eq(name))
        .filter(sea_orm::Condition::any().add(lease::Column::Owner.eq(owner)).add(lease::Column::Until.lt(now)))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(updated.rows_affected == 1)
}

#[cfg(test)]
mod tests {
    use super::{Db, is_transient};
    use crate::core::error::Error;
    use sea_orm::ConnectionTrait;

    #[test]
    fn deadlocks_and_busy_databases_are_worth_another_try() {
        let db = |text: &str| Error::Database(sea_orm::DbErr::Custom(text.to_owned()));
        assert!(is_transient(&db("error returned from database: deadlock detected")));
        assert!(is_transient(&db("could not serialize access due to concurrent update")));
        assert!(is_transient(&db("(code: 5) database is locked")));
        assert!(!is_transient(&db("UNIQUE constraint failed: outbox.id")));
        assert!(!is_transient(&Error::NotFound { what: "message" }));
    }

    /// Requests are writing, five of them waiting: a write of the background (delivery, the
    /// engine) gets the writer after at most one of them, not after all five.
    #[tokio::test]
    async fn a_background_write_waits_for_at_most_one_request_write() {
        use std::sync::{Arc, Mutex};
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/t.db?mode=rwc", dir.path().display())).await.unwrap();
        db.execute_unprepared("CREATE TABLE log (who TEXT)").await.unwrap();
        let background = db.background();
        let under_way = background.begin_write().await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let write = |db: Db, who: &'static str| {
            let order = order.clone();
            tokio::spawn(async move {
                let txn = db.begin_write().await.unwrap();
                order.lock().unwrap().push(who);
                txn.execute_unprepared(&format!("INSERT INTO log VALUES ('{who}')")).await.unwrap();
                txn.commit().await.unwrap();
            })
        };
        let settle = || async {
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
        };
        let mut tasks: Vec<_> = (0..5).map(|_| write(db.clone(), "request")).collect();
        settle().await;
        tasks.push(write(background.clone(), "background"));
        settle().await;
        under_way.commit().await.unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 6);
        assert!(order.iter().position(|w| *w == "background").unwrap() <= 1, "{order:?}");
    }
}
