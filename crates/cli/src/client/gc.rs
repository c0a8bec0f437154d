//! `artifactstore gc`: garbage collection, run by the server when asked.

use super::Client;

impl Client {
    /// `gc`: asks the server to collect unreferenced blobs now (`POST /v1/admin/gc`).
    pub async fn gc(&self, expire: bool, dry_run: bool) -> anyhow::Result<u8> {
        let report: artifactstore_model::api::GcReport = self
            .send(
                self.http
                    .post(self.url(&["v1", "admin", "gc"]))
                    .json(&artifactstore_model::api::GcRequest { expire, dry_run }),
            )
            .await?
            .json()
            .await?;
        if report.expire && !self.json {
            println!(
                "{} {} version(s) by the retention rules",
                if report.dry_run {
                    "would expire"
                } else {
                    "expired"
                },
                report.expired_versions
            );
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else if report.busy {
            println!("another collector is running (a replica on the same database); nothing done");
        } else if report.dry_run {
            println!(
                "dry run: {} of {} blobs ({} bytes) are unreferenced; they are deleted once unreferenced for {} s",
                report.unreferenced_blobs,
                report.scanned_blobs,
                report.unreferenced_bytes,
                report.grace_secs
            );
        } else {
            println!(
                "freed {} bytes: {} blobs deleted; {} of {} blobs unreferenced (grace {} s)",
                report.freed_bytes,
                report.collected_blobs,
                report.unreferenced_blobs,
                report.scanned_blobs,
                report.grace_secs
            );
        }
        Ok(if report.busy { 1 } else { 0 })
    }
}
