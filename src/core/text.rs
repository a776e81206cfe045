//! Text helpers: the closest match for a typo, and HTML email as readable plain text.

/// The candidate closest to `word` by edit distance, when it is close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) || word.starts_with(c) || c.starts_with(word))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            current.push((previous[j] + cost).min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// A plain-text rendering of simple HTML email: links as `text (url)`, paragraphs as lines.
/// Tags are dropped, the common entities decoded, runs of white space made one space, and blank
/// lines kept single. One pass over the HTML and one over the text (the plain part of every
/// email without a text template is derived this way when it is sent).
pub fn html_to_text(html: &str) -> String {
    html_to_text_with(html, |_| None)
}

/// [`html_to_text`] with each link's URL as `original` gives it (the URL a tracking link stands
/// for), or as written when it gives none.
pub fn html_to_text_with<'a>(html: &str, original: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = PlainText::with_capacity(html.len());
    let mut rest = html;
    let mut pending_href: Option<&str> = None;
    while let Some(start) = memchr::memchr(b'<', rest.as_bytes()) {
        push_decoded(&mut out, &rest[..start]);
        let Some(end) = memchr::memchr(b'>', &rest.as_bytes()[start..]) else {
            rest = "";
            break;
        };
        let tag = &rest[start + 1..start + end];
        let closing = tag.starts_with('/');
        let name = tag.trim_start_matches('/').split(|c: char| c.is_whitespace()).next().unwrap_or("");
        let name = name.strip_suffix('/').unwrap_or(name);
        let is = |candidates: &[&str]| candidates.iter().any(|c| name.eq_ignore_ascii_case(c));
        if closing
            && is(&["a"])
            && let Some(href) = pending_href.take()
        {
            out.push_str(" (");
            match original(href) {
                Some(url) => out.push_str(url),
                None => push_decoded(&mut out, href),
            }
            out.push_str(")");
        }
        // A link hidden from readers (the tracking trap) is not text either.
        if !closing && is(&["a"]) && tag.contains("aria-hidden=\"true\"") {
            let after = &rest[start + end + 1..];
            let at = after.to_ascii_lowercase().find("</a");
            rest = at.and_then(|i| after[i..].find('>').map(|j| &after[i + j + 1..])).unwrap_or_default();
            continue;
        }
        if !closing && is(&["a"]) {
            pending_href = tag.split("href=\"").nth(1).and_then(|h| h.split('"').next());
        }
        // What is not shown (the head with its title, styles, scripts) is not text either.
        if !closing && is(&["head", "style", "script"]) {
            let after = &rest[start + end + 1..];
            let close = format!("</{}", name.to_ascii_lowercase());
            let at = after.to_ascii_lowercase().find(&close);
            rest = at.and_then(|i| after[i..].find('>').map(|j| &after[i + j + 1..])).unwrap_or_default();
            continue;
        }
        // A block's start and end break the line; so do <br> and <hr>.
        if is(&["p", "h1", "h2", "h3", "h4", "div", "li", "tr", "table", "br", "hr"]) {
            out.push_str("\n");
        }
        rest = &rest[start + end + 1..];
    }
    push_decoded(&mut out, rest);
    out.finish()
}

/// Text written as readable lines as it comes: each line's words one space apart, lines with
/// no words kept as one blank line between others, no white space at the end (what splitting
/// into lines and words and joining them again gives, in one pass).
struct PlainText {
    text: String,
    /// The current line has a word.
    words: bool,
    /// White space followed the current line's last word.
    space: bool,
    /// The last line ended was blank.
    blank: bool,
}

impl PlainText {
    fn with_capacity(capacity: usize) -> Self {
        Self { text: String::with_capacity(capacity), words: false, space: false, blank: false }
    }

