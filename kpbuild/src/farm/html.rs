//! `farm-report.html`: the farm report as one static page (no script, no
//! external asset, readable from the file system): a table of targets ×
//! fixes with each outcome, the times and the apply latency, each cell
//! linking to the log that tells why.

use super::run::{FarmReport, FixReport, Outcome, TargetReport};
use super::series::Series;
use super::targets::Kernel;
use std::fmt::Write;
use std::path::Path;

/// Text made safe in HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A link to `path` from a page in `base`: relative when inside it, every
/// byte but unreserved ones and `/` percent-encoded.
pub fn href(path: &Path, base: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    let mut out = String::new();
    if rel.is_absolute() {
        out.push_str("file://");
    }
    for b in rel.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:1em}\
table{border-collapse:collapse}th,td{border:1px solid #999;padding:4px 6px;\
vertical-align:top;text-align:left}td small{display:block;color:#444;max-width:24em}\
.tested,.unchanged{background:#d4f4d4}.does-not-apply{background:#eee}\
.refused,.no-change{background:#fff3c4}\
.build-error,.vmtest-failure,.publish-error{background:#f8c8c8}";

/// The page for `report`: one row per target, one column per fix of the
/// series (in its order); logs are linked relative to `artifact`.
pub fn render(report: &FarmReport, series: &Series, artifact: &Path) -> String {
    let mut page = String::new();
    let passed = if report.passed { "passed" } else { "FAILED" };
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>kpbuild farm report</title><style>{STYLE}</style></head><body>\n\
         <h1>kpbuild farm report: {passed}</h1>\n<p>targets {}<br>series {}</p>\n\
         <table>\n<tr><th>target</th><th>kernel</th><th>outcome</th><th>build</th>\
         <th>vmtest</th><th>apply latency</th><th>unpatch latency</th><th>bundle</th>",
        escape(&report.targets_file.display().to_string()),
        escape(&report.series.display().to_string()),
    );
    for f in &series.fixes {
        let _ = write!(
            page,
            "<th title=\"{}\">{}</th>",
            escape(&f.title),
            escape(&f.id)
        );
    }
    page.push_str("</tr>\n");
    for t in &report.targets {
        row(&mut page, t, series, artifact);
    }
    page.push_str("</table>\n</body></html>\n");
    page
}

fn row(page: &mut String, t: &TargetReport, series: &Series, artifact: &Path) {
    let kernel = match &t.target.kernel {
        Kernel::Debian { release, .. } => format!("debian {release}"),
        Kernel::Tree { src, .. } => format!("tree {}", src.display()),
    };
    let target_json = artifact.join(&t.target.name).join("target.json");
    let secs = |s: Option<f64>| s.map(|s| format!("{s:.1} s")).unwrap_or_default();
    let ms = |m: Option<f64>| m.map(|m| format!("{m:.0} ms")).unwrap_or_default();
    let bundle = t
        .bundle
        .as_ref()
        .map(|b| format!("sequence {}", b.sequence))
        .unwrap_or_default();
    let _ = write!(
        page,
        "<tr><th><a href=\"{}\">{}</a></th><td>{}</td>{}<td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td><td>{}</td>",
        href(&target_json, artifact),
        escape(&t.target.name),
        escape(&kernel),
        cell(
            t.outcome,
            t.reason.as_deref(),
            &log_of(t, t.outcome),
            artifact
        ),
        secs(t.build_seconds),
        secs(t.vmtest_seconds),
        ms(t.apply_latency_ms),
        ms(t.unpatch_latency_ms),
        escape(&bundle),
    );
    for f in &series.fixes {
        match t.fixes.iter().find(|r| r.id == f.id) {
            Some(FixReport {
                outcome, reason, ..
            }) => page.push_str(&cell(
                *outcome,
                reason.as_deref(),
                &log_of(t, *outcome),
                artifact,
            )),
            None => page.push_str("<td></td>"),
        }
    }
    page.push_str("</tr>\n");
}

/// The log that tells about an outcome: the guest's for a test, the
/// build's for a build, else `target.json` (it holds the reason).
fn log_of(t: &TargetReport, outcome: Outcome) -> std::path::PathBuf {
    let tested = matches!(outcome, Outcome::Tested | Outcome::VmtestFailure);
    let built = matches!(
        outcome,
        Outcome::Refused | Outcome::NoChange | Outcome::BuildError | Outcome::PublishError
    );
    let serial = t.serial_log.as_ref().filter(|p| tested && p.is_file());
    let build = t
        .build_log
        .as_ref()
        .filter(|p| (tested || built) && p.is_file());
    serial
        .or(build)
        .cloned()
        .unwrap_or_else(|| t.target.name.clone().into())
        .to_path_buf()
}

/// One outcome: its name linked to its log, the reason's first line below.
fn cell(outcome: Outcome, reason: Option<&str>, log: &Path, artifact: &Path) -> String {
    let log = if log.is_relative() && log.components().count() == 1 {
        // A target name: its target.json.
        artifact.join(log).join("target.json")
    } else {
        log.to_path_buf()
    };
    let reason = reason
        .and_then(|r| r.lines().next())
        .map(|r| {
            let short: String = r.chars().take(200).collect();
            format!("<small>{}</small>", escape(&short))
        })
        .unwrap_or_default();
    format!(
        "<td class=\"{name}\"><a href=\"{}\">{name}</a>{reason}</td>",
        href(&log, artifact),
        name = outcome.name(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_and_href() {
        assert_eq!(
            escape("<a href=\"x\">Tom & 'Jerry'</a>"),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain 6.12.118+deb12"), "plain 6.12.118+deb12");
        let base = Path::new("/srv/out");
        assert_eq!(
            href(Path::new("/srv/out/t+1/vmtest/serial.log"), base),
            "t%2B1/vmtest/serial.log"
        );
        assert_eq!(
            href(Path::new("/elsewhere/a b\"<.log"), base),
            "file:///elsewhere/a%20b%22%3C.log"
        );
    }
}
