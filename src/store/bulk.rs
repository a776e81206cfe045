//! Multi-row inserts and updates for bulk paths (imports, the workflow engine), rendered for the
//! backend in use.
//!
//! On PostgreSQL a batch is one statement with bound parameters. On SQLite binding tens of
//! thousands of values per batch costs more than the insert itself, so the batch is rendered as
//! literal SQL with the exact encodings sqlx uses when it binds (UUID as a 16-byte blob, time as
//! RFC 3339 text, JSON as text): rows written either way read back the same. Strings are escaped
//! by sea-query's SQLite writer; a value SQLite cannot take as a literal (a NUL character) makes
//! the statement fail, and callers then fall back to bound statements.

use std::fmt::Write;

use chrono::SecondsFormat;
use sea_orm::sea_query::{QueryBuilder, SqliteQueryBuilder, Value};
use sea_orm::{
    ActiveModelTrait, DbBackend, EntityName, EntityTrait, IdenStatic, Iterable, PrimaryKeyToColumn, QueryTrait,
    Statement,
};

/// Whether a conflicting row (same primary key) is an error or silently kept as it is. (On
/// SQLite, `Ignore` is `INSERT OR IGNORE`: a row breaking any constraint but a foreign key is
/// skipped; callers build their rows, so only duplicates can occur.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDuplicate {
    Fail,
    Ignore,
}

/// Runs a statement from this module; returns how many rows it changed. Literal SQL (SQLite)
/// runs unprepared, so it is never cached as a prepared statement.
pub async fn execute(conn: &impl sea_orm::ConnectionTrait, statement: Statement) -> Result<u64, sea_orm::DbErr> {
    let result = if statement.values.is_none() {
        conn.execute_unprepared(&statement.sql).await?
    } else {
        conn.execute_raw(statement).await?
    };
    Ok(result.rows_affected())
}

/// `rows` made a multiple of `multiple` long by repeating the last row, so that statements
/// built for them come in few shapes, each prepared once and then reused from the statement
/// cache. Only for statements a repeated row leaves as they are: `INSERT OR IGNORE` (the copy is
/// ignored) and [`update_bound_statement`] (the row is set to the same values twice).
pub fn padded<T: Clone>(mut rows: Vec<T>, multiple: usize) -> Vec<T> {
    if let Some(last) = rows.last().cloned() {
        let short = (multiple - rows.len() % multiple) % multiple;
        rows.extend(std::iter::repeat_n(last, short));
    }
    rows
}

/// `statements` as one (SQLite runs a string of statements in one call, binding their
/// parameters in order), so a transaction sends them to the database's thread once rather
/// than waiting for each in turn while it holds the write lock. Other backends: as they are.
pub fn joined(backend: DbBackend, statements: Vec<Statement>) -> Vec<Statement> {
    if backend != DbBackend::Sqlite || statements.len() < 2 {
        return statements;
    }
    let mut sql = String::with_capacity(statements.iter().map(|s| s.sql.len() + 2).sum());
    let mut values = Vec::new();
    for statement in statements {
        if !sql.is_empty() {
            sql.push_str(";\n");
        }
        sql.push_str(&statement.sql);
        values.extend(statement.values.map(|v| v.0).unwrap_or_default());
    }
    vec![Statement::from_sql_and_values(backend, sql, values)]
}

/// `ON CONFLICT DO NOTHING` without a target: a row breaking any unique constraint is skipped,
/// as SQLite's `INSERT OR IGNORE` does. (sea-orm's `on_conflict_do_nothing` names the primary
/// key, so on PostgreSQL a message whose idempotency key was taken failed the whole statement.)
fn any_conflict() -> sea_orm::sea_query::OnConflict {
    sea_orm::sea_query::OnConflict::new().do_nothing().to_owned()
}

/// One INSERT for all `rows` (callers keep batches under the backend's parameter limits).
pub fn insert_statement<A>(backend: DbBackend, rows: Vec<A>, on_duplicate: OnDuplicate) -> Option<Statement>
where
    A: ActiveModelTrait,
{
    if rows.is_empty() {
        return None;
    }
    if backend != DbBackend::Sqlite {
        let insert = <A::Entity as EntityTrait>::insert_many(rows);
        return Some(match on_duplicate {
            OnDuplicate::Fail => insert.build(backend),
            OnDuplicate::Ignore => insert.on_conflict(any_conflict()).build(backend),
        });
    }
    Some(Statement::from_string(DbBackend::Sqlite, sqlite_insert(rows, on_duplicate)))
}

