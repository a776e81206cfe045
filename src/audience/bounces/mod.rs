//! Bounces and complaints, from wherever they come: the generic webhook, the providers' own
//! formats (SES, SendGrid, Postmark, Mailgun), and bounce mail (DSN, ARF) sent back to the
//! per-message return path. Each becomes a [`Report`]; a batch is applied in one transaction.

pub mod mail;
pub mod providers;
pub mod signatures;

use chrono::{DateTime, Utc};

use crate::audience::subscribers::{Bounce, apply_bounce, id_by_email};
use crate::core::error::Result;
use crate::core::values::EmailAddress;
use crate::store::Db;

/// What happened to an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The address does not exist, or refuses mail for good.
    Hard,
    /// A temporary failure (a full mailbox, a greylisting server): counted; enough of them in a
    /// while make the address bounced.
    Soft,
    /// The recipient marked the mail as spam.
    Complaint,
}

/// One report about one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub address: String,
    pub kind: Kind,
    pub reason: String,
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub applied: u64,
    /// Reports about addresses no subscriber has.
    pub unknown: u64,
}

/// Checks every address first (the index of the first that is not one, and why); then applies
/// the whole batch in one transaction: all of it, or on an error none of it.
pub async fn apply(
    db: &Db,
    now: DateTime<Utc>,
    reports: Vec<Report>,
) -> Result<std::result::Result<Applied, (usize, String)>> {
    let mut checked = Vec::with_capacity(reports.len());
    for (i, report) in reports.into_iter().enumerate() {
        match EmailAddress::parse(&report.address) {
            Ok(address) => checked.push((address, report)),
            Err(problem) => return Ok(Err((i, problem.to_string()))),
        }
    }
    let mut done = Applied::default();
    let txn = db.begin_write().await?;
    for (address, report) in checked {
        let Some(id) = id_by_email(&txn, &address).await? else {
            done.unknown += 1;
            continue;
        };
        let kind = match report.kind {
            Kind::Hard => Bounce::Hard,
            Kind::Soft => Bounce::Soft,
            Kind::Complaint => Bounce::Complaint,
        };
        let reason: String = report.reason.chars().filter(|c| !c.is_control()).take(500).collect();
        apply_bounce(&txn, now, id, kind, &reason).await?;
        done.applied += 1;
    }
    txn.commit().await?;
    Ok(Ok(done))
}
