//! Charts as SVG drawn on the server: no script, no web font, no CDN. Each chart is an `<svg
//! role="img">` with a `<title>` and a `<desc>` that say what it shows in words, and every mark
//! carries its figure in a `<title>` of its own; the pages print the same figures in a table.

use std::fmt::Write;

/// Colours of the series, each with a contrast of at least 4.5:1 on white.
const COLOURS: [&str; 4] = ["#1d4ed8", "#15803d", "#b45309", "#7e22ce"];

/// Text made safe inside SVG (XML).
fn text(value: &str) -> String {
    value.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The top of an axis with four gridlines: four times a round step (1, 2 or 5 × a power of
/// ten), at least `max`, so every gridline is a whole round number.
fn ceiling(max: i64) -> i64 {
    let mut power = 1i64;
    loop {
        for m in [1, 2, 5] {
            let step = m * power;
            if step * 4 >= max {
                return step * 4;
            }
        }
        power = power.saturating_mul(10);
    }
}

fn open(out: &mut String, id: &str, width: u32, height: u32, title: &str, desc: &str) {
    let _ = write!(
        out,
        "<svg class=\"chart\" role=\"img\" viewBox=\"0 0 {width} {height}\" preserveAspectRatio=\"xMinYMin meet\" \
         aria-labelledby=\"{id}-title {id}-desc\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title id=\"{id}-title\">{}</title><desc id=\"{id}-desc\">{}</desc>",
        text(title),
        text(desc)
    );
}

/// Lines over days: one per series, with a legend; `days` are the x labels (`YYYY-MM-DD`).
pub fn lines(id: &str, title: &str, days: &[String], series: &[(&str, Vec<i64>)]) -> String {
    let (width, height, left, right, top, bottom) = (640.0, 260.0, 48.0, 14.0, 36.0, 30.0);
    let max = ceiling(series.iter().flat_map(|(_, v)| v.iter().copied()).max().unwrap_or(0));
    let totals: Vec<String> =
        series.iter().map(|(name, values)| format!("{} {name}", values.iter().sum::<i64>())).collect();
    let desc = format!(
        "{} days from {} to {}: {}.",
        days.len(),
        days.first().map_or("", String::as_str),
        days.last().map_or("", String::as_str),
        totals.join(", ")
    );
    let mut out = String::new();
    open(&mut out, id, 640, 260, title, &desc);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let x = |i: usize| left + if days.len() > 1 { plot_w * i as f64 / (days.len() - 1) as f64 } else { plot_w / 2.0 };
    let y = |v: i64| top + plot_h - plot_h * v as f64 / max as f64;
    for k in 0..=4 {
        let value = max * k / 4;
        let at = y(value);
        let _ = write!(
            out,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{at:.1}\" y2=\"{at:.1}\" stroke=\"#e5e7eb\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"13\" fill=\"#374151\">{value}</text>",
            width - right,
            left - 6.0,
            at + 4.0
        );
    }
    let every = (days.len() / 5).max(1);
    for (i, day) in days.iter().enumerate().filter(|(i, _)| i % every == 0 || *i + 1 == days.len()) {
        let label = day.get(5..).unwrap_or(day);
        let anchor = if i + 1 == days.len() && days.len() > 1 { "end" } else { "middle" };
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\" font-size=\"13\" fill=\"#374151\">{}</text>",
            x(i),
            height - 10.0,
            text(label)
        );
    }
    for (s, (name, values)) in series.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        let points: Vec<String> = values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v))).collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2.5\" points=\"{}\"/>",
            points.join(" ")
        );
        for (i, v) in values.iter().enumerate() {
            let day = days.get(i).map_or("", String::as_str);
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>{}: {v} {}</title></circle>",
                x(i),
                y(*v),
                text(day),
                text(name)
            );
        }
        let lx = left + 130.0 * s as f64;
        let _ = write!(
            out,
            "<rect x=\"{lx}\" y=\"8\" width=\"14\" height=\"14\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"20\" font-size=\"14\" fill=\"#111827\">{}</text>",
            lx + 20.0,
            text(name)
        );
    }
    out.push_str("</svg>");
    out
}

/// Horizontal bars, one per item, with the figure (and an optional note) at the end of each.
pub fn bars(id: &str, title: &str, items: &[(String, i64, Option<String>)]) -> String {
    let row = 30.0;
    let (left, width) = (160.0, 560.0);
    let height = 16.0 + row * items.len().max(1) as f64;
    let max = items.iter().map(|(_, v, _)| *v).max().unwrap_or(0).max(1);
    let desc: Vec<String> = items
        .iter()
        .map(|(label, v, note)| match note {
            Some(note) => format!("{label}: {v} ({note})"),
            None => format!("{label}: {v}"),
        })
        .collect();
    let mut out = String::new();
    open(&mut out, id, 560, height.round() as u32, title, &format!("{}.", desc.join("; ")));
    let span = width - left - 170.0;
    for (i, (label, value, note)) in items.iter().enumerate() {
        let top = 8.0 + row * i as f64;
        let w = (span * *value as f64 / max as f64).max(if *value > 0 { 2.0 } else { 0.0 });
        let figure = match note {
            Some(note) => format!("{value} · {note}"),
            None => value.to_string(),
        };
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"13\" fill=\"#111827\">{}</text>\
             <rect x=\"{left}\" y=\"{top:.1}\" width=\"{w:.1}\" height=\"20\" rx=\"3\" fill=\"{}\"><title>{}: {}</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"13\" fill=\"#111827\">{}</text>",
            left - 8.0,
            top + 15.0,
            text(label),
            COLOURS[0],
            text(label),
            text(&figure),
            left + w + 6.0,
            top + 15.0,
            text(&figure)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!([0, 1, 3, 5, 7, 10, 11, 180, 2001].map(ceiling), [4, 4, 4, 8, 8, 20, 20, 200, 4000]);
    }

    #[test]
    fn charts_say_what_they_show_and_escape_labels() {
        let svg = bars("b", "Sources", &[("<b>x</b>".into(), 3, Some("50%".into())), ("y".into(), 0, None)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("role=\"img\"") && svg.contains("<title id=\"b-title\">Sources</title>"));
        assert!(svg.contains("&lt;b&gt;x&lt;/b&gt;: 3 (50%); y: 0."), "{svg}");
        assert!(!svg.contains("<b>"));
        let days = vec!["2026-03-01".to_owned(), "2026-03-02".to_owned()];
        let svg = lines("l", "Daily", &days, &[("views", vec![4, 6]), ("confirmed", vec![1, 2])]);
        assert!(svg.contains("2 days from 2026-03-01 to 2026-03-02: 10 views, 3 confirmed."), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("<title>2026-03-02: 6 views</title>"));
    }
}
