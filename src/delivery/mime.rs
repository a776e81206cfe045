//! Message bodies written directly in their wire form: parts (RFC 2045) in a
//! `multipart/alternative` (RFC 2046), each as it is (`7bit`) when it can be, quoted-printable
//! otherwise; CRLF line ends, and no line starting with a `.`, so the SMTP exchange sends the
//! bytes as they are (no dot-stuffing pass) in one write.
//!
//! lettre still writes the headers (their encodings and folding) and signs with DKIM; it gets
//! these bodies pre-encoded. Building a message this way takes one pass over each part, where
//! lettre's own path scanned each part to choose an encoding, encoded it, normalised its line
//! ends, copied it into the message, and copied it again while dot-stuffing.

/// The MIME body of a message with a plain and an HTML part, plain first (the HTML last: the
/// part mail clients prefer), each `7bit` when [`fits_7bit`] (written as it is, with CRLF line
/// ends: the usual case for HTML email, and one pass cheaper than encoding) and quoted-printable
/// otherwise. `boundary` must not occur in quoted-printable text: one starting with `=_` cannot,
/// as an encoded `=` is always followed by a hex digit or a line end (and a `7bit` part must not
/// hold it, which [`fits_7bit`] checks). It is appended to `out`.
pub fn write_alternative(out: &mut Vec<u8>, text: &str, html: &str, boundary: &str) {
    out.reserve(text.len() + html.len() + (text.len() + html.len()) / 16 + 512);
    for (content_type, part) in [("text/plain", text), ("text/html", html)] {
        let as_it_is = fits_7bit(part.as_bytes(), boundary.as_bytes());
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"; charset=utf-8\r\nContent-Transfer-Encoding: ");
        if as_it_is {
            out.extend_from_slice(b"7bit\r\n\r\n");
            with_crlf(part.as_bytes(), out);
        } else {
            out.extend_from_slice(b"quoted-printable\r\n\r\n");
            quoted_printable(part.as_bytes(), out);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
}

/// Whether `part` may go as it is, `7bit` (RFC 2045 §2.7, RFC 5322 §2.1.1): ASCII without NUL,
/// CR only before LF, lines of at most 998 bytes; and, for sending it in one write without
/// dot-stuffing, no line starting with `.`; and not holding `boundary`.
pub fn fits_7bit(part: &[u8], boundary: &[u8]) -> bool {
    const LONGEST: usize = 998;
    if !part.is_ascii() || memchr::memchr(0, part).is_some() || part.first() == Some(&b'.') {
        return false;
    }
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', part).chain([part.len()]) {
        let line = &part[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > LONGEST || memchr::memchr(b'\r', line).is_some() || part.get(end + 1) == Some(&b'.') {
            return false;
        }
        start = end + 1;
    }
    memchr::memmem::find(part, boundary).is_none()
}

/// Appends `part` with every line ending as CRLF (a lone LF becomes CRLF).
fn with_crlf(part: &[u8], out: &mut Vec<u8>) {
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', part) {
        let line = &part[start..end];
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
        start = end + 1;
    }
    out.extend_from_slice(&part[start..]);
}

/// A single plain-text body, quoted-printable, appended to `out`.
pub fn write_plain(out: &mut Vec<u8>, text: &str) {
    out.reserve(text.len() + text.len() / 16 + 8);
    quoted_printable(text.as_bytes(), out);
    out.extend_from_slice(b"\r\n");
}

