//! Landing pages: the funnel's front door. A page is declared under `pages:` in a file in
//! `workflows/` (see `docs/workflows.md`), served at `/p/{slug}`, and turns a visitor into a
//! subscriber with consent they can prove.
//!
//! - the checked page (what the public side renders and the signup obeys) is
//!   [`crate::workflow::page`], declared in workflow files,
//! - [`attribution`]: UTM parameters, the referrer and the click ids social networks add,
//! - [`signup`]: a submission written (or refused) in one transaction; confirmations,
//! - [`guard`]: the form token, the honeypot, the per-IP rate limit.

pub mod add_channel;
pub mod attribution;
pub mod guard;
pub mod preferences;
pub mod signup;
