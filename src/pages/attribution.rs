//! Where a visitor came from: UTM parameters, the referrer, and the click ids social networks
//! and ad platforms add to outbound links, reduced to a `source` such as `instagram`.

use std::collections::BTreeMap;

use crate::audience::subscribers::Attribution;
use crate::rollups::funnel::HOSTS;

/// Query parameters a landing page keeps (and carries through its form as hidden fields).
pub const PARAMS: &[&str] =
    &["utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term", "fbclid", "igshid", "ttclid", "gclid"];

/// Click ids, in the order they are looked at, with the network that adds each.
const CLICK_IDS: &[(&str, &str)] =
    &[("igshid", "instagram"), ("ttclid", "tiktok"), ("fbclid", "facebook"), ("gclid", "google")];

/// Common spellings of a source in `utm_source`, and the name used here.
const ALIASES: &[(&str, &str)] =
    &[("ig", "instagram"), ("insta", "instagram"), ("fb", "facebook"), ("tt", "tiktok"), ("twitter", "x")];

const SEARCH: &[&str] = &["google", "bing", "duckduckgo"];

/// The source a referrer's host means (`l.instagram.com` → `instagram`), or the host itself.
fn source_of_host(host: &str) -> String {
    let host = host.trim_start_matches("www.").to_ascii_lowercase();
    for (known, source) in HOSTS {
        if host == *known || host.ends_with(&format!(".{known}")) {
            return (*source).to_owned();
        }
    }
    // google.de, google.co.uk, …
    if let Some(name) = SEARCH.iter().find(|name| host.split('.').next() == Some(**name)) {
        return (*name).to_owned();
    }
    host
}

fn social(source: &str) -> bool {
    HOSTS.iter().any(|(_, s)| *s == source) && !SEARCH.contains(&source)
}

/// One touch: the page's query parameters (`params`), the `Referer` header and the page's own
/// URL (`landing`). utm_source wins; then a referrer from a known network; then a click id.
pub fn touch(params: &BTreeMap<String, String>, referrer: Option<&str>, landing: &str) -> Attribution {
    // A visitor writes these: control characters (a NUL, which PostgreSQL cannot store) go.
    let printable = |v: &str| v.chars().filter(|c| !c.is_control()).collect::<String>().trim().to_owned();
    let get = |name: &str| params.get(name).map(|v| printable(v)).filter(|v| !v.is_empty());
    let referrer = referrer.map(printable).filter(|r| !r.is_empty()).map(|r| r.chars().take(2000).collect::<String>());
    let referrer_host =
        referrer.as_deref().and_then(|r| url::Url::parse(r).ok()).and_then(|u| u.host_str().map(str::to_owned));
    let click = CLICK_IDS.iter().find_map(|(name, network)| get(name).map(|value| (*name, *network, value)));
    let from_utm = get("utm_source").map(|s| {
        let lower = s.to_ascii_lowercase();
        ALIASES.iter().find(|(alias, _)| *alias == lower).map_or(lower, |(_, name)| (*name).to_owned())
    });
    let from_referrer = referrer_host.as_deref().map(source_of_host);
    let source = from_utm
        .or_else(|| from_referrer.clone().filter(|s| social(s)))
        .or_else(|| click.as_ref().map(|(_, network, _)| (*network).to_owned()))
        .or(from_referrer);
    let medium = get("utm_medium").map(|m| m.to_ascii_lowercase()).or_else(|| match (&click, source.as_deref()) {
        (Some(("gclid", _, _)), _) => Some("cpc".to_owned()),
        (Some(_), _) => Some("social".to_owned()),
        (None, Some(s)) if social(s) => Some("social".to_owned()),
        (None, Some(s)) if SEARCH.contains(&s) => Some("organic".to_owned()),
        (None, Some(_)) => Some("referral".to_owned()),
        (None, None) => None,
    });
    let cut = |v: Option<String>, n: usize| v.map(|v| v.chars().take(n).collect::<String>());
    Attribution {
        source: cut(source, 100),
        medium: cut(medium, 100),
        campaign: cut(get("utm_campaign"), 200),
        referrer,
        landing_page: Some(landing.chars().take(2000).collect()),
        content: cut(get("utm_content"), 200),
        term: cut(get("utm_term"), 200),
        click_id: cut(click.map(|(name, _, value)| format!("{name}={value}")), 600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn utm_source_wins_and_aliases_are_named() {
        let t = touch(&params(&[("utm_source", "IG"), ("utm_campaign", "spring")]), None, "https://x/p/guide");
        assert_eq!((t.source.as_deref(), t.campaign.as_deref()), (Some("instagram"), Some("spring")));
    }

    #[test]
    fn click_ids_and_referrers_name_the_network() {
        let t = touch(&params(&[("fbclid", "IwAR1")]), Some("https://l.instagram.com/"), "https://x/p/g");
        assert_eq!(t.source.as_deref(), Some("instagram"), "Instagram's outbound links carry fbclid too");
        assert_eq!(t.click_id.as_deref(), Some("fbclid=IwAR1"));
        assert_eq!(t.medium.as_deref(), Some("social"));
        let t = touch(&params(&[("fbclid", "IwAR1")]), None, "https://x/p/g");
        assert_eq!(t.source.as_deref(), Some("facebook"));
        let t = touch(&params(&[("ttclid", "E.C.P")]), None, "https://x/p/g");
        assert_eq!(t.source.as_deref(), Some("tiktok"));
        let t = touch(&params(&[("gclid", "Cj0")]), None, "https://x/p/g");
        assert_eq!((t.source.as_deref(), t.medium.as_deref()), (Some("google"), Some("cpc")));
        let t = touch(&params(&[]), Some("https://www.google.co.uk/"), "https://x/p/g");
        assert_eq!((t.source.as_deref(), t.medium.as_deref()), (Some("google"), Some("organic")));
        let t = touch(&params(&[]), Some("https://blog.example.org/post"), "https://x/p/g");
        assert_eq!((t.source.as_deref(), t.medium.as_deref()), (Some("blog.example.org"), Some("referral")));
        let t = touch(&params(&[]), None, "https://x/p/g");
        assert_eq!((t.source, t.medium), (None, None), "a direct visit has no source");
    }
}
