//! The `ownlist` binary as a newcomer and an operator use it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/dns.rs"]
mod dns;
#[path = "support/process.rs"]
mod process;
#[path = "support/small_disk.rs"]
mod small_disk;
#[path = "support/tools.rs"]
mod tools;
use process::Process;

fn ownlist(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ownlist"));
    command.current_dir(dir);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("OWNLIST_")) {
        command.env_remove(key);
    }
    command.env("OWNLIST_LOG", "warn");
    command
}

/// A fresh database for one CLI scenario: SQLite in the scenario's folder (the default), or, when
/// `OWNLIST_TEST_DATABASE_URL` is set, also a PostgreSQL database of its own, dropped afterwards.
struct Database {
    url: Option<String>,
    admin_url: Option<String>,
    name: String,
}

impl Database {
    fn all() -> Vec<Database> {
        let mut all = vec![Database { url: None, admin_url: None, name: "sqlite".into() }];
        if let Ok(admin_url) = std::env::var("OWNLIST_TEST_DATABASE_URL") {
            all.push(Database::postgres(&admin_url));
        }
        all
    }

    fn postgres(admin_url: &str) -> Database {
        let name = format!("ownlist_cli_{}", uuid::Uuid::now_v7().simple());
        let created =
            Command::new("psql").arg(admin_url).args(["-qc", &format!("CREATE DATABASE \"{name}\"")]).output();
        assert!(created.is_ok_and(|o| o.status.success()), "psql could not create {name}");
        let mut url = url::Url::parse(admin_url).unwrap();
        url.set_path(&format!("/{name}"));
        Database { url: Some(url.to_string()), admin_url: Some(admin_url.to_owned()), name }
    }

    /// The same database type again, empty.
    fn another(&self) -> Database {
        match &self.admin_url {
            Some(admin_url) => Database::postgres(admin_url),
            None => Database { url: None, admin_url: None, name: "sqlite".into() },
        }
    }

    fn ownlist(&self, dir: &Path) -> Command {
        let mut command = ownlist(dir);
        if let Some(url) = &self.url {
            command.env("OWNLIST_DATABASE_URL", url);
        }
        command
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(admin_url) = &self.admin_url {
            let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
            let _ = Command::new("psql").arg(admin_url).args(["-qc", &sql]).output();
        }
    }
}

/// Runs a command to its end, which must come within a minute: a command expected to refuse to
/// start that serves instead fails the test rather than hanging it.
fn run(command: &mut Command) -> Output {
    let child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut child = Process(child);
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut bytes).map(|_| bytes)
    });
    let err = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut bytes).map(|_| bytes)
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{command:?} still running after a minute");
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: out.join().unwrap().unwrap(), stderr: err.join().unwrap().unwrap() }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value, expected) in [
        ("OWNLIST_LISTEN", "localhost", "OWNLIST_LISTEN: 'localhost' is not an address like 127.0.0.1:8080"),
        (
            "OWNLIST_DATABASE_URL",
            "mysql://db",
            "OWNLIST_DATABASE_URL: 'mysql://db' is neither sqlite:… nor postgres://…",
        ),
        ("OWNLIST_BASE_URL", "ftp://x", "OWNLIST_BASE_URL: 'ftp://x' is not an http(s) URL"),
        ("OWNLIST_WORKFLOWS_DIR", "/no/such/dir", "OWNLIST_WORKFLOWS_DIR: cannot read directory '/no/such/dir'"),
        ("OWNLIST_SECRET", "short", "OWNLIST_SECRET: must be at least 32 characters"),
        ("OWNLIST_LISTN", "x", "OWNLIST_LISTN: unknown setting (did you mean OWNLIST_LISTEN?)"),
    ] {
        let output = run(ownlist(dir.path()).env(key, value));
        assert_eq!(output.status.code(), Some(2), "{key}");
        let stderr = text(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with(&format!("ownlist: {expected}")), "{stderr}");
    }
    std::fs::write(dir.path().join("ownlist.toml"), "listen = \"127.0.0.1:9999\"\nlisten_adress = 3\n").unwrap();
    let output = run(&mut ownlist(dir.path()));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr.contains("ownlist.toml:2:1: unknown field `listen_adress`"), "{stderr}");
    assert!(stderr.contains("did you mean `listen`?"), "{stderr}");
}

