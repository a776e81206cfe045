//! The `subscribers` table: a person, their addresses and channel states.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "subscribers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub email: Option<String>,
    #[sea_orm(unique)]
    pub email_key: Option<String>,
    #[sea_orm(unique)]
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub timezone: Option<String>,
    pub locale: Option<String>,
    pub attributes: Json,
    pub status: String,
    pub email_state: String,
    pub sms_state: String,
    /// WhatsApp, to `phone`: consent of its own.
    pub whatsapp_state: String,
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub referrer: Option<String>,
    pub landing_page: Option<String>,
    /// utm_content and utm_term of the first touch.
    pub content: Option<String>,
    pub term: Option<String>,
    /// The click id a network added to the first touch's link, as `fbclid=…`.
    pub click_id: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The stored state of a channel's consent (`subscribed`, `pending`, …).
    pub fn state_of(&self, channel: crate::core::values::Channel) -> &str {
        use crate::core::values::Channel;
        match channel {
            Channel::Email => &self.email_state,
            Channel::Sms => &self.sms_state,
            Channel::Whatsapp => &self.whatsapp_state,
        }
    }

    /// The address a channel reaches them at: the email address, or the phone number (SMS and
    /// WhatsApp).
    pub fn address_of(&self, channel: crate::core::values::Channel) -> Option<&str> {
        use crate::core::values::Channel;
        match channel {
            Channel::Email => self.email.as_deref(),
            Channel::Sms | Channel::Whatsapp => self.phone.as_deref(),
        }
    }
}

impl ActiveModel {
    /// Sets a channel's consent state.
    pub fn set_state(&mut self, channel: crate::core::values::Channel, state: crate::core::values::ChannelState) {
        use crate::core::values::Channel;
        use sea_orm::ActiveValue::Set;
        let value = Set(state.as_str().to_owned());
        match channel {
            Channel::Email => self.email_state = value,
            Channel::Sms => self.sms_state = value,
            Channel::Whatsapp => self.whatsapp_state = value,
        }
    }
}