    fn push_str(&mut self, s: &str) {
        let bytes = s.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            // A run of ASCII word bytes goes in as it is.
            let run = bytes[at..].iter().take_while(|&&b| b > b' ' && b < 0x80).count();
            if run > 0 {
                if self.space {
                    self.text.push(' ');
                    self.space = false;
                }
                self.text.push_str(&s[at..at + run]);
                self.words = true;
                at += run;
                continue;
            }
            let Some(c) = s[at..].chars().next() else { break };
            at += c.len_utf8();
            if c == '\n' {
                self.end_line();
            } else if c.is_whitespace() {
                self.space = self.words;
            } else {
                if self.space {
                    self.text.push(' ');
                    self.space = false;
                }
                self.text.push(c);
                self.words = true;
            }
        }
    }

    fn end_line(&mut self) {
        if self.words {
            self.text.push('\n');
            self.blank = false;
        } else {
            if !self.blank && !self.text.is_empty() {
                self.text.push('\n');
            }
            self.blank = true;
        }
        (self.words, self.space) = (false, false);
    }

    fn finish(mut self) -> String {
        self.end_line();
        let kept = self.text.trim_end().len();
        self.text.truncate(kept);
        self.text
    }
}

/// Appends `text` with the entities HTML email commonly holds decoded (`&nbsp;` as a space);
/// any other `&` is kept as it is.
fn push_decoded(out: &mut PlainText, text: &str) {
    const ENTITIES: [(&str, &str); 6] =
        [("&nbsp;", " "), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", "\""), ("&#39;", "'"), ("&amp;", "&")];
    let mut rest = text;
    while let Some(at) = memchr::memchr(b'&', rest.as_bytes()) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        match ENTITIES.iter().find(|(entity, _)| tail.starts_with(entity)) {
            Some((entity, decoded)) => {
                out.push_str(decoded);
                rest = &tail[entity.len()..];
            }
            None => {
                out.push_str("&");
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_readable_text() {
        let html = "<p>Hi Ada,</p>\n<h1>Here is your guide</h1>\n<p>Download it <a href=\"https://x.test/g.pdf\">here</a>.</p><hr><p>Tom &amp; Jerry</p>";
        assert_eq!(
            html_to_text(html),
            "Hi Ada,\n\nHere is your guide\n\nDownload it here (https://x.test/g.pdf).\n\nTom & Jerry"
        );
        let html = "<DIV>  a&nbsp;&nbsp;b \r\n c</DIV><BR/>&amp;lt; is &lt;, &quot;q&quot; &#39;s&#39; &x; &\n\n\n\
                    <A HREF=\"no\">x</A> <a class=\"k\" href=\"https://x.test/?a=1&amp;b=2\">go</a><p>cut <b";
        assert_eq!(html_to_text(html), "a b\nc\n\n&lt; is <, \"q\" 's' &x; &\n\nx go (https://x.test/?a=1&b=2)\ncut");
        let html = "<html><HEAD><title>Hidden</title><style>p{color:red}</style></HEAD><body><p>Shown</p>\
                    <script>no()</script><p>too</p></body></html>";
        assert_eq!(html_to_text(html), "Shown\n\ntoo", "a title, styles and scripts are not text");
        assert_eq!(html_to_text("<p>a</p><style>never closed"), "a");
    }

    /// Lines and words joined again, as the plain text is meant to read (the reference the
    /// one-pass writer is held to).
    fn joined_lines(raw: &str) -> String {
        let mut text = String::new();
        let mut blank = false;
        for line in raw.split('\n') {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.is_empty() {
                if !blank && !text.is_empty() {
                    text.push('\n');
                }
                blank = true;
            } else {
                text.push_str(&words.join(" "));
                text.push('\n');
                blank = false;
            }
        }
        text.trim_end().to_owned()
    }

    #[test]
    fn plain_text_reads_as_its_lines_and_words_joined_again() {
        let pieces = ["a", "word", " ", "  ", "\t", "\n", "\r\n", "\u{a0}", "é", "\u{2028}", "\n\n\n", "😀", "."];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            let mut raw = String::new();
            for _ in 0..(seed % 40) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                raw.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let mut written = PlainText::with_capacity(0);
            for part in raw.split_inclusive(' ') {
                written.push_str(part);
            }
            assert_eq!(written.finish(), joined_lines(&raw), "{raw:?}");
        }
    }
}