#[test]
fn with_no_configuration_it_serves_sqlite_and_says_how_to_get_a_token() {
    let dir = tempfile::tempdir().unwrap();
    // The one setting given is the port, so the test does not collide with anything on 8080.
    let mut child =
        Process(ownlist(dir.path()).env("OWNLIST_LISTEN", "127.0.0.1:0").stdout(Stdio::piped()).spawn().unwrap());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let address = first.split("http://").nth(1).unwrap().split('/').next().unwrap().to_owned();
    let mut printed = vec![first];
    while !printed.last().unwrap().contains("tokens create") && printed.len() < 10 {
        printed.push(lines.next().unwrap().unwrap());
    }
    let printed = printed.join("\n");
    assert!(printed.contains("ownlist is serving on http://127.0.0.1:"), "{printed}");
    assert!(printed.contains("ownlist.db"), "{printed}");
    assert!(printed.contains("ownlist tokens create admin"), "{printed}");
    assert!(dir.path().join("data/ownlist.db").exists());
    assert!(dir.path().join("data/secret").exists(), "the signing secret is generated on first run");

    let health = http_get(&address, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    child.kill().unwrap();
    child.wait().unwrap();

    let journal = Command::new("sqlite3").arg(dir.path().join("data/ownlist.db")).arg("PRAGMA journal_mode;").output();
    if let Ok(journal) = journal {
        assert_eq!(text(&journal.stdout).trim(), "wal");
    }
}

/// `bounce_smtp_listen` starts the bounce receiver beside the HTTP server: it greets, takes mail
/// for the return paths only, and relays nothing.
#[test]
fn serve_starts_the_bounce_receiver_when_asked() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Process(
        ownlist(dir.path())
            .env("OWNLIST_LISTEN", "127.0.0.1:0")
            .env("OWNLIST_BOUNCE_SMTP_LISTEN", "127.0.0.1:0")
            .env("OWNLIST_BOUNCE_ADDRESS", "bounces@shop.example")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = (0..30)
        .map_while(|_| lines.next().and_then(Result::ok))
        .find(|l| l.contains("bounce receiver"))
        .expect("serve says where the bounce receiver listens");
    assert!(line.contains("bounces+…@shop.example"), "{line}");
    let address = line.split("smtp://").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    let mut smtp = std::net::TcpStream::connect(&address).unwrap();
    smtp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = |command: &str| {
        if !command.is_empty() {
            smtp.write_all(format!("{command}\r\n").as_bytes()).unwrap();
        }
        let mut buffer = [0u8; 512];
        let n = smtp.read(&mut buffer).unwrap();
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    assert!(answer("").starts_with("220 shop.example"));
    assert!(answer("EHLO mx.example.org").starts_with("250-shop.example"));
    assert!(answer("MAIL FROM:<>").starts_with("250"));
    assert!(answer("RCPT TO:<ada@example.org>").starts_with("550"), "no relaying");
    assert!(answer("RCPT TO:<bounces@shop.example>").starts_with("250"));
    assert!(answer("QUIT").starts_with("221"));
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `ownlist doctor` against a DNS server on loopback holding one domain set up right and one set
/// up wrong, and an SMTP relay that greets: each record is judged, each failure with its fix.
#[test]
fn doctor_reports_a_zones_good_and_broken_records() {
    use dns::Record::{A, Mx, Ptr, Txt};
    if !tools::openssl("doctor_reports_a_zones_good_and_broken_records") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let public_key = |name: &str| {
        let key = dir.path().join(format!("{name}.pem"));
        assert!(
            Command::new("openssl")
                .args(["genrsa", "-traditional", "-out"])
                .arg(&key)
                .arg("2048")
                .output()
                .unwrap()
                .status
                .success()
        );
        let public = Command::new("openssl").args(["rsa", "-pubout", "-in"]).arg(&key).output().unwrap();
        let text = text(&public.stdout);
        (key, text.lines().filter(|l| !l.starts_with("-----")).collect::<String>())
    };
    let (good_key, good_public) = public_key("good");
    let (broken_key, _) = public_key("broken");
    let (_, other_public) = public_key("other");

    // A relay that greets, says hello and goodbye.
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_address = relay.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in relay.incoming().flatten() {
            use std::io::Write;
            let mut writer = stream.try_clone().unwrap();
            let _ = writer.write_all(b"220 relay.good.example ESMTP\r\n");
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let reply: &[u8] = if line.to_ascii_uppercase().starts_with("EHLO") {
                    b"250-relay.good.example\r\n250 8BITMIME\r\n"
                } else if line.to_ascii_uppercase().starts_with("QUIT") {
                    let _ = writer.write_all(b"221 bye\r\n");
                    break;
                } else {
                    b"250 OK\r\n"
                };
                let _ = writer.write_all(reply);
            }
        }
    });
    // The relay is on this machine: its mail leaves from the machine's own address.
    let own = {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.connect("8.8.8.8:53").unwrap();
        socket.local_addr().unwrap().ip()
    };
    let std::net::IpAddr::V4(v4) = own else { panic!("{own} is not IPv4") };
    let reverse = v4.octets().iter().rev().map(u8::to_string).collect::<Vec<_>>().join(".") + ".in-addr.arpa";
    let resolver = dns::serve(vec![
        ("good.example", Txt(format!("v=spf1 ip4:{own} -all"))),
        ("good.example", Mx(10, "mx.good.example".into())),
        ("mx.good.example", A("127.0.0.1".parse().unwrap())),
        ("sel._domainkey.good.example", Txt(format!("v=DKIM1; k=rsa; p={good_public}"))),
        ("_dmarc.good.example", Txt("v=DMARC1; p=none; rua=mailto:dmarc@good.example".into())),
        ("relay.good.example", A(own)),
        (reverse.as_str(), Ptr("relay.good.example".into())),
        ("broken.example", Txt("v=spf1 ip4:198.51.100.7 -all".into())),
        ("sel._domainkey.broken.example", Txt(format!("v=DKIM1; k=rsa; p={other_public}"))),
    ]);
    assert!(run(ownlist(dir.path()).arg("migrate")).status.success());
    let doctor = |domain: &str, key: &Path| {
        let out = run(ownlist(dir.path())
            .args(["doctor", "--resolver", &resolver.to_string()])
            .env("OWNLIST_EMAIL_FROM", format!("Shop <news@{domain}>"))
            .env("OWNLIST_SMTP_URL", format!("smtp://{relay_address}"))
            .env("OWNLIST_DKIM_DOMAIN", domain)
            .env("OWNLIST_DKIM_SELECTOR", "sel")
            .env("OWNLIST_DKIM_KEY_FILE", key));
        (out.status.code(), text(&out.stdout))
    };

    let (code, good) = doctor("good.example", &good_key);
    for line in [
        "ok    database sqlite://",
        &format!("ok    relay {relay_address}: connects"),
        &format!("ok    relay 127.0.0.1 is on this machine: its mail leaves from {own}"),
        &format!("ok    SPF: good.example lets the relays send (v=spf1 ip4:{own} -all)"),
        "ok    DKIM: sel._domainkey.good.example publishes the configured rsa key",
        "ok    DMARC: v=DMARC1; p=none; rua=mailto:dmarc@good.example; DKIM aligned with good.example",
        "ok    MX: good.example → mx.good.example",
        &format!("ok    reverse DNS: {own} → relay.good.example → {own}"),
        "ok    Gmail, Yahoo and Outlook bulk-sender rule: SPF passes for the sending domain",
        "ok    Gmail, Yahoo and Outlook bulk-sender rule: DKIM signs every message",
        "ok    Gmail, Yahoo and Outlook bulk-sender rule: the From domain aligns with SPF or DKIM",
        "FAIL  base_url http://127.0.0.1:8080/ is not HTTPS",
    ] {
        assert!(good.contains(line), "{line:?} not in:\n{good}");
    }
    let failed: Vec<&str> = good.lines().filter(|l| l.trim_start().starts_with("FAIL")).collect();
    assert_eq!(failed.len(), 2, "only base_url and the HTTPS rule: {failed:?}");
    assert_eq!(code, Some(1), "a failed check fails the command");

    let (code, broken) = doctor("broken.example", &broken_key);
    for line in [
        &format!("FAIL  SPF: broken.example does not cover the relay address(es) {own}"),
        &format!("fix: add ip4:{own} (or include: your relay's SPF) to \"v=spf1 ip4:198.51.100.7 -all\""),
        "FAIL  DKIM: the key at sel._domainkey.broken.example is not the configured one",
        "FAIL  DMARC: no record at _dmarc.broken.example",
        "fix: publish a TXT record at _dmarc.broken.example: \"v=DMARC1; p=none;",
        "warn  MX: broken.example has no MX record",
        "FAIL  Gmail, Yahoo and Outlook bulk-sender rule not met: SPF passes for the sending domain",
        "FAIL  Gmail, Yahoo and Outlook bulk-sender rule not met: DKIM signs every message",
        &format!("ok    reverse DNS: {own} → relay.good.example → {own}"),
    ] {
        assert!(broken.contains(line), "{line:?} not in:\n{broken}");
    }
    assert_eq!(code, Some(1));
}

