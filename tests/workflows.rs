//! `workflows check`: what marketers see when a workflow file is wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ownlist::workflow::model::{Action, Condition, Trigger};
use ownlist::workflow::templates::TemplateChecker;
use ownlist::workflow::{Context, Diagnostic, check, check_dir};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_templates() -> TemplateChecker {
    TemplateChecker::load(&repo().join("templates"))
}

fn lists() -> BTreeSet<String> {
    ["guide-leads", "newsletter", "customers"].into_iter().map(String::from).collect()
}

/// Checks `yaml` as `workflows/test.yaml` against the shipped templates and lists.
/// Runs `f` with the shipped templates and the test lists as what a check may look at.
fn with_context<T>(f: impl FnOnce(&Context<'_>) -> T) -> T {
    let templates = shipped_templates();
    let lists = lists();
    let context = Context {
        templates: &templates,
        lists: Some(&lists),
        sms_max_segments: ownlist::workflow::check::DEFAULT_SMS_MAX_SEGMENTS,
    };
    f(&context)
}

fn diagnose(yaml: &str) -> Vec<String> {
    with_context(|context| match check(Path::new("workflows/test.yaml"), yaml, context) {
        Ok(_) => Vec::new(),
        Err(found) => found.iter().map(Diagnostic::to_string).collect(),
    })
}

fn assert_one(yaml: &str, expected_start: &str, expected_text: &str) {
    let found = diagnose(yaml);
    assert!(
        found.iter().any(|d| d.starts_with(expected_start) && d.contains(expected_text)),
        "expected a diagnostic starting {expected_start:?} containing {expected_text:?}, got {found:#?}"
    );
}

const GOOD: &str = r#"name: Test
trigger: { subscribed: guide-leads }
steps:
  - id: hello
    email: { subject: "Hi {{ subscriber.first_name }}", template: emails/guide.html }
  - id: pause
    wait: 2d
  - id: check
    if: { opened: hello }
    then:
      - id: tag-it
        tag: engaged
"#;

#[test]
fn the_shipped_funnels_pass_and_mean_what_they_say() {
    let templates = shipped_templates();
    let lists = lists();
    let context = Context {
        templates: &templates,
        lists: Some(&lists),
        sms_max_segments: ownlist::workflow::check::DEFAULT_SMS_MAX_SEGMENTS,
    };
    let folder = check_dir(&repo().join("workflows"), &context);
    let (workflows, diagnostics) = (folder.workflows, folder.diagnostics);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let ids: Vec<&str> = workflows.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["instagram-guide", "weekly-digest", "welcome"]);

    let guide = &workflows[0];
    assert_eq!(guide.trigger, Trigger::Subscribed { list: "guide-leads".into() });
    assert_eq!(guide.filter, Some(Condition::Source("instagram".into())));
    assert_eq!(guide.exit_when, Some(Condition::Tag("customer".into())));
    assert_eq!(guide.timezone.as_deref(), Some("Europe/Rome"));
    let window = guide.send_window.as_ref().unwrap();
    assert_eq!(window.days.len(), 5);
    let steps: Vec<&str> = guide.all_steps().iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        steps,
        [
            "deliver-guide",
            "pause",
            "opened-guide",
            "upsell",
            "nudge",
            "nudge-sms",
            "monday",
            "buy",
            "last-chance",
            "done"
        ]
    );
    assert!(matches!(&guide.steps[1].action, Action::Wait(d) if d.seconds() == 2 * 86_400));
    assert!(matches!(&workflows[1].trigger, Trigger::Schedule { cron, .. } if cron == "0 9 * * MON"));

    // A checked workflow survives a round trip through JSON (versions are stored that way).
    let json = serde_json::to_string(guide).unwrap();
    let back: ownlist::workflow::Workflow = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, guide);
}

#[test]
fn a_good_file_has_no_diagnostics() {
    assert_eq!(diagnose(GOOD), Vec::<String>::new());
}