/// Appends `input` quoted-printable encoded: printable ASCII as it is, everything else (and `=`)
/// as `=XX`; line breaks (LF or CRLF) as CRLF; white space at a line's end encoded; lines of at
/// most 76 characters (soft breaks `=` CRLF between); a `.` that would start a line encoded.
pub fn quoted_printable(input: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let blank = |byte: u8| byte == b' ' || byte == b'\t';
    for (index, line) in input.split(|&b| b == b'\n').enumerate() {
        if index > 0 {
            out.extend_from_slice(b"\r\n");
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (mut position, mut column) = (0, 0);
        while position < line.len() {
            if column == 0 && line[position] == b'.' {
                out.extend_from_slice(b"=2E");
                (position, column) = (position + 1, 3);
                continue;
            }
            // The longest run of bytes written as they are that fits: up to column 75, or 76
            // when it ends the line (no soft break follows), never ending the line in white space.
            let room = 75 - column;
            let most = (line.len() - position).min(room + 1);
            let mut run = safe_prefix(&line[position..position + most]);
            if run == room + 1 && position + run != line.len() {
                run = room;
            }
            if run > 0 && position + run == line.len() && blank(line[line.len() - 1]) {
                run -= 1;
            }
            if run > 0 {
                out.extend_from_slice(&line[position..position + run]);
                (position, column) = (position + run, column + run);
                continue;
            }
            let byte = line[position];
            let last = position + 1 == line.len();
            let width = if SAFE[usize::from(byte)] && !(last && blank(byte)) { 1 } else { 3 };
            if column + width > if last { 76 } else { 75 } {
                out.extend_from_slice(b"=\r\n");
                column = 0;
                continue;
            }
            out.extend_from_slice(&[b'=', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]]);
            (position, column) = (position + 1, column + 3);
        }
    }
}

/// How many bytes at the start of `bytes` quoted-printable writes as they are: sixteen at a time
/// while a whole block is (a branch-free test the compiler turns into vector instructions),
/// then byte by byte.
fn safe_prefix(bytes: &[u8]) -> usize {
    let is_safe = |b: u8| ((33..=126).contains(&b) & (b != b'=')) | (b == b' ') | (b == b'\t');
    let mut done = 0;
    for block in bytes.chunks_exact(16) {
        if !block.iter().fold(true, |all, &b| all & is_safe(b)) {
            break;
        }
        done += 16;
    }
    done + bytes[done..].iter().take_while(|&&b| is_safe(b)).count()
}

/// The bytes quoted-printable may write as they are: printable ASCII but `=`, and space and tab
/// (encoded all the same where they would end a line).
const SAFE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 33;
    while byte <= 126 {
        table[byte] = byte != b'=' as usize;
        byte += 1;
    }
    table[b' ' as usize] = true;
    table[b'\t' as usize] = true;
    table
};

