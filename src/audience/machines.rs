//! Machine or person: the verdict on an open or a click, and its reason.
//!
//! Most pixel loads and many link fetches of 2026 are not people: Apple Mail Privacy Protection
//! loads every image on arrival, Google and Yahoo fetch through image proxies, and mail gateways
//! (Safe Links, Mimecast, Proofpoint, Barracuda) follow every link seconds after delivery. Each
//! fetch is judged on what it shows: its method, user agent and network, how soon after sending
//! it came, whether it followed several links of the message at once or the hidden link no
//! reader sees, and whether anything opened the message before a quick click. The networks,
//! user agents and timings are data (`templates/machines.toml`, shipped built in), so an operator
//! can keep them current without a new release.

use std::net::IpAddr;
use std::path::Path;

use chrono::Duration;
use serde::{Deserialize, Serialize};

/// The shipped file, built in.
pub const SHIPPED: &str = include_str!("../../templates/machines.toml");
/// Its name in a templates folder.
pub const FILE: &str = "machines.toml";

/// Who fetched: a person, or a machine and why it is taken for one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "lowercase")]
pub enum Verdict {
    Human,
    Machine(String),
}

impl Verdict {
    pub fn is_human(&self) -> bool {
        matches!(self, Self::Human)
    }

    /// `human` or `machine`, as events store it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Human => "human",
            Self::Machine(_) => "machine",
        }
    }

    /// The reason of a machine verdict.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Human => None,
            Self::Machine(reason) => Some(reason),
        }
    }
}

/// What was fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fetched {
    /// The open pixel.
    Open,
    /// A tracked link.
    Click,
    /// The hidden link that no reader sees.
    Trap,
}

/// A fetch of a message's pixel or link, with what is known about it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fetch {
    pub fetched: Option<Fetched>,
    /// A HEAD request (checks a link without reading it).
    #[serde(default)]
    pub head: bool,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub ip: Option<IpAddr>,
    /// Seconds since the message was sent (handed to the relay), when known.
    #[serde(default)]
    pub seconds_after_sending: Option<f64>,
    /// Other links of the same message followed within the burst window before this one.
    #[serde(default)]
    pub other_links_just_before: u32,
    /// Anything (a person or a proxy) loaded the pixel or followed a link of it before.
    #[serde(default)]
    pub opened_before: bool,
    /// The hidden link of the same message was followed shortly before.
    #[serde(default)]
    pub trap_just_before: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Timing {
    scanner_seconds: f64,
    burst_seconds: f64,
    unopened_click_seconds: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    #[serde(default)]
    networks: Vec<String>,
    #[serde(default)]
    user_agents: Vec<String>,
    #[serde(default)]
    exact_user_agents: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    timing: Timing,
    #[serde(default)]
    privacy_proxy: Vec<RawSource>,
    #[serde(default)]
    link_scanner: Vec<RawSource>,
    #[serde(default)]
    robot: Vec<RawSource>,
}

/// A proxy, scanner or robot, as it is recognised.
#[derive(Debug, Clone)]
struct Source {
    name: String,
    networks: Vec<ipnet::IpNet>,
    /// Lower case.
    user_agents: Vec<String>,
    exact_user_agents: Vec<String>,
}

impl Source {
    fn network(&self, ip: Option<IpAddr>) -> bool {
        ip.is_some_and(|ip| self.networks.iter().any(|net| net.contains(&ip)))
    }

    fn agent(&self, agent: &str, lower: &str) -> bool {
        self.exact_user_agents.iter().any(|a| a == agent.trim())
            || self.user_agents.iter().any(|a| !a.is_empty() && lower.contains(a.as_str()))
    }
}

/// The networks, user agents and timings machines are recognised by.
#[derive(Debug, Clone)]
pub struct Machines {
    scanner_after: f64,
    burst: f64,
    unopened_click_after: f64,
    proxies: Vec<Source>,
    scanners: Vec<Source>,
    robots: Vec<Source>,
}

