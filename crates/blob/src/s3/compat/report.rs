//! What `storage compat` answers: one row per probed feature, and its renderings.

use serde::Serialize;

/// The answer of one probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Status {
    /// The store behaves as S3 specifies.
    Pass,
    /// The store answers, but wrongly: other bytes, a wrong status, a missing value, or
    /// a check S3 makes that it skips where skipping it is unsafe.
    Fail,
    /// The store refuses the feature or ignores it: an answer, not an error.
    Unsupported,
    /// Not probed from this configuration (the evidence says why).
    Skipped,
}

/// One feature of the endpoint and what it answered.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Stable name for scripts, e.g. `put-if-none-match`.
    pub id: &'static str,
    /// e.g. `conditional writes`.
    pub group: &'static str,
    /// What S3 does, in a few words.
    pub feature: &'static str,
    pub status: Status,
    /// HTTP statuses and error codes the store answered, never a secret.
    pub evidence: String,
    pub millis: u64,
}

/// What the probes left behind, if anything.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cleanup {
    pub objects_deleted: usize,
    pub uploads_aborted: usize,
    /// Empty when everything written was removed.
    pub problems: Vec<String>,
    /// Why the scratch prefix could not be listed to confirm that nothing is left
    /// (every key a probe named was deleted all the same).
    pub unconfirmed: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The endpoint URL, or `AWS S3 (<region>)`.
    pub endpoint: String,
    pub bucket: String,
    /// The key prefix every probe wrote under (removed at the end).
    pub scratch_prefix: String,
    pub rows: Vec<Row>,
    /// Stopped by a signal before every feature was probed (cleanup still ran).
    pub interrupted: bool,
    pub cleanup: Cleanup,
}

impl Report {
    pub fn row(&self, id: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == id)
    }

    /// A Markdown table (`| group | feature | id | result | evidence |`), no timings, so
    /// that two runs against the same store print the same text.
    pub fn markdown(&self) -> String {
        let mut out =
            String::from("| group | feature | id | result | evidence |\n|---|---|---|---|---|\n");
        for r in &self.rows {
            let status: &'static str = r.status.into();
            out.push_str(&format!(
                "| {} | {} | `{}` | {} | {} |\n",
                r.group,
                escape_cell(r.feature),
                r.id,
                status,
                escape_cell(&r.evidence)
            ));
        }
        out
    }

    /// Plain text for a terminal: one line per row.
    pub fn text(&self) -> String {
        let mut out = format!(
            "endpoint     {}\nbucket       {}\n",
            self.endpoint, self.bucket
        );
        for r in &self.rows {
            let status: &'static str = r.status.into();
            out.push_str(&format!(
                "{:<11} {:<28} {:>6} ms  {}\n",
                status.to_uppercase(),
                r.id,
                r.millis,
                r.evidence
            ));
        }
        let c = &self.cleanup;
        out.push_str(&format!(
            "cleanup      {} objects deleted, {} uploads aborted{}\n",
            c.objects_deleted,
            c.uploads_aborted,
            if c.problems.is_empty() {
                String::new()
            } else {
                format!("; LEFT BEHIND: {}", c.problems.join("; "))
            }
        ));
        if let Some(why) = &c.unconfirmed {
            out.push_str(&format!(
                "             (could not list to confirm: {why})\n"
            ));
        }
        out
    }
}

fn escape_cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_a_table_without_timings_and_escapes_pipes() {
        let report = Report {
            endpoint: "http://127.0.0.1:1".into(),
            bucket: "b".into(),
            scratch_prefix: "compat-x/".into(),
            rows: vec![Row {
                id: "range-suffix",
                group: "ranged reads",
                feature: "bytes=-10",
                status: Status::Unsupported,
                evidence: "a|b".into(),
                millis: 1234,
            }],
            interrupted: false,
            cleanup: Cleanup::default(),
        };
        let md = report.markdown();
        assert!(
            md.contains("| ranged reads | bytes=-10 | `range-suffix` | unsupported | a\\|b |"),
            "{md}"
        );
        assert!(!md.contains("1234"), "{md}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rows"][0]["status"], "unsupported");
    }
}
