//! `ownlist doctor`: checks a deployment and prints a checklist, with the fix for each failure.
//!
//! The database and its schema; each SMTP relay (connect, TLS, EHLO, AUTH: nothing is sent); the
//! sending domain's DNS (SPF covering the relays, the DKIM record matching the configured key,
//! DMARC present and aligned, MX, reverse DNS of the relays); `base_url` over HTTPS; the bulk
//! sender rules of Gmail, Yahoo and Outlook point by point; the SMS providers' credentials. DNS
//! goes through the resolver given (`--resolver`), else the system's.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use crate::config::Config;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the checklist.
#[derive(Debug, Clone)]
pub struct Check {
    pub status: Status,
    pub what: String,
    pub fix: Option<String>,
}

#[derive(Default)]
struct List(Vec<Check>);

impl List {
    fn ok(&mut self, what: impl Into<String>) {
        self.0.push(Check { status: Status::Ok, what: what.into(), fix: None });
    }
    fn warn(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Check { status: Status::Warn, what: what.into(), fix: Some(fix.into()) });
    }
    fn fail(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Check { status: Status::Fail, what: what.into(), fix: Some(fix.into()) });
    }
    /// `ok` when `good`, else a failure with its fix.
    fn check(
        &mut self,
        good: bool,
        what: impl Into<String>,
        failed: impl Into<String>,
        fix: impl Into<String>,
    ) -> bool {
        if good {
            self.ok(what);
        } else {
            self.fail(failed, fix);
        }
        good
    }
}

/// DNS lookups through one resolver.
struct Dns {
    resolver: hickory_resolver::Resolver<TokioRuntimeProvider>,
}

impl Dns {
    fn new(server: Option<SocketAddr>) -> Result<Self, String> {
        let builder = match server {
            Some(server) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
                name_server.connections = vec![udp, tcp];
                hickory_resolver::Resolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), vec![name_server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => hickory_resolver::Resolver::builder_tokio().map_err(|e| format!("no system resolver: {e}"))?,
        };
        let mut builder = builder;
        if server.is_some() {
            // The named server answers everything (not /etc/hosts).
            builder.options_mut().use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        }
        builder.options_mut().timeout = Duration::from_secs(5);
        builder.options_mut().attempts = 2;
        builder.options_mut().cache_size = 0;
        Ok(Self { resolver: builder.build().map_err(|e| format!("cannot start the resolver: {e}"))? })
    }

    fn fqdn(name: &str) -> String {
        format!("{}.", name.trim_end_matches('.'))
    }