/// A minimal HTTP/1.1 request with a JSON body and the CLI tests' admin token.
fn http_request(address: &str, method: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer cli-admin-token-0123456789\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// A minimal HTTP/1.1 GET, so this test needs no client library.
fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::TcpStream::connect(address) {
            Ok(mut stream) => {
                write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
                let mut response = String::new();
                stream.read_to_string(&mut response).unwrap();
                return response;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("cannot connect to {address}: {e}"),
        }
    }
}

#[test]
fn tokens_are_created_once_listed_by_name_and_revoked() {
    for database in Database::all() {
        tokens_scenario(&database);
    }
}

fn tokens_scenario(database: &Database) {
    let dir = tempfile::tempdir().unwrap();
    let ownlist = |dir: &Path| database.ownlist(dir);
    let created = run(ownlist(dir.path()).args(["tokens", "create", "ci-bot"]));
    assert!(created.status.success(), "{}", text(&created.stderr));
    let token = text(&created.stdout).trim().to_owned();
    assert!(token.starts_with("ol_") && token.len() > 40, "{token}");
    assert!(text(&created.stderr).contains("shown only now"));

    let again = run(ownlist(dir.path()).args(["tokens", "create", "ci-bot"]));
    assert_eq!(again.status.code(), Some(3));
    assert!(text(&again.stderr).contains("a token named 'ci-bot' exists"), "{}", text(&again.stderr));

    let viewer = run(ownlist(dir.path()).args(["tokens", "create", "reader", "--role", "viewer"]));
    assert!(text(&viewer.stderr).contains("'reader' (viewer) created"), "{}", text(&viewer.stderr));
    let wrong = run(ownlist(dir.path()).args(["tokens", "create", "boss", "--role", "owner"]));
    assert_eq!(wrong.status.code(), Some(2), "an unknown role is a usage error");
    assert!(text(&wrong.stderr).contains("viewer, editor, admin"), "{}", text(&wrong.stderr));

    let listed = run(ownlist(dir.path()).args(["tokens", "list"]));
    let listed = text(&listed.stdout);
    assert!(listed.starts_with("ci-bot\tadmin\t"), "the default role is admin: {listed}");
    assert!(listed.contains("\nreader\tviewer\t"), "{listed}");
    assert!(!listed.contains(&token), "the list never shows a token");

    if database.url.is_none() {
        let file = std::fs::read(dir.path().join("data/ownlist.db")).unwrap();
        assert!(!file.windows(token.len()).any(|w| w == token.as_bytes()), "only the hash is stored");
    }

    assert!(run(ownlist(dir.path()).args(["tokens", "revoke", "ci-bot"])).status.success());
    assert!(run(ownlist(dir.path()).args(["tokens", "revoke", "reader"])).status.success());
    let listed = run(ownlist(dir.path()).args(["tokens", "list"]));
    assert_eq!(text(&listed.stdout), "");
    let missing = run(ownlist(dir.path()).args(["tokens", "revoke", "ci-bot"]));
    assert_eq!(missing.status.code(), Some(3));
}