/// One INSERT for all `rows` with bound parameters on every backend: for rows carrying large
/// text (message bodies, their links) binding is cheaper on SQLite than a literal, which its
/// parser reads byte by byte. The statement is prepared once and cached per batch size.
pub fn insert_bound_statement<A>(backend: DbBackend, rows: Vec<A>, on_duplicate: OnDuplicate) -> Option<Statement>
where
    A: ActiveModelTrait,
{
    if rows.is_empty() {
        return None;
    }
    let insert = <A::Entity as EntityTrait>::insert_many(rows);
    Some(match (on_duplicate, backend) {
        (OnDuplicate::Fail, _) => insert.build(backend),
        // As in `sqlite_insert`: OR IGNORE needs no statement journal, ON CONFLICT does.
        (OnDuplicate::Ignore, DbBackend::Sqlite) => {
            let mut statement = insert.build(backend);
            statement.sql = statement.sql.replacen("INSERT INTO", "INSERT OR IGNORE INTO", 1);
            statement
        }
        (OnDuplicate::Ignore, _) => insert.on_conflict(any_conflict()).build(backend),
    })
}

/// `INSERT INTO "t" ("a", …) VALUES (…), (…)` with every value written as a literal.
fn sqlite_insert<A: ActiveModelTrait>(rows: Vec<A>, on_duplicate: OnDuplicate) -> String {
    let entity = A::Entity::default();
    let columns: Vec<<A::Entity as EntityTrait>::Column> = <A::Entity as EntityTrait>::Column::iter().collect();
    let names: Vec<String> = columns.iter().map(|c| format!("\"{}\"", c.as_str())).collect();
    let mut sql = String::with_capacity(rows.len() * 64 * columns.len());
    // OR IGNORE rather than ON CONFLICT DO NOTHING: a statement that cannot fail half-way needs
    // no statement journal, which is most of the cost of a large insert into a big table.
    let verb = if on_duplicate == OnDuplicate::Ignore { "INSERT OR IGNORE" } else { "INSERT" };
    let _ = write!(sql, "{verb} INTO \"{}\" ({}) VALUES ", entity.table_name(), names.join(", "));
    for (index, mut row) in rows.into_iter().enumerate() {
        sql.push_str(if index == 0 { "(" } else { ", (" });
        for (position, column) in columns.iter().enumerate() {
            if position > 0 {
                sql.push_str(", ");
            }
            write_literal(&mut sql, row.take(*column).into_value());
        }
        sql.push(')');
    }
    sql
}

/// One UPDATE that sets `columns` of every row in `rows` (matched by primary key) to the row's
/// values: `WITH v(…) AS (VALUES …) UPDATE t SET c = v.c … FROM v WHERE t.key = v.key`.
/// Only the named columns are written, so indexes over the others are left alone (an upsert
/// rewrites every column and so every index). Rows missing from the table are skipped.
pub fn update_statement<A>(
    backend: DbBackend,
    rows: Vec<A>,
    columns: &[<A::Entity as EntityTrait>::Column],
) -> Option<Statement>
where
    A: ActiveModelTrait,
{
    update(backend, rows, columns, false)
}

/// [`update_statement`] with bound parameters on SQLite too: cheaper for a batch of a few
/// hundred rows carrying text (delivery answers: replies, errors), which a literal would make
/// SQLite's parser read byte by byte.
pub fn update_bound_statement<A>(
    backend: DbBackend,
    rows: Vec<A>,
    columns: &[<A::Entity as EntityTrait>::Column],
) -> Option<Statement>
where
    A: ActiveModelTrait,
{
    update(backend, rows, columns, true)
}

fn update<A>(
    backend: DbBackend,
    rows: Vec<A>,
    columns: &[<A::Entity as EntityTrait>::Column],
    bind: bool,
) -> Option<Statement>
where
    A: ActiveModelTrait,
{
    if rows.is_empty() || columns.is_empty() {
        return None;
    }
    let entity = A::Entity::default();
    let keys: Vec<<A::Entity as EntityTrait>::Column> =
        <A::Entity as EntityTrait>::PrimaryKey::iter().map(PrimaryKeyToColumn::into_column).collect();
    let all: Vec<_> = keys.iter().chain(columns.iter()).copied().collect();
    let names: Vec<String> = all.iter().map(|c| format!("\"{}\"", c.as_str())).collect();
    let postgres = backend == DbBackend::Postgres;
    let mut values = Vec::new();
    let mut sql = String::with_capacity(rows.len() * 48 * all.len());
    let _ = write!(sql, "WITH v ({}) AS (VALUES ", names.join(", "));
    for (index, mut row) in rows.into_iter().enumerate() {
        sql.push_str(if index == 0 { "(" } else { ", (" });
        for (position, column) in all.iter().enumerate() {
            if position > 0 {
                sql.push_str(", ");
            }
            let value = row.take(*column).into_value();
            if postgres {
                // Placeholders in VALUES have no type of their own: cast each to its column's.
                let cast = value.as_ref().map_or("text", postgres_type);
                values.push(value.unwrap_or(Value::String(None)));
                let _ = write!(sql, "CAST(${} AS {cast})", values.len());
            } else if bind {
                values.push(value.unwrap_or(Value::String(None)));
                sql.push('?');
            } else {
                write_literal(&mut sql, value);
            }
        }
        sql.push(')');
    }
    let table = entity.table_name();
    let sets: Vec<String> = names[keys.len()..].iter().map(|n| format!("{n} = v.{n}")).collect();
    let matches: Vec<String> = names[..keys.len()].iter().map(|n| format!("\"{table}\".{n} = v.{n}")).collect();
    // On SQLite, OR IGNORE spares a statement journal: the statement cannot fail half-way.
    let or = if postgres { "" } else { "OR IGNORE " };
    let _ = write!(sql, ") UPDATE {or}\"{table}\" SET {} FROM v WHERE {}", sets.join(", "), matches.join(" AND "));
    Some(if postgres || bind {
        Statement::from_sql_and_values(backend, sql, values)
    } else {
        Statement::from_string(backend, sql)
    })
}