    async fn txt(&self, name: &str) -> Vec<String> {
        let Ok(found) = self.resolver.txt_lookup(Self::fqdn(name)).await else { return Vec::new() };
        found
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => {
                    Some(txt.txt_data.iter().map(|part| String::from_utf8_lossy(part).into_owned()).collect::<String>())
                }
                _ => None,
            })
            .collect()
    }

    async fn mx(&self, name: &str) -> Vec<String> {
        let Ok(found) = self.resolver.mx_lookup(Self::fqdn(name)).await else { return Vec::new() };
        found
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some(mx.exchange.to_string().trim_end_matches('.').to_owned()),
                _ => None,
            })
            .collect()
    }

    async fn ips(&self, name: &str) -> Vec<IpAddr> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return vec![ip];
        }
        match self.resolver.lookup_ip(Self::fqdn(name)).await {
            Ok(found) => found.iter().collect(),
            Err(_) => Vec::new(),
        }
    }

    async fn ptr(&self, ip: IpAddr) -> Vec<String> {
        let Ok(found) = self.resolver.reverse_lookup(ip).await else { return Vec::new() };
        found
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(ptr) => Some(ptr.0.to_string().trim_end_matches('.').to_owned()),
                _ => None,
            })
            .collect()
    }

    /// The SPF record of `domain` (`v=spf1 …`), if it has exactly one.
    async fn spf(&self, domain: &str) -> Option<String> {
        let records: Vec<String> =
            self.txt(domain).await.into_iter().filter(|t| t.to_ascii_lowercase().starts_with("v=spf1")).collect();
        (records.len() == 1).then(|| records[0].clone())
    }

    /// Whether `domain`'s SPF lets `ip` send: its `ip4`/`ip6`/`a`/`mx` mechanisms, following
    /// `include` and `redirect` (at most 10 lookups, as SPF allows).
    async fn spf_covers(&self, domain: &str, ip: IpAddr) -> bool {
        let mut lookups = 0;
        let mut pending = vec![domain.to_owned()];
        let mut seen = BTreeSet::new();
        while let Some(current) = pending.pop() {
            if !seen.insert(current.clone()) || lookups > 10 {
                continue;
            }
            lookups += 1;
            let Some(record) = self.spf(&current).await else { continue };
            for term in record.split_whitespace().skip(1) {
                let term = term.trim_start_matches(['+', '?', '~']);
                if term.starts_with('-') {
                    continue;
                }
                let (name, value) = term.split_once([':', '=']).unwrap_or((term, ""));
                let target = if value.is_empty() {
                    current.clone()
                } else {
                    value.split('/').next().unwrap_or(value).to_owned()
                };
                let covered = match name.to_ascii_lowercase().as_str() {
                    "ip4" | "ip6" => value
                        .parse::<ipnet::IpNet>()
                        .map(|net| net.contains(&ip))
                        .or_else(|_| value.parse::<IpAddr>().map(|one| one == ip))
                        .unwrap_or(false),
                    "a" => self.ips(&target).await.contains(&ip),
                    "mx" => {
                        let mut any = false;
                        for host in self.mx(&target).await {
                            any |= self.ips(&host).await.contains(&ip);
                        }
                        any
                    }
                    "include" | "redirect" => {
                        pending.push(value.to_owned());
                        false
                    }
                    _ => false,
                };
                if covered {
                    return true;
                }
            }
        }
        false
    }
}

/// This machine's address towards the internet (the source of a route out; nothing is sent).
fn outbound_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("8.8.8.8:53").ok()?;
    socket.local_addr().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
}

/// The organisational domain, roughly: the last two labels (DMARC's relaxed alignment).
fn organisation(domain: &str) -> String {
    let labels: Vec<&str> = domain.trim_end_matches('.').split('.').collect();
    labels[labels.len().saturating_sub(2)..].join(".").to_ascii_lowercase()
}

/// The public key a DKIM record should publish for the configured key: `(p=, k=)`.
fn dkim_public_key(key: &str) -> Result<(Vec<u8>, &'static str), String> {
    let pem_body = |text: &str| -> Result<Vec<u8>, String> {
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body.trim()).map_err(|_| "the key file is not PEM".to_owned())
    };
    if key.contains("BEGIN RSA PRIVATE KEY") {
        let pair = ring::rsa::KeyPair::from_der(&pem_body(key)?).map_err(|e| format!("not an RSA key: {e}"))?;
        use ring::signature::KeyPair;
        Ok((pair.public_key().as_ref().to_vec(), "rsa"))
    } else {
        let seed = if key.contains("BEGIN PRIVATE KEY") {
            // PKCS#8 Ed25519: the 32-byte seed is the last 32 bytes.
            let der = pem_body(key)?;
            der.get(der.len().saturating_sub(32)..).map(<[u8]>::to_vec).unwrap_or_default()
        } else {
            STANDARD.decode(key.trim()).map_err(|_| "the key is not base64".to_owned())?
        };
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| format!("not an Ed25519 key: {e}"))?;
        use ring::signature::KeyPair;
        Ok((pair.public_key().as_ref().to_vec(), "ed25519"))
    }
}

/// The key bytes a DKIM record's `p=` holds, comparable with [`dkim_public_key`]'s: for RSA, the
/// RSAPublicKey inside a SubjectPublicKeyInfo (or the RSAPublicKey as it is).
fn published_key(p: &str) -> Option<Vec<u8>> {
    use x509_cert::der::Decode;
    let der = STANDARD.decode(p.split_whitespace().collect::<String>()).ok()?;
    match x509_cert::spki::SubjectPublicKeyInfoRef::from_der(&der) {
        Ok(spki) => Some(spki.subject_public_key.raw_bytes().to_vec()),
        Err(_) => Some(der),
    }
}

