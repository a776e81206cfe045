//! The business behind every page and email: its name, postal address, logo, accent colour,
//! privacy policy and support contact, as the settings give them (`business_name`, …).

use serde::Serialize;

/// Where the landing pages' accent colour comes from when `accent_color` is not set.
pub const DEFAULT_ACCENT: &str = "#2f6fed";

/// The business's identity, set once and shown by every page and email (templates see it as
/// `business`: `business.name`, `business.postal_address`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Business {
    pub name: String,
    /// The postal address every marketing email must carry (CAN-SPAM), one line or several.
    pub postal_address: Option<String>,
    pub logo_url: Option<String>,
    /// `#rrggbb`.
    pub accent_color: String,
    pub privacy_url: Option<String>,
    pub support_email: Option<String>,
}

impl Default for Business {
    fn default() -> Self {
        Self {
            name: "ownlist".into(),
            postal_address: None,
            logo_url: None,
            accent_color: DEFAULT_ACCENT.into(),
            privacy_url: None,
            support_email: None,
        }
    }
}

impl Business {
    /// What templates see as `business`.
    pub fn context(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// `#rgb` or `#rrggbb`, given back as `#rrggbb` in lower case.
pub fn parse_color(text: &str) -> Option<String> {
    let hex = text.trim().strip_prefix('#')?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        6 => Some(format!("#{}", hex.to_ascii_lowercase())),
        3 => Some(hex.chars().flat_map(|c| [c, c]).fold(String::from("#"), |mut s, c| {
            s.push(c.to_ascii_lowercase());
            s
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_hex_in_two_lengths() {
        assert_eq!(parse_color("#2F6FED").as_deref(), Some("#2f6fed"));
        assert_eq!(parse_color(" #0aF ").as_deref(), Some("#00aaff"));
        for bad in ["2f6fed", "#2f6fe", "#ggg", "red", "#", ""] {
            assert_eq!(parse_color(bad), None, "{bad}");
        }
    }

    #[test]
    fn templates_see_every_field() {
        let context = Business { postal_address: Some("Via Roma 1, Milano".into()), ..Business::default() }.context();
        assert_eq!(context["name"], "ownlist");
        assert_eq!(context["postal_address"], "Via Roma 1, Milano");
        assert_eq!(context["accent_color"], DEFAULT_ACCENT);
        assert!(context["logo_url"].is_null());
    }
}
