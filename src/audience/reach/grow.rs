//! Growing the second channel: whom to ask for which address (the add-channel page and the
//! `ask_channel` workflow step ask the same people).

use crate::core::values::{Channel, ChannelState, SubscriberStatus, stored};
use crate::store::entities::subscriber;

/// The confirmations of channels added on the add-channel page carry this in place of a landing
/// page's slug (and no list).
pub const ADD_CHANNEL_PAGE: &str = "add-channel";

/// What the page asks a subscriber for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A mobile number: they are reached by email only.
    Phone,
    /// An email address: they are reached by phone only.
    Email,
}

/// What to ask `person` for: the kind of address they lack, when the channel they have is live
/// (a subscriber who withdrew everything is asked nothing).
pub fn ask(person: &subscriber::Model) -> Option<Ask> {
    let live = |c: Channel| matches!(stored(person.state_of(c), ChannelState::None), ChannelState::Subscribed);
    if stored(&person.status, SubscriberStatus::Active) != SubscriberStatus::Active {
        return None;
    }
    let has_phone_channel = live(Channel::Sms) || live(Channel::Whatsapp);
    match (live(Channel::Email), has_phone_channel) {
        (true, false) => Some(Ask::Phone),
        (false, true) => Some(Ask::Email),
        _ => None,
    }
}