fn tag<'a>(record: &'a str, name: &str) -> Option<&'a str> {
    record
        .split(';')
        .map(str::trim)
        .find_map(|t| t.split_once('=').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

/// Runs every check; prints the checklist; true when nothing failed.
pub async fn run(config: &Config, resolver: Option<SocketAddr>) -> anyhow::Result<bool> {
    let mut list = List::default();
    let db = database(config, &mut list).await;
    let relays = relays(config, &mut list).await;
    let dns = Dns::new(resolver).map_err(anyhow::Error::msg)?;
    let domain = config.email_from.email.domain().to_ascii_lowercase();
    let mut ips = BTreeSet::new();
    for (host, _) in &relays {
        for ip in dns.ips(host).await {
            // A relay on this machine sends from this machine's own address: that is the one
            // SPF and reverse DNS must cover.
            match (ip.is_loopback(), outbound_address()) {
                (true, Some(own)) => {
                    list.ok(format!("relay {host} is on this machine: its mail leaves from {own}"));
                    ips.insert(own);
                }
                _ => {
                    ips.insert(ip);
                }
            }
        }
    }
    let rules = dns_checks(config, &dns, &domain, &ips, &mut list).await;
    let https = base_url(config, &mut list).await;
    let complaints = match &db {
        Some(db) => complaint_rate(db).await,
        None => None,
    };
    bulk_rules(&relays, rules, https, complaints, &mut list);
    sms(config, &mut list).await;

    println!("ownlist doctor: {}", config.email_from);
    let (mut ok, mut warn, mut fail) = (0, 0, 0);
    for check in &list.0 {
        let mark = match check.status {
            Status::Ok => {
                ok += 1;
                "ok  "
            }
            Status::Warn => {
                warn += 1;
                "warn"
            }
            Status::Fail => {
                fail += 1;
                "FAIL"
            }
        };
        println!("  {mark}  {}", check.what);
        if let Some(fix) = &check.fix {
            println!("        fix: {fix}");
        }
    }
    println!("{} checks: {ok} ok, {warn} to look at, {fail} failed", list.0.len());
    Ok(fail == 0)
}

/// Checks the database and its schema; the connection, for the checks that read it.
async fn database(config: &Config, list: &mut List) -> Option<crate::store::Db> {
    let shown = crate::config::redact(&config.database_url);
    let db = match crate::store::Db::connect(&config.database_url).await {
        Err(e) => {
            list.fail(
                format!("database {shown}: {e}"),
                "check database_url (OWNLIST_DATABASE_URL) and that the server runs",
            );
            return None;
        }
        Ok(db) => db,
    };
    match db.pending_migrations().await {
        Ok(pending) if pending.is_empty() => list.ok(format!("database {shown}: reachable, schema up to date")),
        Ok(pending) => list.fail(
            format!("database {shown}: {} migration(s) pending: {}", pending.len(), pending.join(", ")),
            "run `ownlist migrate` (serve does it at start)",
        ),
        Err(e) => {
            list.fail(format!("database {shown}: cannot read its schema: {e}"), "check the database user's rights")
        }
    }
    Some(db)
}

/// Each relay probed; returns each one's host and whether it is encrypted.
async fn relays(config: &Config, list: &mut List) -> Vec<(String, bool)> {
    let mut found = Vec::new();
    if config.smtp_relays.is_empty() {
        list.warn(
            "no SMTP relay: email is written to data/mail/ and never sent",
            "set smtp_url (OWNLIST_SMTP_URL) to your relay, e.g. smtp://user:password@smtp.example.com:587?tls=required",
        );
    }
    for url in &config.smtp_relays {
        let relay = match crate::delivery::email::Relay::from_url(url) {
            Ok(relay) => relay,
            Err(problem) => {
                list.fail(format!("relay: {problem}"), "fix the URL in smtp_url or smtp_relays");
                continue;
            }
        };
        let (host, encrypted) = relay.host_and_encryption();
        match relay.probe().await {
            Ok(()) => list.ok(format!(
                "relay {}: connects, {}greets, logs in where it has credentials",
                relay.name,
                if encrypted { "TLS, " } else { "" }
            )),
            Err(problem) => list.fail(
                format!("relay {}: {problem}", relay.name),
                "check the relay's host, port, TLS mode (?tls=required, smtps://) and credentials",
            ),
        }
        found.push((host, encrypted));
    }
    found
}

/// What the DNS checks found, for the bulk-sender rules.
#[derive(Default)]
struct Authenticated {
    spf: bool,
    dkim: bool,
    dmarc: bool,
    aligned: bool,
    ptr: bool,
}

async fn dns_checks(
    config: &Config,
    dns: &Dns,
    domain: &str,
    ips: &BTreeSet<IpAddr>,
    list: &mut List,
) -> Authenticated {
    let mut found = Authenticated::default();
    if domain == "localhost" || domain.parse::<IpAddr>().is_ok() {
        list.fail(
            format!("the sender {} is not on a domain of yours", config.email_from.email),
            "set email_from (OWNLIST_EMAIL_FROM) to an address on your domain",
        );
        return found;
    }
    // SPF: the sender's domain, and the return path's when it differs.
    let return_domain =
        config.return_path_address().map(|a| a.domain().to_ascii_lowercase()).unwrap_or_else(|| domain.to_owned());
    let mut spf_ok = true;
    for d in BTreeSet::from([domain.to_owned(), return_domain.clone()]) {
        match dns.spf(&d).await {
            None => {
                spf_ok = false;
                list.fail(
                    format!("SPF: {d} has no SPF record (or more than one)"),
                    format!("publish one TXT record at {d}: \"v=spf1 include:YOUR-RELAY ~all\""),
                );
            }
            Some(record) => {
                let mut missing = Vec::new();
                for ip in ips {
                    if !dns.spf_covers(&d, *ip).await {
                        missing.push(ip.to_string());
                    }
                }
                if missing.is_empty() {
                    list.ok(format!("SPF: {d} lets the relays send ({record})"));
                } else {
                    spf_ok = false;
                    list.fail(
                        format!("SPF: {d} does not cover the relay address(es) {}", missing.join(", ")),
                        format!(
                            "add {} (or include: your relay's SPF) to \"{record}\"",
                            missing
                                .iter()
                                .map(|ip| if ip.contains(':') { format!("ip6:{ip}") } else { format!("ip4:{ip}") })
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                    );
                }
            }
        }
    }
    found.spf = spf_ok;
    // DKIM: the published key is the configured one.
    match &config.dkim {
        None => list.fail(
            "DKIM: messages are not signed",
            "make a key (`openssl genrsa -traditional -out dkim.pem 2048`), set dkim_domain, dkim_selector and dkim_key_file, and publish its public key (see docs/configuration.md)",
        ),
        Some(dkim) => {
            let name = format!("{}._domainkey.{}", dkim.selector, dkim.domain);
            let ours = std::fs::read_to_string(&dkim.key_file).map_err(|e| e.to_string()).and_then(|key| dkim_public_key(&key));
            let records = dns.txt(&name).await;
            let published = records.iter().find_map(|r| tag(r, "p").map(|p| (p.to_owned(), r.clone())));
            match (ours, published) {
                (Err(problem), _) => list.fail(format!("DKIM: the key file cannot be used: {problem}"), "check dkim_key_file"),
                (Ok(_), None) => list.fail(format!("DKIM: no key published at {name}"), format!("publish a TXT record at {name}: \"v=DKIM1; k=rsa; p=PUBLIC KEY (base64)\"")),
                (Ok((key, kind)), Some((p, _))) => {
                    found.dkim = list.check(
                        published_key(&p).as_deref() == Some(key.as_slice()),
                        format!("DKIM: {name} publishes the configured {kind} key"),
                        format!("DKIM: the key at {name} is not the configured one: mail would fail DKIM"),
                        format!("publish the public key of {} at {name} (k={kind}; p=base64 of its public key)", dkim.key_file.display()),
                    );
                }
            }
        }
    }
    // DMARC: present, and SPF or DKIM aligned with the From domain.
    let dmarc = [domain.to_owned(), organisation(domain)].into_iter().collect::<BTreeSet<_>>();
    let mut record = None;
    for d in &dmarc {
        if let Some(r) =
            dns.txt(&format!("_dmarc.{d}")).await.into_iter().find(|t| t.to_ascii_uppercase().starts_with("V=DMARC1"))
        {
            record = Some(r);
            break;
        }
    }
    let dkim_aligned =
        config.dkim.as_ref().is_some_and(|d| organisation(&d.domain) == organisation(domain)) && found.dkim;
    let spf_aligned = organisation(&return_domain) == organisation(domain) && found.spf;
    found.aligned = dkim_aligned || spf_aligned;
    match record {
        None => list.fail(
            format!("DMARC: no record at _dmarc.{domain}"),
            format!("publish a TXT record at _dmarc.{domain}: \"v=DMARC1; p=none; rua=mailto:dmarc@{domain}\""),
        ),
        Some(record) => {
            found.dmarc = true;
            list.check(
                found.aligned,
                format!("DMARC: {record}; {} aligned with {domain}", if dkim_aligned { "DKIM" } else { "SPF" }),
                format!("DMARC: {record}, but neither DKIM nor SPF passes aligned with {domain}"),
                "sign with dkim_domain on the sender's domain, or send from a return path on it whose SPF covers the relays",
            );
        }
    }
    // MX: replies and bounces reach the domain.
    for d in BTreeSet::from([domain.to_owned(), return_domain]) {
        let mx = dns.mx(&d).await;
        if mx.is_empty() {
            list.warn(
                format!("MX: {d} has no MX record: replies and bounce mail cannot reach it"),
                format!("publish an MX record for {d}"),
            );
        } else {
            list.ok(format!("MX: {d} → {}", mx.join(", ")));
        }
    }
    // Reverse DNS of the relays, confirmed forward.
    let mut ptr_ok = !ips.is_empty();
    for ip in ips {
        let names = dns.ptr(*ip).await;
        let mut confirmed = None;
        for name in &names {
            if dns.ips(name).await.contains(ip) {
                confirmed = Some(name.clone());
            }
        }
        match confirmed {
            Some(name) => list.ok(format!("reverse DNS: {ip} → {name} → {ip}")),
            None => {
                ptr_ok = false;
                list.fail(
                    format!("reverse DNS: the relay address {ip} has no PTR record that points back to it{}", if names.is_empty() { String::new() } else { format!(" ({})", names.join(", ")) }),
                    "ask whoever runs the relay's address (your host or provider) for a PTR record naming a host that resolves to it",
                );
            }
        }
    }
    found.ptr = ptr_ok;
    found
}

async fn base_url(config: &Config, list: &mut List) -> bool {
    let url = &config.base_url;
    if url.scheme() != "https" {
        list.fail(
            format!("base_url {url} is not HTTPS: unsubscribe, confirmation and tracking links go out as plain HTTP"),
            "serve behind a TLS-terminating proxy and set base_url (OWNLIST_BASE_URL) to its https:// address",
        );
        return false;
    }
    match own_client().get(format!("{}healthz", url)).send().await {
        Ok(answer) if answer.status().is_success() => {
            list.ok(format!("base_url {url} answers over HTTPS"));
            true
        }
        Ok(answer) => {
            list.fail(
                format!("base_url {url}healthz answers {}", answer.status()),
                "route the base URL to this service",
            );
            false
        }
        Err(e) => {
            list.fail(
                format!("base_url {url} cannot be reached: {e}"),
                "check the DNS name, the proxy and its certificate",
            );
            false
        }
    }
}

/// Spam complaints (consent withdrawn by a complaint) per email delivered over the last 30
/// days, when any was delivered.
async fn complaint_rate(db: &crate::store::Db) -> Option<f64> {
    use crate::store::entities::{consent, delivery_day};
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let since = chrono::Utc::now() - chrono::Duration::days(30);
    let complained = consent::Entity::find()
        .filter(consent::Column::Method.eq(crate::core::values::ConsentMethod::Complaint.as_str()))
        .filter(consent::Column::Granted.eq(false))
        .filter(consent::Column::CreatedAt.gte(since))
        .count(db.conn())
        .await
        .ok()?;
    let days = delivery_day::Entity::find()
        .filter(delivery_day::Column::Channel.eq(crate::core::values::OutboxChannel::Email))
        .filter(delivery_day::Column::Day.gte(crate::rollups::day_key(since.date_naive())))
        .all(db.conn())
        .await
        .ok()?;
    let delivered: i64 = days.iter().map(|d| d.sent).sum();
    (delivered > 0).then(|| complained as f64 / delivered as f64)
}

fn bulk_rules(relays: &[(String, bool)], found: Authenticated, https: bool, complaints: Option<f64>, list: &mut List) {
    let tls = !relays.is_empty()
        && relays.iter().all(|(host, encrypted)| *encrypted || host == "127.0.0.1" || host == "localhost");
    let rate = complaints.map_or("no mail delivered in 30 days".to_owned(), |r| format!("{:.3}%", r * 100.0));
    let rules: [(&str, bool, &str); 7] = [
        ("SPF passes for the sending domain", found.spf, "see SPF above"),
        ("DKIM signs every message", found.dkim, "see DKIM above"),
        ("DMARC is published (p=none at least)", found.dmarc, "see DMARC above"),
        ("the From domain aligns with SPF or DKIM", found.aligned, "see DMARC above"),
        (
            "one-click unsubscribe (RFC 8058) over HTTPS",
            https,
            "every message carries List-Unsubscribe-Post; base_url must be https://",
        ),
        ("the relays have forward-confirmed reverse DNS", found.ptr, "see reverse DNS above"),
        ("TLS to the relays", tls, "use ?tls=required or smtps:// in smtp_url"),
    ];
    for (rule, good, fix) in rules {
        list.check(
            good,
            format!("Gmail, Yahoo and Outlook bulk-sender rule: {rule}"),
            format!("Gmail, Yahoo and Outlook bulk-sender rule not met: {rule}"),
            fix,
        );
    }
    match complaints {
        Some(r) if r >= 0.003 => list.fail(
            format!("spam complaint rate over 30 days: {rate} (Gmail and Yahoo: below 0.3%, best below 0.1%)"),
            "send only to people who asked, honour unsubscribes at once, and stop mailing the unengaged",
        ),
        Some(r) if r >= 0.001 => list.warn(
            format!("spam complaint rate over 30 days: {rate} (best below 0.1%)"),
            "look at which broadcasts and steps draw complaints (their reports)",
        ),
        _ => list.ok(format!("spam complaint rate over 30 days: {rate} (below 0.1%)")),
    }
}

/// A client for the operator's own addresses (base_url, the SMS providers they configured),
/// which may well be private.
fn own_client() -> reqwest::Client {
    let anywhere: Vec<ipnet::IpNet> = ["0.0.0.0/0", "::/0"].iter().filter_map(|n| n.parse().ok()).collect();
    crate::delivery::webhook::guarded_client(std::sync::Arc::new(anywhere))
}

/// Twilio-compatible providers: their account is read with the credentials (nothing is sent).
async fn sms(config: &Config, list: &mut List) {
    use crate::config::SmsProviderConfig;
    for provider in &config.sms_providers {
        match provider {
            SmsProviderConfig::Twilio { base_url, account_sid, auth_token, .. } => {
                let url = format!(
                    "{}2010-04-01/Accounts/{account_sid}.json",
                    base_url.as_str().trim_end_matches('/').to_owned() + "/"
                );
                let what =
                    format!("SMS provider Twilio {} (account {account_sid})", base_url.host_str().unwrap_or_default());
                match own_client().get(&url).basic_auth(account_sid, Some(auth_token)).send().await {
                    Ok(answer) if answer.status().is_success() => {
                        list.ok(format!("{what}: the credentials are accepted"))
                    }
                    Ok(answer) => list.fail(
                        format!("{what}: the account answers {}", answer.status()),
                        "check twilio_account_sid and twilio_auth_token",
                    ),
                    Err(e) => {
                        list.fail(format!("{what}: cannot be reached: {e}"), "check twilio_base_url and the network")
                    }
                }
            }
            SmsProviderConfig::Http { url, .. } => list.warn(
                format!("SMS provider {url}: a generic provider cannot be checked without sending"),
                "send yourself a test text from the console",
            ),
        }
    }
}
