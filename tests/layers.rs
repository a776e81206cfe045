//! The shape of `src/` (see docs/architecture.md): every `crate::` path points down the layers,
//! and no source file outgrows one idea. Reads the source; builds nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The crate's top-level modules, lowest first. A module may name those of a lower rank, never
/// one of its own rank or above (siblings of one rank stay independent of each other).
const LAYERS: &[(u8, &str)] = &[
    // Pure helpers and value types.
    (0, "core"),
    // The database.
    (1, "store"),
    // What producers write to: the outbox port, the daily counters.
    (2, "outbox"),
    (2, "rollups"),
    // The domain, in its own order: the audience, then what builds on it.
    (3, "audience"),
    (4, "workflow"),
    (4, "tokens"),
    (5, "pages"),
    (5, "stats"),
    (6, "inbound_sms"),
    // The workers that drain the outbox.
    (7, "delivery"),
    // The settings, parsed and checked, handed down as plain values.
    (8, "config"),
    // axum: the API, the public side, the dashboard.
    (9, "web"),
    // Start-up and the command line.
    (10, "app"),
];

/// The most lines a source file has before its unit tests.
const MAX_LINES: usize = 900;

fn rank(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(_, m)| *m == module).map(|(r, _)| *r)
}

fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

/// The module a file is (`src/web/api/stats.rs` → `["web", "api", "stats"]`).
fn module_of(file: &Path) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let relative = file.strip_prefix(&src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The source with comments removed and string and character literals emptied, line breaks
/// kept (so positions still name the line).
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let keep_breaks = |out: &mut String, text: &[char]| {
        for c in text {
            if *c == '\n' {
                out.push('\n');
            }
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let start = i;
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            keep_breaks(&mut out, &chars[start..i.min(chars.len())]);
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars.get(i.wrapping_sub(1)).is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"…", r#"…"#.
            let start = i;
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            keep_breaks(&mut out, &chars[start..j.min(chars.len())]);
            i = j;
        } else if c == '"' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
            keep_breaks(&mut out, &chars[start..i.min(chars.len())]);
        } else if c == '\'' {
            // A character literal ('x', '\n', '\''), or a lifetime ('a), which is kept.
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The first segment of each path a `use` group or path starting at `rest` names:
/// `audience::x` → `audience`; `{a::b, c}` → `a`, `c`.
fn first_segments(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 1;
        let mut items = vec![String::new()];
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => {
                    items.push(String::new());
                    continue;
                }
                _ => {}
            }
            if let Some(last) = items.last_mut() {
                last.push(c);
            }
        }
        items
            .iter()
            .map(|item| item.trim().chars().take_while(|c| is_ident(*c)).collect::<String>())
            .filter(|s| !s.is_empty())
            .collect()
    } else {
        let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if name.is_empty() { vec![] } else { vec![name] }
    }
}

/// How many inline `mod name { … }` blocks enclose `at`.
fn inline_modules_around(code: &str, at: usize) -> usize {
    let mut count = 0;
    let mut from = 0;
    while let Some(found) = code[from..].find("mod ") {
        let start = from + found;
        from = start + 4;
        if start >= at || code[..start].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[from..];
        let name_len = rest.chars().take_while(|c| is_ident(*c)).count();
        if !rest[name_len..].trim_start().starts_with('{') {
            continue;
        }
        let open = from + name_len + rest[name_len..].find('{').unwrap_or(0);
        let mut depth = 0;
        let mut close = code.len();
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        if at > open && at < close {
            count += 1;
        }
    }
    count
}

/// Each top-level module a file's code names, with the line it does it on.
fn named_modules(file: &Path) -> Vec<(String, usize)> {
    let code = code_only(&std::fs::read_to_string(file).unwrap());
    let here = module_of(file);
    let mut found = Vec::new();
    let mut at = 0;
    loop {
        let next = [code[at..].find("crate::"), code[at..].find("super::")].into_iter().flatten().min();
        let Some(offset) = next else { break };
        let start = at + offset;
        let line = code[..start].matches('\n').count() + 1;
        let preceded = code[..start].chars().next_back().is_some_and(|c| is_ident(c) || c == ':');
        if code[start..].starts_with("crate::") {
            at = start + "crate::".len();
            if !preceded {
                for module in first_segments(&code[at..]) {
                    found.push((module, line));
                }
            }
        } else {
            // `super::super::x`: where the chain of supers leads, then what it names there.
            let mut ups = 0;
            let mut cursor = start;
            while code[cursor..].starts_with("super::") {
                ups += 1;
                cursor += "super::".len();
            }
            at = cursor;
            if preceded {
                continue;
            }
            // A `super` inside an inline `mod tests { … }` starts one level deeper than the file.
            let depth = here.len() + inline_modules_around(&code, start);
            if ups >= depth {
                for module in first_segments(&code[cursor..]) {
                    found.push((module, line));
                }
            }
        }
    }
    found
}

#[test]
fn every_module_path_points_down_the_layers() {
    let mut problems = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for file in sources() {
        let module = module_of(&file);
        let Some(top) = module.first() else { continue };
        let shown = file.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().display().to_string();
        let Some(own) = rank(top) else {
            problems.push(format!("{shown}: module `{top}` is in no layer (add it to LAYERS in tests/layers.rs)"));
            continue;
        };
        *seen.entry(top.clone()).or_default() += 1;
        for (named, line) in named_modules(&file) {
            if &named == top || named == "self" {
                continue;
            }
            match rank(&named) {
                None => problems.push(format!("{shown}:{line}: `crate::{named}` is in no layer")),
                Some(theirs) if theirs >= own => problems.push(format!(
                    "{shown}:{line}: `{top}` (layer {own}) names `crate::{named}` (layer {theirs}), which is not below it"
                )),
                Some(_) => {}
            }
        }
    }
    for (_, module) in LAYERS {
        assert!(seen.contains_key(*module), "LAYERS names `{module}`, which src/ does not have");
    }
    assert!(problems.is_empty(), "paths that point up or sideways:\n{}", problems.join("\n"));
}

#[test]
fn no_source_file_outgrows_one_idea() {
    let mut long = Vec::new();
    for file in sources() {
        let text = std::fs::read_to_string(&file).unwrap();
        let before_tests = text.split("\n#[cfg(test)]").next().unwrap_or_default();
        let lines = before_tests.lines().count();
        if lines > MAX_LINES {
            long.push(format!("{}: {lines} lines before its tests", file.display()));
        }
    }
    assert!(long.is_empty(), "files over {MAX_LINES} lines:\n{}", long.join("\n"));
}

#[test]
fn the_reader_finds_paths_as_rust_writes_them() {
    let code = code_only(
        "let s = \"crate::web\"; // crate::app\nuse crate::{core::x, store};\n/* crate::web */ 'c' r#\"crate::app\"#",
    );
    assert!(!code.contains("web") && !code.contains("app"), "{code}");
    assert_eq!(first_segments("{core::x, store::{a, b}, self}"), ["core", "store", "self"]);
    assert_eq!(first_segments("audience::x"), ["audience"]);
}