/// The disk fills during `ownlist import`: it says what was stored, exits 1, and what it says
/// stored is stored; run again once there is room, it stores the rest with no duplicate.
#[test]
fn cli_import_on_a_full_disk_says_what_was_stored_and_fails() {
    let test = "cli_import_on_a_full_disk_says_what_was_stored_and_fails";
    if !tools::present(test, "sqlite3", &["-version"], "apt-get install -y sqlite3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = small_disk::SmallDisk::mount(test, &dir.path().join("disk"), 48) else { return };
    let mut csv = String::from("email,first_name\n");
    for i in 0..20_000 {
        csv.push_str(&format!("reader{i}@example.com,Reader number {i} with a name that takes room\n"));
    }
    std::fs::write(dir.path().join("people.csv"), csv).unwrap();
    let url = format!("sqlite://{}?mode=rwc", disk.0.join("ownlist.db").display());
    let migrated = run(ownlist(dir.path()).env("OWNLIST_DATABASE_URL", &url).arg("migrate"));
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    disk.fill(256 * 1024);
    let imported = run(ownlist(dir.path()).env("OWNLIST_DATABASE_URL", &url).args(["import", "people.csv"]));
    let stderr = text(&imported.stderr);
    assert_eq!(imported.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stopped part way"), "{stderr}");
    let said: i64 =
        stderr.split("stored before it: imported ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    let count = |url: &str| {
        let file = url.trim_start_matches("sqlite://").trim_end_matches("?mode=rwc").to_owned();
        let out = Command::new("sqlite3").arg(file).arg("SELECT count(*) FROM subscribers").output().unwrap();
        text(&out.stdout).trim().parse::<i64>().unwrap()
    };
    assert_eq!(count(&url), said, "what it said stored is stored: {stderr}");
    disk.free();
    let again = run(ownlist(dir.path()).env("OWNLIST_DATABASE_URL", &url).args(["import", "people.csv"]));
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(count(&url), 20_000);
}

#[test]
fn cli_import_reports_rows_and_export_round_trips() {
    for database in Database::all() {
        import_export_scenario(&database);
    }
}

fn import_export_scenario(database: &Database) {
    let dir = tempfile::tempdir().unwrap();
    let empty = database.another();
    let ownlist_first = |dir: &Path| database.ownlist(dir);
    let ownlist_second = |dir: &Path| empty.ownlist(dir);
    let ownlist = ownlist_first;
    let csv = dir.path().join("people.csv");
    std::fs::write(
        &csv,
        "email,first_name,tags,lists,city\nada@example.com,Ada,vip,news:confirmed,Rome\nbad,Bad,,,\ngrace@example.com,Grace,,news:pending,Paris\n",
    )
    .unwrap();
    let imported = run(ownlist(dir.path()).args(["import", "people.csv"]));
    let stderr = text(&imported.stderr);
    assert_eq!(imported.status.code(), Some(1), "rejected rows give exit code 1: {stderr}");
    assert!(stderr.contains("people.csv:3: email: 'bad' is not a valid email address"), "{stderr}");
    assert!(stderr.contains("created lists: news"), "{stderr}");
    assert!(stderr.contains("imported 2, updated 0, skipped 1"), "{stderr}");

    let unknown = run(ownlist(dir.path()).args(["import", "people.csv", "--list", "nope"]));
    assert_eq!(unknown.status.code(), Some(3));
    assert!(text(&unknown.stderr).contains("unknown list 'nope'"), "{}", text(&unknown.stderr));
    let missing = run(ownlist(dir.path()).args(["import", "missing.csv"]));
    assert!(text(&missing.stderr).contains("cannot open missing.csv"));

    let exported = run(ownlist(dir.path()).args(["export", "--out", "all.csv"]));
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let first = std::fs::read_to_string(dir.path().join("all.csv")).unwrap();
    assert_eq!(first.lines().count(), 3);
    assert!(first.contains("news:pending"));

    let other = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("all.csv"), other.path().join("all.csv")).unwrap();
    let imported = run(ownlist_second(other.path()).args(["import", "all.csv"]));
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let again = run(ownlist_second(other.path()).arg("export"));
    let columns = |csv: &str| -> Vec<String> {
        csv.lines().map(|l| l.rsplit_once(',').map_or(l, |(rest, _updated_at)| rest).to_owned()).collect()
    };
    assert_eq!(columns(&text(&again.stdout)), columns(&first));

    // Everything, as files, into a third (empty) database.
    let everything = run(ownlist(dir.path()).args(["export", "--all", "backup-dir"]));
    assert!(everything.status.success(), "{}", text(&everything.stderr));
    assert!(text(&everything.stdout).contains("subscribers: 2"), "{}", text(&everything.stdout));
    assert!(dir.path().join("backup-dir/README.md").exists() && dir.path().join("backup-dir/consents.jsonl").exists());
    let third = database.another();
    let home = tempfile::tempdir().unwrap();
    let from = dir.path().join("backup-dir");
    let restored = run(third.ownlist(home.path()).arg("import").arg("--all").arg(&from));
    assert!(restored.status.success(), "{}", text(&restored.stderr));
    assert!(text(&restored.stdout).contains("subscribers: 2") && text(&restored.stdout).contains("consents: 2"));
    let refused = run(third.ownlist(home.path()).arg("import").arg("--all").arg(&from));
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("not empty") && text(&refused.stderr).contains("nothing was imported"));
}

