//! Lists: named audiences a subscriber joins, each with its own opt-in rule.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::core::error::{Error, FieldError, Result};
use crate::core::values::{MembershipStatus, normalize_text, validate_slug};
use crate::store::entities::{list, membership};
use crate::store::{Db, is_unique_violation};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewList {
    /// URL-safe identifier: lower-case letters, digits and dashes.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", max_length = 64)]
    pub slug: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    #[schema(max_length = 2000, pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$")]
    pub description: Option<String>,
    /// Whether signups through landing pages must confirm by email (default true).
    pub double_opt_in: Option<bool>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListPatch {
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", max_length = 64)]
    pub slug: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: Option<String>,
    /// `null` clears the description.
    #[serde(default, deserialize_with = "super::subscribers::present")]
    #[schema(value_type = Option<String>, max_length = 2000, pattern = "^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F-\\u009F]*$")]
    pub description: Option<Option<String>>,
    pub double_opt_in: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListView {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub description: Option<String>,
    pub double_opt_in: bool,
    pub members: MemberCounts,
    /// Joins and departures over the last 30 days (in the list of every list only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth: Option<Growth>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How a list changed over the last 30 days.
#[derive(Debug, Default, Clone, Serialize, utoipa::ToSchema)]
pub struct Growth {
    /// Members confirmed in that time (a single opt-in join is confirmed at once).
    pub joined: u64,
    /// Members who left in that time.
    pub left: u64,
}

/// How long [`Growth`] looks back.
pub const GROWTH_DAYS: i64 = 30;

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct MemberCounts {
    pub pending: u64,
    pub confirmed: u64,
    pub unsubscribed: u64,
}

fn check_name(name: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    match normalize_text(name, 200) {
        Ok(Some(name)) => Some(name),
        Ok(None) => {
            errors.push(FieldError::new("name", "is required"));
            None
        }
        Err(message) => {
            errors.push(FieldError::new("name", message));
            None
        }
    }
}

fn check_description(description: Option<&str>, errors: &mut Vec<FieldError>) -> Option<String> {
    match description.map(|d| normalize_text(d, 2000)) {
        Some(Ok(value)) => value,
        Some(Err(message)) => {
            errors.push(FieldError::new("description", message));
            None
        }
        None => None,
    }
}

fn slug_taken(slug: &str) -> Error {
    Error::Conflict {
        code: "list_exists",
        detail: format!("a list with slug '{slug}' already exists"),
        existing_id: None,
        field: Some("slug"),
    }
}

pub async fn create(db: &Db, now: DateTime<Utc>, input: NewList) -> Result<ListView> {
    let mut errors = Vec::new();
    if let Err(message) = validate_slug(&input.slug) {
        errors.push(FieldError::new("slug", message));
    }
    let name = check_name(&input.name, &mut errors);
    let description = check_description(input.description.as_deref(), &mut errors);
    let Some(name) = name.filter(|_| errors.is_empty()) else {
        return Err(Error::Invalid(errors));
    };
    let model = list::ActiveModel {
        id: Set(Uuid::now_v7()),
        slug: Set(input.slug.clone()),
        name: Set(name),
        description: Set(description),
        double_opt_in: Set(input.double_opt_in.unwrap_or(true)),
        created_at: Set(now),
        updated_at: Set(now),
    };
    let model = model
        .insert(db.conn())
        .await
        .map_err(|e| if is_unique_violation(&e) { slug_taken(&input.slug) } else { Error::Database(e) })?;
    Ok(view(model, MemberCounts::default()))
}

/// A list as a workflow file declares it (`lists:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub slug: String,
    pub name: String,
    pub description: Option<String>,
    pub double_opt_in: bool,
}

/// Creates the declared lists that are missing and brings the name, description and double
/// opt-in of the others to what is declared. Never deletes a list or touches its members.
/// Returns the slugs created and the slugs changed.
pub async fn declare(
    conn: &impl ConnectionTrait,
    now: DateTime<Utc>,
    declared: &[Declared],
) -> Result<(Vec<String>, Vec<String>)> {
    let (mut created, mut changed) = (Vec::new(), Vec::new());
    if declared.is_empty() {
        return Ok((created, changed));
    }
    let slugs: Vec<String> = declared.iter().map(|d| d.slug.clone()).collect();
    let existing: HashMap<String, list::Model> = list::Entity::find()
        .filter(list::Column::Slug.is_in(slugs))
        .all(conn)
        .await?
        .into_iter()
        .map(|m| (m.slug.clone(), m))
        .collect();
    for d in declared {
        match existing.get(&d.slug) {
            None => {
                list::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    slug: Set(d.slug.clone()),
                    name: Set(d.name.clone()),
                    description: Set(d.description.clone()),
                    double_opt_in: Set(d.double_opt_in),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(conn)
                .await?;
                created.push(d.slug.clone());
            }
            Some(m) if m.name != d.name || m.description != d.description || m.double_opt_in != d.double_opt_in => {
                let mut model: list::ActiveModel = m.clone().into();
                model.name = Set(d.name.clone());
                model.description = Set(d.description.clone());
                model.double_opt_in = Set(d.double_opt_in);
                model.updated_at = Set(now);
                model.update(conn).await?;
                changed.push(d.slug.clone());
            }
            Some(_) => {}
        }
    }
    Ok((created, changed))
}

pub async fn find(conn: &impl ConnectionTrait, slug: &str) -> Result<list::Model> {
    list::Entity::find().filter(list::Column::Slug.eq(slug)).one(conn).await?.ok_or(Error::NotFound { what: "list" })
}

pub async fn get(db: &Db, slug: &str) -> Result<ListView> {
    let model = find(db.conn(), slug).await?;
    let mut counts = member_counts(db.conn(), Some(model.id)).await?;
    let members = counts.remove(&model.id).unwrap_or_default();
    Ok(view(model, members))
}

pub async fn all(db: &Db) -> Result<Vec<ListView>> {
    let models = list::Entity::find().order_by_asc(list::Column::Slug).all(db.conn()).await?;
    let mut counts = member_counts(db.conn(), None).await?;
    Ok(models
        .into_iter()
        .map(|m| {
            let members = counts.remove(&m.id).unwrap_or_default();
            view(m, members)
        })
        .collect())
}

/// Every list with its member counts and its growth over the last [`GROWTH_DAYS`] days.
pub async fn all_with_growth(db: &Db, now: DateTime<Utc>) -> Result<Vec<ListView>> {
    let since = now - chrono::Duration::days(GROWTH_DAYS);
    let mut lists = all(db).await?;
    let count = |column: membership::Column| async move {
        let rows: Vec<(Uuid, i64)> = membership::Entity::find()
            .select_only()
            .column(membership::Column::ListId)
            .column_as(membership::Column::SubscriberId.count(), "count")
            .filter(column.gte(since))
            .group_by(membership::Column::ListId)
            .into_tuple()
            .all(db.conn())
            .await?;
        Ok::<HashMap<Uuid, u64>, Error>(rows.into_iter().map(|(id, n)| (id, u64::try_from(n).unwrap_or(0))).collect())
    };
    let joined = count(membership::Column::ConfirmedAt).await?;
    let left = count(membership::Column::UnsubscribedAt).await?;
    for list in &mut lists {
        let of = |counts: &HashMap<Uuid, u64>| counts.get(&list.id).copied().unwrap_or(0);
        list.growth = Some(Growth { joined: of(&joined), left: of(&left) });
    }
    Ok(lists)
}

pub async fn update(db: &Db, now: DateTime<Utc>, slug: &str, patch: ListPatch) -> Result<ListView> {
    let current = find(db.conn(), slug).await?;
    let mut errors = Vec::new();
    let mut model: list::ActiveModel = current.clone().into();
    if let Some(new_slug) = &patch.slug {
        match validate_slug(new_slug) {
            Ok(()) => model.slug = Set(new_slug.clone()),
            Err(message) => errors.push(FieldError::new("slug", message)),
        }
    }
    if let Some(name) = &patch.name
        && let Some(name) = check_name(name, &mut errors)
    {
        model.name = Set(name);
    }
    if let Some(description) = &patch.description {
        model.description = Set(check_description(description.as_deref(), &mut errors));
    }
    if let Some(double_opt_in) = patch.double_opt_in {
        model.double_opt_in = Set(double_opt_in);
    }
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    model.updated_at = Set(now);
    let updated = model.update(db.conn()).await.map_err(|e| {
        if is_unique_violation(&e) { slug_taken(patch.slug.as_deref().unwrap_or(slug)) } else { Error::Database(e) }
    })?;
    let mut counts = member_counts(db.conn(), Some(updated.id)).await?;
    let members = counts.remove(&updated.id).unwrap_or_default();
    Ok(view(updated, members))
}

/// Deletes a list and every membership in it; subscribers themselves stay.
pub async fn delete(db: &Db, slug: &str) -> Result<()> {
    let current = find(db.conn(), slug).await?;
    list::Entity::delete_by_id(current.id).exec(db.conn()).await?;
    Ok(())
}

/// Lists by slug, failing with the field named when one is unknown.
pub async fn resolve(conn: &impl ConnectionTrait, slugs: &[String], field: &str) -> Result<Vec<list::Model>> {
    if slugs.is_empty() {
        return Ok(Vec::new());
    }
    let found = list::Entity::find().filter(list::Column::Slug.is_in(slugs.iter().cloned())).all(conn).await?;
    let by_slug: HashMap<&str, &list::Model> = found.iter().map(|l| (l.slug.as_str(), l)).collect();
    let unknown: Vec<FieldError> = slugs
        .iter()
        .filter(|s| !by_slug.contains_key(s.as_str()))
        .map(|s| FieldError::new(field, format!("unknown list '{s}'")))
        .collect();
    if !unknown.is_empty() {
        return Err(Error::Invalid(unknown));
    }
    Ok(slugs.iter().filter_map(|s| by_slug.get(s.as_str()).map(|l| (*l).clone())).collect())
}

#[derive(Debug, FromQueryResult)]
struct CountRow {
    list_id: Uuid,
    status: String,
    count: i64,
}

async fn member_counts(conn: &impl ConnectionTrait, only: Option<Uuid>) -> Result<HashMap<Uuid, MemberCounts>> {
    let mut query = membership::Entity::find()
        .select_only()
        .column(membership::Column::ListId)
        .column(membership::Column::Status)
        .column_as(membership::Column::SubscriberId.count(), "count")
        .group_by(membership::Column::ListId)
        .group_by(membership::Column::Status);
    if let Some(id) = only {
        query = query.filter(membership::Column::ListId.eq(id));
    }
    let rows = query.into_model::<CountRow>().all(conn).await?;
    let mut counts: HashMap<Uuid, MemberCounts> = HashMap::new();
    for row in rows {
        let entry = counts.entry(row.list_id).or_default();
        let n = u64::try_from(row.count).unwrap_or(0);
        match row.status.parse::<MembershipStatus>() {
            Ok(MembershipStatus::Pending) => entry.pending += n,
            Ok(MembershipStatus::Confirmed) => entry.confirmed += n,
            Ok(MembershipStatus::Unsubscribed) => entry.unsubscribed += n,
            Err(_) => {}
        }
    }
    Ok(counts)
}

fn view(model: list::Model, members: MemberCounts) -> ListView {
    ListView {
        id: model.id,
        slug: model.slug,
        name: model.name,
        description: model.description,
        double_opt_in: model.double_opt_in,
        members,
        growth: None,
        created_at: model.created_at,
        updated_at: model.updated_at,
    }
}