#[test]
fn a_misspelt_key_is_located_with_a_suggestion() {
    assert_one(&GOOD.replace("    wait: 2d", "    wiat: 2d"), "workflows/test.yaml:7:5:", "did you mean `wait`?");
    assert_one(&GOOD.replace("name: Test", "nmae: Test"), "workflows/test.yaml:1:1:", "did you mean `name`?");
    assert_one(
        &GOOD.replace("if: { opened: hello }", "if: { opend: hello }"),
        "workflows/test.yaml:9:11:",
        "did you mean `opened`?",
    );
    assert_one(
        &GOOD.replace("trigger: { subscribed: guide-leads }", "trigger: { subscribd: guide-leads }"),
        "workflows/test.yaml:2:",
        "did you mean `subscribed`?",
    );
}

#[test]
fn duplicate_step_ids_are_refused_where_they_repeat() {
    assert_one(
        &GOOD.replace("id: tag-it", "id: hello"),
        "workflows/test.yaml:11:13:",
        "duplicate step id 'hello' (first used at line 4)",
    );
}

#[test]
fn missing_and_broken_templates_are_explained() {
    assert_one(
        &GOOD.replace("emails/guide.html", "emails/gide.html"),
        "workflows/test.yaml:5:",
        "did you mean 'emails/guide.html'?",
    );
    assert_one(
        &GOOD.replace("emails/guide.html", "../secrets.txt"),
        "workflows/test.yaml:5:",
        "inside the templates folder",
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("emails")).unwrap();
    std::fs::write(dir.path().join("emails/broken.html"), "<p>Hi</p>\n<p>{{ subscriber.first_name </p>\n").unwrap();
    std::fs::write(dir.path().join("emails/typo.html"), "<p>{{ subscribr.first_name }}</p>\n").unwrap();
    let templates = TemplateChecker::load(dir.path());
    let context = Context {
        templates: &templates,
        lists: None,
        sms_max_segments: ownlist::workflow::check::DEFAULT_SMS_MAX_SEGMENTS,
    };
    let broken = GOOD.replace("emails/guide.html", "emails/broken.html");
    let found: Vec<String> =
        check(Path::new("t.yaml"), &broken, &context).unwrap_err().iter().map(Diagnostic::to_string).collect();
    let expected = format!("{}:2:", dir.path().join("emails/broken.html").display());
    assert!(found.iter().any(|d| d.starts_with(&expected) && d.contains("template syntax error")), "{found:#?}");
    let typo = GOOD.replace("emails/guide.html", "emails/typo.html");
    let found: Vec<String> =
        check(Path::new("t.yaml"), &typo, &context).unwrap_err().iter().map(Diagnostic::to_string).collect();
    assert!(
        found.iter().any(|d| d.contains("unknown variable 'subscribr' (did you mean 'subscriber'?)")),
        "{found:#?}"
    );
}

#[test]
fn bad_values_are_located_and_explained() {
    assert_one(&GOOD.replace("wait: 2d", "wait: 2 days"), "workflows/test.yaml:7:11:", "unknown unit");
    assert_one(&GOOD.replace("wait: 2d", "wait: 0s"), "workflows/test.yaml:7:11:", "longer than zero");
    assert_one(
        &GOOD.replace(
            "trigger: { subscribed: guide-leads }",
            "trigger: { schedule: { cron: \"0 9 * *\", list: newsletter } }",
        ),
        "workflows/test.yaml:2:",
        "five",
    );
    assert_one(&format!("timezone: Mars/Olympus\n{GOOD}"), "workflows/test.yaml:1:11:", "IANA time zone");
    assert_one(
        &GOOD.replace("    wait: 2d", "    wait_until: { weekday: funday, time: \"09:00\" }"),
        "workflows/test.yaml:7:",
        "not a weekday",
    );
    assert_one(
        &GOOD.replace("    wait: 2d", "    wait_until: { time: \"9am\" }"),
        "workflows/test.yaml:7:",
        "not a time of day",
    );
    assert_one(
        &format!("send_window: {{ between: [\"18:00\", \"09:00\"] }}\n{GOOD}"),
        "workflows/test.yaml:1:",
        "start must be before its end",
    );
    assert_one(
        &GOOD.replace("subject: \"Hi {{ subscriber.first_name }}\"", "subject: \"Hi {{ first_name }}\""),
        "workflows/test.yaml:5:",
        "unknown variable 'first_name'",
    );
    assert_one(
        &GOOD.replace("subject: \"Hi {{ subscriber.first_name }}\"", "subject: \"Hi {{ subscriber.first_name \""),
        "workflows/test.yaml:5:",
        "template syntax error",
    );
}

