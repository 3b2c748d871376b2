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

    fn target(name: &str, outcome: Outcome, fixes: &[(&str, Outcome, &str)]) -> TargetReport {
        use super::super::targets::Target;
        TargetReport {
            target: Target {
                name: name.into(),
                entry: name.into(),
                kernel_version: "6.12.118".into(),
                kernel: Kernel::Debian {
                    release: "6.12.118+deb12-cloud-amd64".into(),
                    package_version: "6.12.118-1~deb12u1".into(),
                },
            },
            series_sha256: "a".repeat(64),
            outcome,
            reason: None,
            fixes: fixes
                .iter()
                .map(|(id, outcome, why)| FixReport {
                    id: id.to_string(),
                    text: format!("{id}.patch").into(),
                    outcome: *outcome,
                    reason: (!why.is_empty()).then(|| why.to_string()),
                })
                .collect(),
            module: None,
            build_report: None,
            build_seconds: Some(12.34),
            vmtest_seconds: None,
            apply_latency_ms: Some(84.4),
            unpatch_latency_ms: None,
            serial_log: None,
            build_log: None,
            bundle: None,
            kernel_build: None,
        }
    }

    /// `farm publish` reads the `target.json` a run wrote elsewhere.
    #[test]
    fn a_target_report_reads_back_as_written() {
        let mut t = target(
            "newest",
            Outcome::Tested,
            &[("0001-one", Outcome::Tested, "")],
        );
        t.kernel_build = Some(bundle::manifest::Kernel {
            release: "6.12.118+deb12-cloud-amd64".into(),
            arch: "x86_64".into(),
            build_id: "ab12".into(),
            config_sha256: "c".repeat(64),
        });
        let json = serde_json::to_string(&t).unwrap();
        let back: TargetReport = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        assert_eq!(back.target, t.target);
        assert_eq!(back.kernel_build, t.kernel_build);
    }

    #[test]
    fn a_table_of_targets_by_fixes_with_links_and_escaped_text() {
        let s = testbed::scratch::Scratch::new("farm-html");
        let dir = s.dir("series");
        let diff = "--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\n";
        s.write(
            "series/0001-one.patch",
            format!("Subject: fix <one> & more\n\n{diff}"),
        );
        s.write("series/0002-two.patch", diff);
        let series = Series::read(&dir).unwrap();
        let artifact = s.dir("out");
        // A serial log that exists is linked from a tested fix.
        let mut tested = target(
            "cloud+118",
            Outcome::Tested,
            &[
                ("0001-one", Outcome::Tested, ""),
                ("0002-two", Outcome::DoesNotApply, "hunk <1> failed"),
            ],
        );
        let serial = s.write("out/cloud+118/vmtest/serial.log", "boot\n");
        tested.serial_log = Some(serial);
        let failed = target(
            "old",
            Outcome::BuildError,
            &[("0001-one", Outcome::BuildError, "gcc said \"no\"\nmore")],
        );
        let report = FarmReport {
            targets_file: "t.toml".into(),
            series: dir.clone(),
            passed: false,
            targets: vec![tested, failed],
        };
        let html = render(&report, &series, &artifact);
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(html.ends_with("</table>\n</body></html>\n"), "{html}");
        assert!(
            !html.contains("<script") && !html.contains("http"),
            "{html}"
        );
        // One header row and one row per target, fixes in series order.
        assert_eq!(html.matches("<tr>").count(), 3, "{html}");
        let one = html.find(">0001-one</th>").unwrap();
        assert!(one < html.find(">0002-two</th>").unwrap());
        assert!(
            html.contains("<th title=\"fix &lt;one&gt; &amp; more\">0001-one</th>"),
            "{html}"
        );
        assert!(
            html.contains(
                "<td class=\"tested\"><a href=\"cloud%2B118/vmtest/serial.log\">tested</a></td>"
            ),
            "{html}"
        );
        // Without a log, the cell links the target's target.json; the
        // reason's first line is shown, escaped.
        assert!(html.contains(
            "<td class=\"does-not-apply\"><a href=\"cloud%2B118/target.json\">does-not-apply</a>\
             <small>hunk &lt;1&gt; failed</small></td>"
        ), "{html}");
        assert!(
            html.contains("<small>gcc said &quot;no&quot;</small>"),
            "{html}"
        );
        assert!(!html.contains("more</small>"), "{html}");
        // A target with fewer fixes than the series gets an empty cell.
        assert!(html.contains("<td></td></tr>"), "{html}");
        assert!(
            html.contains("<td>12.3 s</td><td></td><td>84 ms</td>"),
            "{html}"
        );
        assert!(html.contains("kpbuild farm report: FAILED"), "{html}");
    }
}