#[test]
fn migrate_creates_the_schema_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let output = run(ownlist(dir.path()).arg("migrate"));
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(text(&output.stdout).contains("is up to date"));
    }
}

#[test]
fn workflows_check_prints_file_line_column_and_fails_on_any_problem() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let templates = repo.join("templates");
    let workflows = dir.path().join("workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    for name in ["instagram-guide.yaml", "welcome.yaml", "weekly-digest.yaml"] {
        std::fs::copy(repo.join("workflows").join(name), workflows.join(name)).unwrap();
    }
    let check = |dir: &Path| {
        run(ownlist(dir).env("OWNLIST_TEMPLATES_DIR", &templates).args(["workflows", "check", "workflows"]))
    };

    let ok = check(dir.path());
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stdout));
    assert!(
        text(&ok.stderr).contains("3 workflow(s), 1 landing page(s) and 2 declared list(s) OK"),
        "{}",
        text(&ok.stderr)
    );
    assert!(text(&ok.stderr).contains("list names were not checked"), "no database yet");

    // With a database, list names are checked against it.
    std::fs::write(dir.path().join("lists.csv"), "email,lists\na@example.com,guide-leads;newsletter\n").unwrap();
    assert!(run(ownlist(dir.path()).args(["import", "lists.csv"])).status.success());
    let ok = check(dir.path());
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stdout));
    let path = workflows.join("welcome.yaml");
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        original.replace("subscribed: newsletter", "subscribed: newsleter").replace("wait: 1d", "wait: 1 day"),
    )
    .unwrap();
    let bad = check(dir.path());
    assert_eq!(bad.status.code(), Some(1));
    let stdout = text(&bad.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("workflows/welcome.yaml:5:15: unknown list 'newsleter' (did you mean 'newsletter'?)"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("workflows/welcome.yaml:17:11: '1 day' has an unknown unit"), "{stdout}");
    assert!(text(&bad.stderr).contains("2 problem(s) found"));

    let missing = run(ownlist(dir.path()).args(["workflows", "check", "nowhere"]));
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn workflows_simulate_prints_the_timeline_on_a_virtual_clock() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let simulate = |extra: &[&str]| {
        let mut command = ownlist(dir.path());
        command.env("OWNLIST_TEMPLATES_DIR", repo.join("templates")).args([
            "workflows",
            "simulate",
            repo.join("workflows/instagram-guide.yaml").to_str().unwrap(),
            "--start",
            "2026-03-02T09:00:00Z",
            "--subscriber",
            r#"{"email":"ada@example.com","first_name":"Ada","timezone":"Europe/Rome","attribution":{"source":"instagram"}}"#,
        ]);
        command.args(extra);
        run(&mut command)
    };
    let started = std::time::Instant::now();
    let opened = simulate(&["--opens", "deliver-guide"]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(opened.status.success(), "{}", text(&opened.stderr));
    let out = text(&opened.stdout);
    let expected = [
        "Mon 2026-03-02 10:00         +0  email deliver-guide \"Your guide, Ada\"",
        "Wed 2026-03-04 10:00        +2d  opened-guide: then branch, because opened 'deliver-guide' is true",
        "Wed 2026-03-04 10:00        +2d  email upsell \"A next step\"",
        "monday waits until Mon 2026-03-09 09:00",
        "buy: no 'purchased' in time",
        "email last-chance \"Last chance\"",
        "completed: all steps done",
    ];
    for line in expected {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }

    let bought = simulate(&["--event", "purchased@8d"]);
    let out = text(&bought.stdout);
    assert!(out.contains("opened-guide: else branch"), "{out}");
    assert!(out.contains("event 'purchased' arrived"), "{out}");
    assert!(!out.contains("last-chance"), "no last-chance email after buying:\n{out}");
    assert!(!dir.path().join("data").exists(), "a simulation writes nothing");

    let bad = simulate(&["--event", "purchased"]);
    assert_eq!(bad.status.code(), Some(3));
    assert!(text(&bad.stderr).contains("NAME@DURATION"), "{}", text(&bad.stderr));
}

#[test]
fn workflows_plan_shows_where_live_enrollments_would_go() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workflows = dir.path().join("workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    let original = "name: T\ntrigger: { event: signed-up }\nsteps:\n  - id: first\n    tag: a\n  - id: pause\n    wait: 2d\n  - id: last\n    tag: b\n";
    std::fs::write(workflows.join("t.yaml"), original).unwrap();
    let with = |dir: &Path| {
        let mut command = ownlist(dir);
        command.env("OWNLIST_TEMPLATES_DIR", repo.join("templates"));
        command
    };
    assert!(run(with(dir.path()).arg("migrate")).status.success());
    assert_eq!(text(&run(with(dir.path()).args(["workflows", "plan"])).stdout).trim(), "t: new, version 1");

    // Load it and put two people at the wait, through the library on the same database.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use ownlist::audience::{Actor, events, subscribers};
        let mut config = ownlist::config::Config::defaults_in(dir.path()).unwrap();
        config.templates_dir = repo.join("templates");
        let clock: ownlist::core::clock::SharedClock = std::sync::Arc::new(ownlist::core::clock::SystemClock);
        let service = ownlist::app::App::open(config, clock.clone()).await.unwrap().start().await.unwrap();
        for email in ["a@example.com", "b@example.com"] {
            let input = subscribers::NewSubscriber { email: Some(email.into()), ..Default::default() };
            let created = subscribers::create(&service.app.db, clock.now(), &Actor::Cli, input).await.unwrap();
            let event = events::NewEvent {
                subscriber_id: Some(created.id),
                email: None,
                phone: None,
                name: "signed-up".into(),
                properties: Default::default(),
            };
            events::record(&service.app.db, clock.now(), &Actor::Cli, event).await.unwrap();
        }
        service.engine.tick().await.unwrap();
        service.app.db.clone().close().await.unwrap();
    });
    assert_eq!(text(&run(with(dir.path()).args(["workflows", "plan"])).stdout).trim(), "t: unchanged (version 1)");

    std::fs::write(workflows.join("t.yaml"), original.replace("  - id: pause\n    wait: 2d\n", "")).unwrap();
    let plan = text(&run(with(dir.path()).args(["workflows", "plan"])).stdout);
    assert!(plan.contains("t: version 1 → 2"), "{plan}");
    assert!(plan.contains("2 at 'pause' (version 1): move to 'last'"), "{plan}");
    std::fs::write(workflows.join("t.yaml"), original.replace("wait: 2d", "wait: 1d")).unwrap();
    let plan = text(&run(with(dir.path()).args(["workflows", "plan"])).stdout);
    assert!(
        plan.contains("2 at 'pause' (version 1): stay at 'pause'; the wait is recomputed from when it began"),
        "{plan}"
    );
}