#[test]
fn opened_must_name_an_earlier_email_step() {
    let later = GOOD.replace("if: { opened: hello }", "if: { opened: later }")
        + "  - id: later\n    email: { subject: x, template: emails/guide.html }\n";
    assert_one(&later, "workflows/test.yaml:9:", "'later' is not an email step above this one");
    assert_one(
        &GOOD.replace("if: { opened: hello }", "if: { clicked: pause }"),
        "workflows/test.yaml:9:",
        "'pause' is not an email step",
    );
    assert_one(
        &GOOD.replace("if: { opened: hello }", "if: { opened: helo }"),
        "workflows/test.yaml:9:",
        "did you mean 'hello'?",
    );
    // exit_when is checked before every step, so any email step of the workflow will do.
    assert_eq!(diagnose(&format!("exit_when: {{ clicked: hello }}\n{GOOD}")), Vec::<String>::new());
}

#[test]
fn unknown_lists_are_named_with_a_suggestion() {
    assert_one(
        &GOOD.replace("subscribed: guide-leads", "subscribed: guide-lead"),
        "workflows/test.yaml:2:24:",
        "unknown list 'guide-lead' (did you mean 'guide-leads'?)",
    );
    assert_one(&GOOD.replace("tag: engaged", "join: vip"), "workflows/test.yaml:12:", "unknown list 'vip'");
}

/// The problems of a folder holding `yaml` as `test.yaml`, as `test.yaml:LINE:COLUMN: message`.
fn diagnose_folder(yaml: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test.yaml"), yaml).unwrap();
    let folder = with_context(|context| check_dir(dir.path(), context));
    let prefix = format!("{}/", dir.path().display());
    folder.diagnostics.iter().map(|d| d.to_string().replacen(&prefix, "", 1)).collect()
}

#[test]
fn declared_lists_are_checked_where_they_are_written() {
    let declare = |lists: &str| format!("{GOOD}lists:\n{lists}").replace("tag: engaged", "join: vip");
    let expect = |yaml: &str, start: &str, text: &str| {
        let found = diagnose_folder(yaml);
        assert!(found.iter().any(|d| d.starts_with(start) && d.contains(text)), "{start} {text}: {found:#?}");
    };
    assert_eq!(diagnose_folder(&declare("  - { slug: vip, name: VIPs }\n")), Vec::<String>::new());
    expect(&declare("  - { slug: Big Spenders, name: VIPs }\n"), "test.yaml:14:", "a list's slug");
    expect(&declare("  - { slug: vip, name: '  ' }\n"), "test.yaml:14:", "a list's name is empty");
    expect(
        &declare("  - { slug: vip, name: VIPs }\n  - { slug: vip, name: Other }\n"),
        "test.yaml:15:",
        "list 'vip' is declared twice in this file",
    );
    expect(&declare("  - { slug: vip, nmae: VIPs }\n"), "test.yaml:", "(did you mean `name`?)");
    // Joining a list nobody declared is still an error, with a hint from the declared ones.
    let typo = declare("  - { slug: vip, name: VIPs }\n").replace("join: vip", "join: vipp");
    expect(&typo, "test.yaml:12:", "unknown list 'vipp' (did you mean 'vip'?)");
}