impl Default for Machines {
    fn default() -> Self {
        Self::built_in()
    }
}

/// A problem in a machines file, with where it is.
pub use crate::core::i18n::FileProblem;

impl Machines {
    /// The shipped file.
    pub fn built_in() -> Self {
        // The shipped file is checked by a test; were it broken, nothing would be a machine.
        Self::parse(SHIPPED).unwrap_or_else(|_| Self::empty())
    }

    fn empty() -> Self {
        Self {
            scanner_after: 0.0,
            burst: 0.0,
            unopened_click_after: 0.0,
            proxies: Vec::new(),
            scanners: Vec::new(),
            robots: Vec::new(),
        }
    }

    /// `dir/machines.toml` when there is one (else the shipped file); a file that does not
    /// parse is reported, and the shipped one stands.
    pub fn load(dir: &Path) -> (Self, Option<FileProblem>) {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Self::built_in(), None),
            Err(e) => {
                let problem = FileProblem { file: path, line: 1, column: 1, message: format!("cannot be read: {e}") };
                return (Self::built_in(), Some(problem));
            }
        };
        match Self::parse(&text) {
            Ok(machines) => (machines, None),
            Err((offset, message)) => {
                let (line, column) = crate::core::i18n::line_column(&text, offset);
                (Self::built_in(), Some(FileProblem { file: path, line, column, message }))
            }
        }
    }

    /// Parses a machines file; on a mistake, its byte offset and what is wrong.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let raw: Raw = toml::from_str(text)
            .map_err(|e: toml::de::Error| (e.span().map(|s| s.start).unwrap_or(0), e.message().to_owned()))?;
        let sources = |raw: Vec<RawSource>| -> Result<Vec<Source>, (usize, String)> {
            raw.into_iter()
                .map(|s| {
                    let networks = s
                        .networks
                        .iter()
                        .map(|n| {
                            n.parse::<ipnet::IpNet>().map_err(|_| {
                                let at = text.find(&format!("\"{n}\"")).unwrap_or(0);
                                (at, format!("'{n}' is not a network such as 17.0.0.0/8 (in '{}')", s.name))
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    Ok(Source {
                        networks,
                        user_agents: s.user_agents.iter().map(|a| a.to_lowercase()).collect(),
                        exact_user_agents: s.exact_user_agents,
                        name: s.name,
                    })
                })
                .collect()
        };
        let t = raw.timing;
        for (name, value) in [
            ("scanner_seconds", t.scanner_seconds),
            ("burst_seconds", t.burst_seconds),
            ("unopened_click_seconds", t.unopened_click_seconds),
        ] {
            if !(0.0..=86_400.0).contains(&value) {
                let at = text.find(name).unwrap_or(0);
                return Err((at, format!("{name} must be between 0 and 86400 seconds")));
            }
        }
        Ok(Self {
            scanner_after: t.scanner_seconds,
            burst: t.burst_seconds,
            unopened_click_after: t.unopened_click_seconds,
            proxies: sources(raw.privacy_proxy)?,
            scanners: sources(raw.link_scanner)?,
            robots: sources(raw.robot)?,
        })
    }

    /// The window in which clicks on different links of one message make a burst.
    pub fn burst(&self) -> Duration {
        Duration::milliseconds((self.burst * 1000.0) as i64)
    }

    /// The verdict on a fetch.
    pub fn judge(&self, fetch: &Fetch) -> Verdict {
        let machine = |reason: String| Verdict::Machine(reason);
        let what = fetch.fetched.unwrap_or(Fetched::Click);
        if what == Fetched::Trap {
            return machine("followed the hidden link no reader sees".into());
        }
        let agent = fetch.user_agent.as_deref().unwrap_or_default();
        let lower = agent.to_lowercase();
        if what == Fetched::Open
            && let Some(proxy) = self.proxies.iter().find(|p| p.agent(agent, &lower) || p.network(fetch.ip))
        {
            return machine(format!("privacy proxy: {}", proxy.name));
        }
        if let Some(scanner) = self.scanners.iter().find(|s| s.agent(agent, &lower) || s.network(fetch.ip)) {
            return machine(format!("link scanner: {}", scanner.name));
        }
        if let Some(robot) = self.robots.iter().find(|r| r.agent(agent, &lower)) {
            return machine(format!("user agent of {}", robot.name));
        }
        if agent.trim().is_empty() {
            return machine("no user agent".into());
        }
        if fetch.head {
            return machine("a HEAD request, which checks a link without reading it".into());
        }
        if what == Fetched::Click {
            if fetch.trap_just_before {
                return machine("the hidden link of the message was followed just before".into());
            }
            if fetch.other_links_just_before > 0 {
                return machine(format!(
                    "{} links of the message followed within {} s",
                    fetch.other_links_just_before + 1,
                    self.burst
                ));
            }
            if let Some(after) = fetch.seconds_after_sending {
                if after <= self.scanner_after {
                    return machine(format!("followed {} s after the message was sent", after.round()));
                }
                if !fetch.opened_before && after <= self.unopened_click_after {
                    return machine(format!(
                        "followed {} s after the message was sent, with no open before",
                        after.round()
                    ));
                }
            }
        }
        Verdict::Human
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click(agent: &str, ip: &str, after: f64) -> Fetch {
        Fetch {
            fetched: Some(Fetched::Click),
            user_agent: Some(agent.into()),
            ip: Some(ip.parse().unwrap()),
            seconds_after_sending: Some(after),
            opened_before: true,
            ..Fetch::default()
        }
    }

    const SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";

    #[test]
    fn the_shipped_file_parses() {
        let machines = Machines::parse(SHIPPED).unwrap();
        assert!(machines.proxies.len() >= 3 && machines.scanners.len() >= 4 && !machines.robots.is_empty());
    }

    #[test]
    fn each_sign_gives_its_reason() {
        let m = Machines::built_in();
        assert_eq!(m.judge(&click(SAFARI, "93.44.1.2", 600.0)), Verdict::Human);
        let apple = Fetch { fetched: Some(Fetched::Open), ..click("Mozilla/5.0", "17.58.1.1", 2.0) };
        assert_eq!(m.judge(&apple), Verdict::Machine("privacy proxy: Apple Mail Privacy Protection".into()));
        // A person browsing through iCloud Private Relay clicks from Apple's network too.
        assert_eq!(m.judge(&click(SAFARI, "17.58.1.1", 600.0)), Verdict::Human);
        let safe_links = click(SAFARI, "40.94.12.3", 600.0);
        assert_eq!(m.judge(&safe_links), Verdict::Machine("link scanner: Microsoft Defender Safe Links".into()));
        let fast = m.judge(&click(SAFARI, "93.44.1.2", 4.0));
        assert_eq!(fast, Verdict::Machine("followed 4 s after the message was sent".into()));
        let unopened = Fetch { opened_before: false, ..click(SAFARI, "93.44.1.2", 30.0) };
        assert!(m.judge(&unopened).reason().unwrap().contains("no open before"));
        let head = Fetch { head: true, ..click(SAFARI, "93.44.1.2", 600.0) };
        assert!(m.judge(&head).reason().unwrap().contains("HEAD"));
        let burst = Fetch { other_links_just_before: 2, ..click(SAFARI, "93.44.1.2", 600.0) };
        assert_eq!(m.judge(&burst), Verdict::Machine("3 links of the message followed within 1 s".into()));
        let trap = Fetch { fetched: Some(Fetched::Trap), ..click(SAFARI, "93.44.1.2", 600.0) };
        assert!(!m.judge(&trap).is_human());
        assert!(!m.judge(&click("python-requests/2.32", "93.44.1.2", 600.0)).is_human());
        assert_eq!(m.judge(&click("", "93.44.1.2", 600.0)), Verdict::Machine("no user agent".into()));
    }

    /// Recorded requests of privacy proxies, gateways' link scanners, link previewers, scripts
    /// and people on phones and laptops, each labelled: the shipped file's precision (of what it
    /// calls a machine, how much is one) and recall (of the machines, how many it catches).
    /// `cargo test --lib machines::tests::the_corpus -- --nocapture` prints the table.
    #[test]
    fn the_corpus_is_classified_with_high_precision_and_recall() {
        #[derive(Deserialize)]
        struct Recorded {
            source: String,
            label: String,
            fetch: Fetch,
        }
        let machines = Machines::built_in();
        let corpus: Vec<Recorded> = include_str!("../../tests/fixtures/engagement-corpus.jsonl")
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let (mut tp, mut fp, mut fn_, mut tn) = (0, 0, 0, 0);
        let mut by_source: std::collections::BTreeMap<&str, (u32, u32)> = Default::default();
        for r in &corpus {
            let verdict = machines.judge(&r.fetch);
            let right = (r.label == "machine") != verdict.is_human();
            match (r.label.as_str(), verdict.is_human()) {
                ("machine", false) => tp += 1,
                ("machine", true) => fn_ += 1,
                (_, false) => fp += 1,
                _ => tn += 1,
            }
            let entry = by_source.entry(&r.source).or_default();
            entry.0 += u32::from(right);
            entry.1 += 1;
            if !right {
                println!("wrong: {} {:?} → {verdict:?}", r.source, r.fetch.user_agent);
            }
        }
        let precision = f64::from(tp) / f64::from(tp + fp);
        let recall = f64::from(tp) / f64::from(tp + fn_);
        println!("{:<44} right", "source");
        for (source, (right, all)) in &by_source {
            println!("{source:<44} {right}/{all}");
        }
        println!(
            "{} requests ({} by machines): precision {precision:.3}, recall {recall:.3} \
             ({tp} machines caught, {fn_} missed, {fp} people taken for machines, {tn} people)",
            corpus.len(),
            tp + fn_
        );
        assert!(corpus.len() >= 60);
        assert!(precision >= 0.95, "precision {precision:.3}");
        assert!(recall >= 0.95, "recall {recall:.3}");
    }

    #[test]
    fn a_mistake_in_the_file_is_reported_at_its_line_and_the_shipped_file_stands() {
        let dir = tempfile::tempdir().unwrap();
        let broken = SHIPPED.replace("\"40.94.0.0/16\"", "\"40.94.0.0/66\"");
        std::fs::write(dir.path().join(FILE), &broken).unwrap();
        let (machines, problem) = Machines::load(dir.path());
        let problem = problem.unwrap();
        let line = broken.lines().position(|l| l.contains("40.94.0.0/66")).unwrap() as u64 + 1;
        assert_eq!(problem.line, line, "{problem:?}");
        assert!(problem.message.contains("40.94.0.0/66"), "{}", problem.message);
        assert!(!machines.judge(&click(SAFARI, "40.94.12.3", 600.0)).is_human(), "the shipped file stands");

        std::fs::write(dir.path().join(FILE), "[timing]\nscanner_seconds = 5\nburst_seconds = 1\n").unwrap();
        let (_, problem) = Machines::load(dir.path());
        assert!(problem.unwrap().message.contains("unopened_click_seconds"));

        let mine = "[timing]\nscanner_seconds = 0\nburst_seconds = 1\nunopened_click_seconds = 0\n\n\
                    [[link_scanner]]\nname = \"Our gateway\"\nnetworks = [\"203.0.113.0/24\"]\n";
        std::fs::write(dir.path().join(FILE), mine).unwrap();
        let (machines, problem) = Machines::load(dir.path());
        assert_eq!(problem, None);
        assert_eq!(
            machines.judge(&click(SAFARI, "203.0.113.9", 600.0)),
            Verdict::Machine("link scanner: Our gateway".into())
        );
        assert_eq!(
            machines.judge(&click(SAFARI, "40.94.12.3", 2.0)),
            Verdict::Human,
            "the operator's file replaces ours"
        );
    }
}