#[test]
fn serve_starts_despite_an_invalid_workflow_and_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
    std::fs::write(
        dir.path().join("workflows/bad.yaml"),
        "name: Bad\ntrigger: { event: x }\nsteps:\n  - id: a\n    wait: forever\n",
    )
    .unwrap();
    let checked = run(ownlist(dir.path()).args(["workflows", "check"]));
    assert_eq!(checked.status.code(), Some(1), "`workflows check` still fails");
    assert!(text(&checked.stdout).contains("workflows/bad.yaml:5:11: 'forever' is not a duration"));

    let mut server = Process(
        ownlist(dir.path())
            .env("OWNLIST_LISTEN", "127.0.0.1:0")
            .env("OWNLIST_TEMPLATES_DIR", repo.join("templates"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Its standard output stays open (it says more after the first line).
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    assert!(line.contains("ownlist is serving"), "{line}");
    let address = line.split("http://").nth(1).unwrap().split('/').next().unwrap().to_owned();
    let ready = http_get(&address, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains("bad.yaml:5:11") && ready.contains("is not a duration"), "{ready}");
    server.kill().unwrap();
    server.wait().unwrap();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(logs.contains("workflows/bad.yaml:5:11: 'forever' is not a duration"), "{logs}");
}

#[test]
fn the_command_line_has_help_a_version_and_shell_completions() {
    let dir = tempfile::tempdir().unwrap();
    let help = text(&run(ownlist(dir.path()).arg("--help")).stdout);
    for command in ["serve", "worker", "migrate", "tokens", "import", "workflows", "export", "backup", "completions"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(command)), "{command} in --help:\n{help}");
    }
    let version = text(&run(ownlist(dir.path()).arg("--version")).stdout);
    assert_eq!(version.trim(), format!("ownlist {}", env!("CARGO_PKG_VERSION")));
    for (shell, says) in [("bash", "complete -F"), ("zsh", "#compdef ownlist"), ("fish", "complete -c ownlist")] {
        let script = run(ownlist(dir.path()).args(["completions", shell]));
        assert!(script.status.success(), "{shell}");
        assert!(text(&script.stdout).contains(says), "{shell}");
    }
    assert!(!dir.path().join("data").exists(), "completions touch no database");
}