#[test]
fn a_webhook_secret_may_not_be_one_of_ownlists_settings() {
    let hook = GOOD
        .replace("    wait: 2d", "    webhook: { url: \"https://crm.example.com/hook\", secret_env: OWNLIST_SECRET }");
    assert_one(&hook, "workflows/test.yaml:7:", "'OWNLIST_SECRET' is one of ownlist's own settings");
}

#[test]
fn steps_need_exactly_one_action() {
    assert_one(
        &GOOD.replace("    wait: 2d", "    wait: 2d\n    tag: x"),
        "workflows/test.yaml:6:5:",
        "has 2 actions (wait, tag)",
    );
    assert_one(
        &GOOD.replace("  - id: pause\n    wait: 2d\n", "  - id: pause\n"),
        "workflows/test.yaml:6:5:",
        "does nothing",
    );
    assert_one(
        &GOOD.replace("    wait: 2d", "    wait: 2d\n    then: []"),
        "workflows/test.yaml:6:",
        "`then` and `else` belong to an `if`",
    );
    assert_one(
        &GOOD.replace("trigger: { subscribed: guide-leads }", "trigger: { subscribed: guide-leads, tag_added: x }"),
        "workflows/test.yaml:2:",
        "exactly one of",
    );
    assert_one(&GOOD.replace("steps:\n", "steps: []\nx:\n"), "workflows/test.yaml:", "");
}

#[test]
fn the_file_name_is_the_workflow_id() {
    let templates = shipped_templates();
    let context = Context {
        templates: &templates,
        lists: None,
        sms_max_segments: ownlist::workflow::check::DEFAULT_SMS_MAX_SEGMENTS,
    };
    let found = check(Path::new("workflows/Bad Name.yaml"), GOOD, &context).unwrap_err();
    assert!(found[0].message.contains("the file name is the workflow's id"), "{found:#?}");
}

#[test]
fn any_input_at_all_gives_diagnostics_never_a_panic() {
    let templates = shipped_templates();
    let context = Context {
        templates: &templates,
        lists: None,
        sms_max_segments: ownlist::workflow::check::DEFAULT_SMS_MAX_SEGMENTS,
    };
    for input in
        ["", "---", "[", "name: [", "\u{0}\u{1}\u{2}", "a: &x [*x]", "- - - -", "name: x\nsteps: 7", &"[".repeat(5000)]
    {
        let result = check(Path::new("t.yaml"), input, &context);
        assert!(result.is_err(), "{input:?} was accepted");
    }
    // Mutate a real funnel thousands of ways: every variant either checks or is explained.
    let original = std::fs::read_to_string(repo().join("workflows/instagram-guide.yaml")).unwrap();
    let bytes: Vec<char> = original.chars().collect();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |bound: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % bound as u64).unwrap()
    };
    let alphabet: Vec<char> = " :-{}[]#\"'\n\tabz09|&*!%@`".chars().collect();
    for _ in 0..3000 {
        let mut variant = bytes.clone();
        for _ in 0..=next(4) {
            let at = next(variant.len());
            match next(3) {
                0 => {
                    variant.remove(at);
                }
                1 => variant.insert(at, alphabet[next(alphabet.len())]),
                _ => variant[at] = alphabet[next(alphabet.len())],
            }
        }
        let text: String = variant.into_iter().collect();
        if let Err(found) = check(Path::new("t.yaml"), &text, &context) {
            assert!(found.iter().all(|d| d.line >= 1 && d.column >= 1 && !d.message.is_empty()), "{found:#?}");
        }
    }
}

#[test]
fn a_date_trigger_must_allow_reentry() {
    let yaml = "name: Birthday\ntrigger:\n  date: { attribute: birthday, offset: -1d, at: \"09:00\" }\nsteps:\n  - id: card\n    tag: birthday\n";
    assert_one(yaml, "workflows/test.yaml:3:", "fires every year");
    assert_eq!(diagnose(&yaml.replace("steps:", "reentry: always\nsteps:")), Vec::<String>::new());
    assert_one(&yaml.replace("offset: -1d", "offset: yesterday"), "workflows/test.yaml:3:", "not a duration");
    assert_one(&yaml.replace("\"09:00\"", "\"9 o'clock\""), "workflows/test.yaml:3:", "not a time of day");
}