/// The PostgreSQL type a value binds as.
fn postgres_type(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "boolean",
        Value::Int(_) => "integer",
        Value::BigInt(_) => "bigint",
        Value::Uuid(_) => "uuid",
        Value::ChronoDateTimeUtc(_) => "timestamptz",
        Value::Json(_) => "jsonb",
        _ => "text",
    }
}

/// Writes one value as SQLite would store it when sqlx binds it.
fn write_literal(sql: &mut String, value: Option<Value>) {
    match value {
        None
        | Some(
            Value::Bool(None)
            | Value::Int(None)
            | Value::BigInt(None)
            | Value::String(None)
            | Value::Uuid(None)
            | Value::Json(None)
            | Value::ChronoDateTimeUtc(None),
        ) => sql.push_str("NULL"),
        Some(Value::Bool(Some(b))) => sql.push_str(if b { "1" } else { "0" }),
        Some(Value::Int(Some(n))) => {
            let _ = write!(sql, "{n}");
        }
        Some(Value::BigInt(Some(n))) => {
            let _ = write!(sql, "{n}");
        }
        Some(Value::String(Some(text))) => quote(sql, &text),
        Some(Value::Uuid(Some(id))) => {
            sql.push_str("x'");
            sql.push_str(&hex::encode(id.as_bytes()));
            sql.push('\'');
        }
        Some(Value::ChronoDateTimeUtc(Some(time))) => {
            sql.push('\'');
            sql.push_str(&time.to_rfc3339_opts(SecondsFormat::AutoSi, false));
            sql.push('\'');
        }
        Some(Value::Json(Some(json))) => quote(sql, &json.to_string()),
        // Any other type: sea-query's own SQLite literal, after the same encoding rules.
        Some(other) => sql.push_str(&SqliteQueryBuilder.value_to_string(&sqlite_literal(other))),
    }
}

/// A string literal: SQLite escapes only the quote, by doubling it.
fn quote(sql: &mut String, text: &str) {
    sql.push('\'');
    for (index, part) in text.split('\'').enumerate() {
        if index > 0 {
            sql.push_str("''");
        }
        sql.push_str(part);
    }
    sql.push('\'');
}

/// A value as sqlx's SQLite driver would bind it.
fn sqlite_literal(value: Value) -> Value {
    match value {
        Value::Uuid(id) => Value::Bytes(id.map(|id| id.as_bytes().to_vec())),
        Value::ChronoDateTimeUtc(time) => Value::String(time.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, false))),
        Value::Json(json) => Value::String(json.map(|j| j.to_string())),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use sea_orm::ActiveValue::Set;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::store::entities::event;

    #[test]
    fn padding_repeats_the_last_row_up_to_a_multiple() {
        assert_eq!(padded(Vec::<u8>::new(), 32), Vec::<u8>::new());
        assert_eq!(padded(vec![1, 2, 3], 4), [1, 2, 3, 3]);
        assert_eq!(padded(vec![1, 2, 3, 4], 4), [1, 2, 3, 4]);
        assert_eq!(padded(vec![7], 32).len(), 32);
    }

    #[test]
    fn sqlite_literals_use_the_bound_encodings_and_escape_quotes() {
        let id = Uuid::from_u128(0x0102);
        let row = event::ActiveModel {
            id: Set(id),
            subscriber_id: Set(id),
            kind: Set("it's".into()),
            data: Set(json!({"a": "b'c"})),
            created_at: Set(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()),
        };
        let statement = insert_statement(DbBackend::Sqlite, vec![row], OnDuplicate::Ignore).unwrap();
        let sql = statement.to_string();
        assert!(sql.contains("x'00000000000000000000000000000102'"), "{sql}");
        assert!(!sql.contains("'00000000-0000"), "UUIDs are blobs, never text: {sql}");
        assert!(!sql.contains("'00000000-0000"), "UUIDs are blobs, never text: {sql}");
        assert!(sql.contains("'it''s'"), "{sql}");
        assert!(sql.contains(r#"'{"a":"b''c"}'"#), "{sql}");
        assert!(sql.contains("'2026-01-02T03:04:05+00:00'"), "{sql}");
        assert!(
            sql.starts_with(
                "INSERT OR IGNORE INTO \"events\" (\"id\", \"subscriber_id\", \"kind\", \"data\", \"created_at\") VALUES ("
            ),
            "{sql}"
        );
        assert!(insert_statement::<event::ActiveModel>(DbBackend::Sqlite, vec![], OnDuplicate::Fail).is_none());
    }
}
