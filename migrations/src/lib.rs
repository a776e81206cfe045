//! The schema of ownlist, as ordered migrations that serve SQLite and PostgreSQL alike.
//!
//! Migrations are written with sea-query's schema builder (never backend-specific SQL), so one
//! set of files creates the same tables on both databases. A migration, once released, is never
//! edited: a change to the schema is a new file appended to [`Migrator::migrations`].

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_foundation;
mod m20261121_000002_workflows;
mod m20261121_000003_delivery;
mod m20261122_000004_pages;
mod m20261122_000005_operations;
mod m20261122_000006_scale_out;
mod m20261122_000007_funnel;
mod m20261122_000008_admin_sessions;
mod m20261122_000009_outbox_indexes;
mod m20261201_000010_packed_bodies;
mod m20261202_000011_body_dictionaries;
mod m20261207_000012_declared_pages;
mod m20261207_000013_token_roles;
mod m20261207_000014_outage_readiness;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_foundation::Migration),
            Box::new(m20261121_000002_workflows::Migration),
            Box::new(m20261121_000003_delivery::Migration),
            Box::new(m20261122_000004_pages::Migration),
            Box::new(m20261122_000005_operations::Migration),
            Box::new(m20261122_000006_scale_out::Migration),
            Box::new(m20261122_000007_funnel::Migration),
            Box::new(m20261122_000008_admin_sessions::Migration),
            Box::new(m20261122_000009_outbox_indexes::Migration),
            Box::new(m20261201_000010_packed_bodies::Migration),
            Box::new(m20261202_000011_body_dictionaries::Migration),
            Box::new(m20261207_000012_declared_pages::Migration),
            Box::new(m20261207_000013_token_roles::Migration),
            Box::new(m20261207_000014_outage_readiness::Migration),
        ]
    }
}