#[test]
fn every_shipped_email_template_shows_an_unsubscribe_link_once_in_the_layout() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let templates = ownlist::workflow::templates::TemplateChecker::load(&dir);
    let words = templates.translations().words("en");
    let business =
        serde_json::json!({"name": "Bottega Rossi", "postal_address": "Via Roma 1, Milano", "accent_color": "#2f6fed"});
    let mut context = serde_json::json!({
        "subscriber": {"first_name": "Ada", "email": "ada@example.com", "attributes": {}},
        "workflow": {"id": "w", "name": "W"},
        "business": business,
        "unsubscribe_url": "https://shop.example/u/TOKEN",
        "preferences_url": "https://shop.example/preferences/TOKEN",
    });
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.join("emails")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with('_') || !name.ends_with(".html") {
            continue;
        }
        let tera_context = tera::Context::from_serialize(&context).unwrap();
        let body = templates.tera().render(&format!("emails/{name}"), &tera_context).unwrap();
        assert!(!body.contains("<html"), "{name} is content for the layout, not a whole document");
        context["body"] = serde_json::Value::String(body.clone());
        context["has_unsubscribe"] = serde_json::Value::Bool(body.contains("/u/TOKEN"));
        context["t"] = serde_json::to_value(&*words).unwrap();
        context["lang"] = "en".into();
        context["subject"] = "S".into();
        let html =
            templates.tera().render("emails/_layout.html", &tera::Context::from_serialize(&context).unwrap()).unwrap();
        assert_eq!(
            html.matches("href=\"https://shop.example/u/TOKEN\"").count(),
            1,
            "{name}: one unsubscribe link: {html}"
        );
        assert!(html.contains("Bottega Rossi · Via Roma 1, Milano"), "{name}: the sender and its address: {html}");
        let text =
            templates.tera().render("emails/_layout.txt", &tera::Context::from_serialize(&context).unwrap()).unwrap();
        assert!(text.contains("Unsubscribe: https://shop.example/u/TOKEN"), "{text}");
        checked += 1;
    }
    assert!(checked >= 5, "the shipped templates were found ({checked})");
}

#[test]
fn an_sms_over_the_segment_limit_is_refused_at_its_line() {
    let sms = |text: &str| {
        format!(
            "name: Texts\ntrigger: {{ subscribed: guide-leads }}\nsteps:\n  - id: nudge\n    sms: {{ text: \"{text}\" }}\n"
        )
    };
    // 3 × 153 GSM-7 characters fit in three segments; one more needs a fourth.
    let long = "a".repeat(459 - "Hi Alexandra ".len());
    assert_eq!(diagnose(&sms(&format!("Hi {{{{ subscriber.first_name }}}} {long}"))), Vec::<String>::new());
    assert_one(
        &sms(&format!("Hi {{{{ subscriber.first_name }}}} {long}!")),
        "workflows/test.yaml:5:18:",
        "takes 4 SMS segments (460 characters, GSM-7",
    );
    // One character outside the GSM alphabet makes it UCS-2: 67 a segment.
    let accented = format!("Ciao, ça va? {}", "b".repeat(190));
    assert_one(&sms(&accented), "workflows/test.yaml:5:18:", "UCS-2");
    assert_eq!(diagnose(&sms(&format!("Ciao, ça va? {}", "b".repeat(150)))), Vec::<String>::new());
}

const PAGE: &str = r#"pages:
  - slug: guide
    title: Get the free guide
    list: guide-leads
    fields: [email, first_name, phone]
    required: [email]
    channels: [email, sms]
    consent_text: "Send me the guide."
"#;

