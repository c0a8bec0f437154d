//! How a stored body is presented to a browser. Artifacts are uploaded by anyone who
//! may write, so a body must never run as part of the server's origin: every file and
//! blob is served with `Content-Security-Policy: sandbox` (scripts, forms and
//! same-origin access are off even when the page is opened), and media types that a
//! browser would execute or render as a document are sent as attachments unless the
//! request asks `?inline=1` — and then still sandboxed. `X-Content-Type-Options:
//! nosniff` is on every answer (see `lib.rs`), so a browser never guesses a type.

use axum::http::{HeaderMap, HeaderValue, Uri, header};

/// Applied to every file and blob body.
pub const SANDBOX: &str = "sandbox";

/// Whether a browser would execute this media type, or render it as an active
/// document (HTML, SVG, XHTML, XML, JavaScript).
pub fn is_active(media_type: &str) -> bool {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/html"
            | "application/xhtml+xml"
            | "image/svg+xml"
            | "text/xml"
            | "application/xml"
            | "text/xsl"
            | "application/xslt+xml"
            | "text/javascript"
            | "application/javascript"
            | "application/x-javascript"
            | "text/ecmascript"
            | "application/ecmascript"
            | "multipart/x-mixed-replace"
    ) || essence.ends_with("+xml")
}

/// `?inline=1` (or `true`) among the query parameters.
pub fn inline_requested(uri: &Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair, "inline=1" | "inline=true"))
    })
}

/// Adds the sandbox, and for active types without `?inline=1` an attachment
/// disposition naming the file (RFC 6266 `filename*`, UTF-8, percent-encoded).
pub fn protect(headers: &mut HeaderMap, media_type: &str, file_name: &str, inline: bool) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SANDBOX),
    );
    if is_active(media_type) && !inline {
        headers.insert(header::CONTENT_DISPOSITION, attachment(file_name));
    }
}

/// `Content-Disposition: attachment` naming the file it is saved under (RFC 6266
/// `filename*`, UTF-8, percent-encoded).
pub fn attachment(file_name: &str) -> HeaderValue {
    let mut encoded = String::with_capacity(file_name.len());
    for b in file_name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let value = format!("attachment; filename*=UTF-8''{encoded}");
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("attachment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_types_are_recognised_whatever_their_parameters() {
        for t in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "application/atom+xml",
            "text/javascript",
            "application/xml",
        ] {
            assert!(is_active(t), "{t}");
        }
        for t in [
            "text/plain",
            "application/json",
            "image/png",
            "text/markdown",
            "application/octet-stream",
        ] {
            assert!(!is_active(t), "{t}");
        }
    }

    #[test]
    fn html_becomes_a_sandboxed_attachment_unless_inline() {
        let mut h = HeaderMap::new();
        protect(&mut h, "text/html", "report v1.html", false);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], "sandbox");
        assert_eq!(
            h[header::CONTENT_DISPOSITION],
            "attachment; filename*=UTF-8''report%20v1.html"
        );
        let mut h = HeaderMap::new();
        protect(&mut h, "text/html", "r.html", true);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], "sandbox");
        assert!(h.get(header::CONTENT_DISPOSITION).is_none());
        let mut h = HeaderMap::new();
        protect(&mut h, "text/plain", "log.txt", false);
        assert!(h.get(header::CONTENT_DISPOSITION).is_none());
    }

    #[test]
    fn inline_is_read_from_the_query() {
        assert!(inline_requested(&"/x?inline=1".parse().unwrap()));
        assert!(inline_requested(&"/x?a=b&inline=true".parse().unwrap()));
        assert!(!inline_requested(&"/x?inline=0".parse().unwrap()));
        assert!(!inline_requested(&"/x".parse().unwrap()));
    }
}
