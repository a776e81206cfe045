//! SMS text: the GSM 03.38 alphabet and how many segments a text takes.

/// Whether every character of `text` is in the GSM 03.38 alphabet (basic or extension).
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| GSM_BASIC.contains(c) || GSM_EXTENDED.contains(c))
}

const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM_EXTENDED: &str = "^{}\\[~]|€\u{000C}";

/// How many SMS segments `text` takes: GSM-7 when every character is in the GSM 03.38 alphabet
/// (160 in one segment, 153 each when split; the extension characters take two), otherwise
/// UCS-2 (70, or 67 each; characters outside the BMP take two).
pub fn sms_segments(text: &str) -> u32 {
    let mut gsm_units = 0u32;
    let mut gsm = true;
    for c in text.chars() {
        if GSM_BASIC.contains(c) {
            gsm_units += 1;
        } else if GSM_EXTENDED.contains(c) {
            gsm_units += 2;
        } else {
            gsm = false;
            break;
        }
    }
    let (units, single, each) =
        if gsm { (gsm_units, 160, 153) } else { (text.chars().map(|c| c.len_utf16() as u32).sum(), 70, 67) };
    match units {
        0 => 1,
        n if n <= single => 1,
        n => n.div_ceil(each),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sms_segments_follow_gsm7_and_ucs2_limits() {
        assert_eq!(sms_segments(""), 1);
        assert_eq!(sms_segments(&"a".repeat(160)), 1);
        assert_eq!(sms_segments(&"a".repeat(161)), 2);
        assert_eq!(sms_segments(&"a".repeat(306)), 2);
        assert_eq!(sms_segments(&"a".repeat(307)), 3);
        assert_eq!(sms_segments(&"€".repeat(80)), 1, "extension characters take two");
        assert_eq!(sms_segments(&"€".repeat(81)), 2);
        assert_eq!(sms_segments(&"é".repeat(160)), 1, "é is in the GSM alphabet");
        assert_eq!(sms_segments(&"ç".repeat(70)), 1, "ç is not: UCS-2");
        assert_eq!(sms_segments(&"ç".repeat(71)), 2);
        assert_eq!(sms_segments(&"😀".repeat(35)), 1, "outside the BMP: two units each");
        assert_eq!(sms_segments(&"😀".repeat(36)), 2);
    }
}