/// Checks `yaml` as `workflows/test.yaml` (a workflow, pages or both).
fn diagnose_file(yaml: &str) -> Result<ownlist::workflow::Checked, Vec<String>> {
    with_context(|context| {
        ownlist::workflow::check_file(Path::new("workflows/test.yaml"), yaml, context)
            .map_err(|found| found.iter().map(Diagnostic::to_string).collect())
    })
}

fn assert_page_problem(yaml: &str, expected_start: &str, expected_text: &str) {
    let found = diagnose_file(yaml).err().unwrap_or_default();
    assert!(
        found.iter().any(|d| d.starts_with(expected_start) && d.contains(expected_text)),
        "expected a diagnostic starting {expected_start:?} containing {expected_text:?}, got {found:#?}"
    );
}

#[test]
fn landing_pages_are_checked_where_they_are_written() {
    let checked = diagnose_file(PAGE).unwrap();
    assert!(checked.workflow.is_none(), "a file may declare pages only");
    let page = &checked.pages[0];
    assert_eq!((page.slug.as_str(), page.list.as_str(), page.double_opt_in), ("guide", "guide-leads", true));
    assert_eq!(page.template, "pages/default.html");
    assert_eq!(page.version().len(), 12);
    let mut edited = page.clone();
    edited.consent_text = Some("Other words.".into());
    assert_ne!(edited.version(), page.version(), "changing the words changes the version");
    let both = diagnose_file(&format!("{GOOD}{PAGE}")).unwrap();
    assert!(both.workflow.is_some() && both.pages.len() == 1, "or a workflow and pages");

    assert_page_problem(&PAGE.replace("slug: guide", "slug: Guide Page"), "workflows/test.yaml:2:", "not a slug");
    assert_page_problem(
        &PAGE.replace("list: guide-leads", "list: guide-lead"),
        "workflows/test.yaml:4:",
        "did you mean 'guide-leads'",
    );
    assert_page_problem(
        &PAGE.replace("first_name, phone]", "first_nam, phone]"),
        "workflows/test.yaml:5:",
        "did you mean 'first_name'",
    );
    assert_page_problem(
        &PAGE.replace("required: [email]", "required: [last_name]"),
        "workflows/test.yaml:6:",
        "not among the fields",
    );
    assert_page_problem(
        &PAGE.replace("channels: [email, sms]", "channels: [email, fax]"),
        "workflows/test.yaml:7:",
        "not email, sms or whatsapp",
    );
    assert_page_problem(
        &PAGE.replace("fields: [email, first_name, phone]", "fields: [email]"),
        "workflows/test.yaml:7:",
        "the sms box needs the 'phone' field",
    );
    assert_page_problem(
        &PAGE.replace("consent_text: \"Send me the guide.\"", "consent_text: \"\""),
        "workflows/test.yaml:8:",
        "consent_text is empty",
    );
    assert_page_problem(&format!("{PAGE}    template: pages/nope.html\n"), "workflows/test.yaml:9:", "not found");
    assert_page_problem(
        &format!("{PAGE}    thank_you: {{ redirect: \"javascript:alert(1)\" }}\n"),
        "workflows/test.yaml:9:",
        "not an http(s) URL",
    );
    assert_page_problem(
        &format!("{PAGE}    default_country: XX\n"),
        "workflows/test.yaml:9:",
        "two-letter country code",
    );
    assert_page_problem(&format!("{PAGE}    cors: [\"*\"]\n"), "workflows/test.yaml:9:", "not an origin");
    assert_page_problem(
        &format!("{PAGE}    double_optin: false\n"),
        "workflows/test.yaml:9:",
        "did you mean `double_opt_in`",
    );
    assert_page_problem(
        &format!("{PAGE}  - slug: guide\n    title: Again\n    list: guide-leads\n"),
        "workflows/test.yaml:9:11:",
        "already 'guide'",
    );
    assert_page_problem("name: Half\npages: []\n", "workflows/test.yaml:1:1:", "missing field `trigger`");
}
