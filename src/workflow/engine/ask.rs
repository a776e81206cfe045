//! The `ask_channel` step: asks those reached on one channel only for a second one, in their
//! language, by a message on the channel they have that links the add-channel page
//! (`{{ add_channel_url }}`): an email asking someone reached by email only for a mobile number,
//! a text (or WhatsApp message) asking someone reached by phone only for an email address.
//! Everyone else passes the step (the timeline says why).

use sea_orm::DatabaseTransaction;
use serde_json::json;

use super::*;
use crate::audience::reach::grow::{Ask, ask};
use crate::core::error::Result;
use crate::core::values::{Channel, ChannelState, stored};
use crate::workflow::program::Node;

impl Engine {
    pub(super) async fn ask_channel(
        &self,
        txn: &DatabaseTransaction,
        run: &mut Run<'_>,
        node: &Node,
        facts: &mut Facts,
        wanted: Channel,
    ) -> Result<Flow> {
        let person = facts.subscriber(txn).await?.clone();
        let wanted = if wanted == Channel::Email { Ask::Email } else { Ask::Phone };
        if ask(&person) != Some(wanted) {
            let reason = match wanted {
                Ask::Phone => "they are not reached by email only: nothing to ask",
                Ask::Email => "they are not reached by phone only: nothing to ask",
            };
            run.note(decision::STEP_SKIPPED, json!({"step": node.step.id, "reason": reason}));
            return Ok(Flow::Goto(node.next.clone()));
        }
        let templates = self.templates();
        let translations = templates.translations();
        let lang = translations.choose(&[person.locale.as_deref()], None);
        let words = translations.words(&lang);
        let business = self.stationery.business["name"].as_str().unwrap_or_default().to_owned();
        // The words go in as they are (a `{{` of theirs would be read as a template's).
        let word = |key: &str| {
            words.get(key).cloned().unwrap_or_default().replace("{business}", &business).replace(['{', '}'], "")
        };
        match wanted {
            Ask::Phone => {
                let subject = word("ask_phone_subject");
                let body = format!("{}\n\n{{{{ add_channel_url }}}}", word("ask_phone_text"));
                self.message(txn, run, node, facts, Channel::Email, Some(&subject), MessageBody::Inline(&body)).await
            }
            Ask::Email => {
                let body = format!("{} {{{{ add_channel_url }}}}", word("ask_email_text"));
                let live = |c: Channel| stored(person.state_of(c), ChannelState::None) == ChannelState::Subscribed;
                let channel = if live(Channel::Sms) { Channel::Sms } else { Channel::Whatsapp };
                self.message(txn, run, node, facts, channel, None, MessageBody::Inline(&body)).await
            }
        }
    }
}
