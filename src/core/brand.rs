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

/// White or near-black, whichever reads on `background` (`#rrggbb`) with a contrast of at least
/// 4.5 (WCAG AA); white when both do.
pub fn ink_on(background: &str) -> &'static str {
    let channel = |i: usize| {
        let v = background.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or(0);
        let c = f64::from(v) / 255.0;
        if c <= 0.040_45 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
    };
    let luminance = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
    if 1.05 / (luminance + 0.05) >= 4.5 { "#ffffff" } else { "#111418" }
}

impl Business {
    /// The text colour on the accent colour (buttons): see [`ink_on`].
    pub fn accent_ink(&self) -> &'static str {
        ink_on(&self.accent_color)
    }

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
    fn button_text_reads_on_any_accent_colour() {
        assert_eq!(ink_on("#2f6fed"), "#ffffff");
        assert_eq!(ink_on("#1747b8"), "#ffffff");
        assert_eq!(ink_on("#ffd400"), "#111418");
        assert_eq!(ink_on("#ffffff"), "#111418");
        assert_eq!(ink_on("#000000"), "#ffffff");
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