#[test]
fn one_process_per_sqlite_file_json_logs_readiness_and_an_online_backup() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Process(
        ownlist(dir.path())
            .env("OWNLIST_LISTEN", "127.0.0.1:0")
            .env("OWNLIST_LOG", "info")
            .env("OWNLIST_LOG_FORMAT", "json")
            .env("OWNLIST_ADMIN_TOKEN", "cli-admin-token-0123456789")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let address = line.split("http://").nth(1).unwrap().split('/').next().unwrap().to_owned();
    let ready = http_get(&address, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200") && ready.contains("\"ready\""), "{ready}");

    // A subscriber added and unsubscribed: their address must not reach the info-level logs.
    let added = http_request(&address, "POST", "/api/v1/lists", r#"{"slug":"news","name":"News"}"#);
    assert!(added.starts_with("HTTP/1.1 201"), "{added}");
    let body = r#"{"email":"private.person@example.com","phone":"+14155552671","first_name":"Private","lists":["news"],"consent":{"email":true}}"#;
    let created = http_request(&address, "POST", "/api/v1/subscribers", body);
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let id = created.split("\"id\":\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let patched = http_request(&address, "PATCH", &format!("/api/v1/subscribers/{id}"), r#"{"status":"unsubscribed"}"#);
    assert!(patched.starts_with("HTTP/1.1 200"), "{patched}");

    let second = run(ownlist(dir.path()).env("OWNLIST_LISTEN", "127.0.0.1:0"));
    assert_eq!(second.status.code(), Some(2), "a second process on the same SQLite file is refused");
    let said = text(&second.stderr);
    assert!(said.contains("another ownlist process is already serving") && said.contains("PostgreSQL"), "{said}");

    // A snapshot while the first one runs (and writes: a token is created meanwhile).
    assert!(run(ownlist(dir.path()).args(["tokens", "create", "ops"])).status.success());
    let backup = run(ownlist(dir.path()).args(["backup", "snapshot.db"]));
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    assert!(text(&backup.stdout).contains("backup written to snapshot.db"));
    let again = run(ownlist(dir.path()).args(["backup", "snapshot.db"]));
    assert_eq!(again.status.code(), Some(2), "an existing file is never overwritten");
    if tools::present("one_process_per_sqlite_file…", "sqlite3", &["-version"], "apt-get install -y sqlite3") {
        let copy = Command::new("sqlite3")
            .arg(dir.path().join("snapshot.db"))
            .arg("SELECT name FROM api_tokens; PRAGMA integrity_check;")
            .output()
            .unwrap();
        assert_eq!(text(&copy.stdout).trim(), "ops\nok", "the copy is whole and current");
    }

    first.kill().unwrap();
    first.wait().unwrap();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut first.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(
        !logs.contains("private.person") && !logs.contains("4155552671") && !logs.contains("Private"),
        "no personal data at info level: {logs}"
    );
    let entries: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!entries.is_empty(), "info logs were written");
    for entry in entries {
        let parsed: serde_json::Value = serde_json::from_str(entry).unwrap_or_else(|e| panic!("{e}: {entry}"));
        assert!(
            parsed["level"].is_string() && parsed["timestamp"].is_string() && parsed["message"].is_string(),
            "{entry}"
        );
    }

    let postgres = run(ownlist(dir.path())
        .env("OWNLIST_DATABASE_URL", "postgres://ownlist:secret@db.internal/ownlist")
        .args(["backup", "ownlist.dump"]));
    assert_eq!(postgres.status.code(), Some(2));
    let said = text(&postgres.stdout);
    assert!(said.contains("pg_dump --format=custom --file=ownlist.dump") && !said.contains("secret"), "{said}");

    // Once the first process is gone, the file is free again.
    let mut third =
        Process(ownlist(dir.path()).env("OWNLIST_LISTEN", "127.0.0.1:0").stdout(Stdio::piped()).spawn().unwrap());
    let first_line = BufReader::new(third.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    assert!(first_line.contains("ownlist is serving"), "{first_line}");
    third.kill().unwrap();
    third.wait().unwrap();
}

/// The outage playbook's restore (docs/operations.md): a backup taken while serving, put on a
/// "new machine" (a fresh folder) with the instance's secret, serves the same audience, accepts
/// the same API tokens, and the drill there counts who can be reached.
#[test]
fn a_backup_restored_on_a_new_machine_serves_the_same_audience_and_drills() {
    let old = tempfile::tempdir().unwrap();
    let serve = |dir: &Path| {
        let mut process = Process(
            ownlist(dir)
                .env("OWNLIST_LISTEN", "127.0.0.1:0")
                .env("OWNLIST_ADMIN_TOKEN", "cli-admin-token-0123456789")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
        let line = lines.next().unwrap().unwrap();
        let address = line.split("http://").nth(1).unwrap().split('/').next().unwrap().to_owned();
        // Its standard output stays open: it goes on printing there.
        (process, address, lines)
    };
    let (mut first, address, _out) = serve(old.path());
    assert!(
        http_request(&address, "POST", "/api/v1/lists", r#"{"slug":"news","name":"News"}"#).starts_with("HTTP/1.1 201")
    );
    for body in [
        r#"{"email":"ada@example.com","lists":["news"],"consent":{"email":true}}"#,
        r#"{"email":"bob@example.com","phone":"+14155552671","lists":["news"],"consent":{"email":true,"sms":true}}"#,
    ] {
        let created = http_request(&address, "POST", "/api/v1/subscribers", body);
        assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    }
    let token = run(ownlist(old.path()).args(["tokens", "create", "ops"]));
    let token = text(&token.stdout).trim().to_owned();
    let backup = run(ownlist(old.path()).args(["backup", "snapshot.db"]));
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    first.kill().unwrap();
    first.wait().unwrap();

    // The new machine: the copy in place of data/ownlist.db, with the same data/secret.
    let new = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(new.path().join("data")).unwrap();
    std::fs::copy(old.path().join("snapshot.db"), new.path().join("data/ownlist.db")).unwrap();
    std::fs::copy(old.path().join("data/secret"), new.path().join("data/secret")).unwrap();
    drop(old);
    let (mut second, address, _out2) = serve(new.path());
    let listed = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "GET /api/v1/subscribers HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    assert!(listed.starts_with("HTTP/1.1 200"), "the token made on the old machine works: {listed}");
    assert!(listed.contains("ada@example.com") && listed.contains("bob@example.com"), "{listed}");
    let reach = http_request(&address, "GET", "/api/v1/reachability?without=sms", "");
    assert!(reach.starts_with("HTTP/1.1 200") && reach.contains("\"lost_channels\":[\"sms\"]"), "{reach}");
    second.kill().unwrap();
    second.wait().unwrap();

    let drill = run(ownlist(new.path()).args(["drill", "--without", "email"]));
    assert!(drill.status.success(), "{}", text(&drill.stderr));
    let said = text(&drill.stdout);
    assert!(said.contains("Drill: without email (down: email)"), "{said}");
    // Ada has email only; Bob keeps his phone.
    let all = said.lines().find(|l| l.starts_with("all ")).unwrap();
    let figures: Vec<&str> = all.split_whitespace().skip(1).take(5).collect();
    assert_eq!(figures, ["2", "1", "1", "1", "0"], "{said}");
    assert!(said.contains("weakest point: email (losing it alone cuts off 1 (50.0%))"), "{said}");
    let unknown = run(ownlist(new.path()).args(["drill", "--without", "fax"]));
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        text(&unknown.stderr).contains("'fax' is not a channel (email, sms, whatsapp)"),
        "{}",
        text(&unknown.stderr)
    );
}