/// `message` made safe to send after SMTP `DATA` (RFC 5321 §4.5.2): a `.` starting a line is
/// doubled. Borrowed as it is when no line starts with one (always, for bodies from this module).
pub fn dot_stuffed(message: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let starts = |at: usize| at == 0 || message[..at].ends_with(b"\r\n");
    let dots: Vec<usize> = memchr::memchr_iter(b'.', message).filter(|&at| starts(at)).collect();
    if dots.is_empty() {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len() + dots.len());
    let mut done = 0;
    for at in dots {
        out.extend_from_slice(&message[done..at]);
        out.push(b'.');
        done = at;
    }
    out.extend_from_slice(&message[done..]);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qp(input: &str) -> String {
        let mut out = Vec::new();
        quoted_printable(input.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    /// Decodes quoted-printable (soft breaks removed, `=XX` as bytes, CRLF as LF).
    fn decode(encoded: &str) -> String {
        let joined = encoded.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' {
                out.push(u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap(), 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap().replace("\r\n", "\n")
    }

    #[test]
    fn quoted_printable_keeps_lines_short_and_round_trips() {
        assert_eq!(qp("a=b, café"), "a=3Db, caf=C3=A9");
        assert_eq!(qp("ends with space \nand tab\t"), "ends with space=20\r\nand tab=09");
        assert_eq!(qp(".starts\r\n.again"), "=2Estarts\r\n=2Eagain");
        let long = format!("{}é{}.x {}", "a".repeat(74), "b".repeat(80), "c".repeat(200));
        let encoded = qp(&long);
        assert!(encoded.split("\r\n").all(|l| l.len() <= 76), "{encoded}");
        assert!(encoded.split("\r\n").all(|l| !l.starts_with('.')), "{encoded}");
        assert!(!encoded.contains("=_"), "no boundary can clash");
        for sample in [long.as_str(), "x\n\ny", "tail\n", "=\u{1F600}= ", &"é".repeat(100), &".".repeat(200)] {
            assert_eq!(decode(&qp(sample)), sample.replace("\r\n", "\n"), "{sample:?}");
            assert!(qp(sample).split("\r\n").all(|l| l.len() <= 76 && !l.starts_with('.')), "{sample:?}");
        }
    }

    #[test]
    fn quoted_printable_round_trips_any_mix_of_awkward_characters() {
        let pieces = ["a", " ", "\t", ".", "=", "é", "\n", "\r\n", "xyz", "😀", "=_"];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut sample = String::new();
            for _ in 0..(seed % 300) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                sample.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let encoded = qp(&sample);
            assert_eq!(decode(&encoded), sample.replace("\r\n", "\n"), "{sample:?} → {encoded:?}");
            for line in encoded.split("\r\n") {
                assert!(line.len() <= 76 && !line.starts_with('.'), "{line:?} in {encoded:?}");
                assert!(!line.ends_with(' ') && !line.ends_with('\t'), "trailing white space: {line:?}");
                assert!(line.is_ascii() && !line.contains("=_"), "{line:?}");
            }
        }
    }

    #[test]
    fn parts_come_plain_first_and_never_start_a_line_with_a_dot() {
        let mut body = Vec::new();
        write_alternative(&mut body, "Hi\n.\nbye", "<p>Hi</p>", "=_b");
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(text.starts_with("--=_b\r\nContent-Type: text/plain; charset=utf-8\r\n"), "{text}");
        assert!(
            text.contains(
                "text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nHi\r\n=2E\r\n"
            )
        );
        assert!(text.contains("text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n<p>Hi</p>\r\n"));
        assert!(text.find("text/plain").unwrap() < text.find("text/html").unwrap());
        assert!(text.ends_with("\r\n--=_b--\r\n"), "{text}");
        assert!(matches!(dot_stuffed(&body), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn only_short_ascii_lines_without_a_leading_dot_or_the_boundary_go_as_they_are() {
        let boundary = b"=_b";
        for fits in ["<p>Hi</p>", "a\nb\r\nc\n", "", "tail. \nin..side.", &"x".repeat(998)] {
            assert!(fits_7bit(fits.as_bytes(), boundary), "{fits:?}");
        }
        for not in [
            "café",
            ".first",
            "a\n.b",
            "a\r\n.b",
            "bare\rcarriage",
            "nul\0",
            "--=_b",
            &"x".repeat(999),
            &format!("short\n{}\n", "y".repeat(999)),
        ] {
            assert!(!fits_7bit(not.as_bytes(), boundary), "{not:?}");
        }
        let mut out = Vec::new();
        with_crlf(b"a\nb\r\n\nc", &mut out);
        assert_eq!(out, b"a\r\nb\r\n\r\nc");
    }

    #[test]
    fn a_part_goes_as_it_is_or_quoted_printable_and_reads_back_the_same() {
        let pieces = ["a", " ", ".", "=", "é", "\n", "\r\n", "<p>", "=_b", "\t"];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut sample = String::new();
            for _ in 0..(seed % 200) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                sample.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let mut body = Vec::new();
            write_alternative(&mut body, "x", &sample, "=_b");
            let body = String::from_utf8(body).unwrap();
            let html = &body[body.find("text/html").unwrap()..];
            let (head, rest) = html.split_once("\r\n\r\n").unwrap();
            let encoded = rest.strip_suffix("\r\n--=_b--\r\n").unwrap();
            let read = if head.ends_with("7bit") { encoded.replace("\r\n", "\n") } else { decode(encoded) };
            assert_eq!(read, sample.replace("\r\n", "\n"), "{sample:?} → {encoded:?}");
            assert!(encoded.split("\r\n").all(|l| !l.starts_with('.') && !l.contains("--=_b")), "{encoded:?}");
            assert!(matches!(dot_stuffed(body.as_bytes()), std::borrow::Cow::Borrowed(_)));
        }
    }

    #[test]
    fn dot_stuffing_doubles_only_dots_that_start_lines() {
        assert_eq!(&*dot_stuffed(b".a\r\nb.c\r\n..d\n.e"), b"..a\r\nb.c\r\n...d\n.e");
        assert_eq!(&*dot_stuffed(b"no dots at line starts."), b"no dots at line starts.");
    }
}
