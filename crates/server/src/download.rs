//! How a stored body is presented to a browser. Artifacts are uploaded by anyone who
//! may write, so a body must never run as part of the server's origin: every file and
//! blob is served with `Content-Security-Policy: sandbox` (scripts, forms and
//! same-origin access are off even when the page is opened), and media types that a
//! browser would execute or render as a document are sent as attachments unless the
//! request asks `?inline=1` — and then still sandboxed. `X-Content-Type-Options:
//! nosniff` is on every answer (see `lib.rs`), so a browser never guesses a type.
//!
//! One exception lets a test report work in the browser UI: an active document asked
//! `?inline=1` by a frame (`Sec-Fetch-Dest: iframe`) may run its scripts —
//! `sandbox allow-scripts`, still without `allow-same-origin`, so the document has an
//! opaque origin and can read neither the server's pages, their storage nor cookies —
//! and only inside a frame of this server's own pages (`frame-ancestors 'self'`). Opened
//! any other way, it stays inert.
//!
//! With [`Downloads::Redirect`] a GET may instead be answered 307 to a presigned GET of
//! the blob ([`redirect_options`]): the store then sends the body, with the media type
//! and the attachment disposition this server would have sent. A store's answer cannot
//! carry the sandbox, so what would be rendered inline as an active document is never
//! redirected.

use std::time::Duration;

use artifactstore_blob::PresignOptions;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};

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

/// `?redirect=0` (or `false`): the body comes from this server even where downloads
/// are redirected to the store.
pub fn redirect_refused(uri: &Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair, "redirect=0" | "redirect=false"))
    })
}

/// How file and blob GETs are answered (`[s3] download`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Downloads {
    /// This server streams every body.
    #[default]
    Proxy,
    /// A GET the store can serve is answered `307` to a presigned GET of the blob that
    /// works for `expires_in`; the rest (and every store without presigned URLs, such as
    /// fs) is streamed as with `Proxy`.
    Redirect { expires_in: Duration },
}

/// What a download asks for, as far as the choice between redirect and proxy goes.
pub struct DownloadRequest<'a> {
    pub method: &'a Method,
    pub media_type: &'a str,
    /// The name an attachment is saved under.
    pub file_name: &'a str,
    /// `?inline=1`.
    pub inline: bool,
    /// `?redirect=0`.
    pub redirect_refused: bool,
}

/// The presigned GET to redirect a download to, or `None` to stream it from here.
///
/// Not redirected: HEAD (answered here, with no round trip to the store and no URL
/// signed for nothing), `?redirect=0`, and an active media type asked for inline — the
/// store's answer cannot carry `Content-Security-Policy: sandbox`, so the document
/// would run its scripts, and only this server can send it sandboxed. Everything else
/// asks the store for the headers [`protect`] would set: the media type, and for active
/// types the attachment disposition (so a browser saves the file instead of rendering
/// it); other types get no disposition, as from here.
pub fn redirect_options(downloads: Downloads, req: &DownloadRequest<'_>) -> Option<PresignOptions> {
    let Downloads::Redirect { expires_in } = downloads else {
        return None;
    };
    let active = is_active(req.media_type);
    if req.method != Method::GET || req.redirect_refused || (active && req.inline) {
        return None;
    }
    Some(PresignOptions {
        expires_in,
        content_type: Some(req.media_type.to_owned()),
        content_disposition: active.then(|| attachment_value(req.file_name)),
    })
}

/// The policy of an active document shown inline in a frame of this server's pages.
pub const FRAMED_SANDBOX: &str = "sandbox allow-scripts; frame-ancestors 'self'";

/// Whether the request is a browser loading a frame's document.
pub fn for_a_frame(request: &HeaderMap) -> bool {
    request
        .get("sec-fetch-dest")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"iframe"))
}

/// Adds the sandbox, and for active types without `?inline=1` an attachment
/// disposition naming the file (RFC 6266 `filename*`, UTF-8, percent-encoded). An active
/// type shown inline in a frame may run its scripts in an opaque origin (module docs).
pub fn protect(
    headers: &mut HeaderMap,
    media_type: &str,
    file_name: &str,
    inline: bool,
    in_frame: bool,
) {
    let policy = if is_active(media_type) && inline && in_frame {
        FRAMED_SANDBOX
    } else {
        SANDBOX
    };
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    if is_active(media_type) && !inline {
        headers.insert(header::CONTENT_DISPOSITION, attachment(file_name));
    }
}

/// `Content-Disposition: attachment` naming the file it is saved under (RFC 6266
/// `filename*`, UTF-8, percent-encoded).
pub fn attachment(file_name: &str) -> HeaderValue {
    HeaderValue::from_str(&attachment_value(file_name))
        .unwrap_or(HeaderValue::from_static("attachment"))
}

/// The text of [`attachment`]: only ASCII letters, digits and `-._~` are left as they
/// are, so it is always a valid header value.
fn attachment_value(file_name: &str) -> String {
    let mut encoded = String::with_capacity(file_name.len());
    for b in file_name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename*=UTF-8''{encoded}")
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
        protect(&mut h, "text/html", "report v1.html", false, false);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], "sandbox");
        assert_eq!(
            h[header::CONTENT_DISPOSITION],
            "attachment; filename*=UTF-8''report%20v1.html"
        );
        let mut h = HeaderMap::new();
        protect(&mut h, "text/html", "r.html", true, false);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], "sandbox");
        assert!(h.get(header::CONTENT_DISPOSITION).is_none());
        // Scripts run only for an active document asked inline by a frame, and then in
        // an opaque origin, framed by this server alone.
        for (media, inline, in_frame, policy) in [
            ("text/html", true, true, FRAMED_SANDBOX),
            ("text/html", false, true, SANDBOX),
            ("text/html", true, false, SANDBOX),
            ("text/plain", true, true, SANDBOX),
        ] {
            let mut h = HeaderMap::new();
            protect(&mut h, media, "r.html", inline, in_frame);
            assert_eq!(
                h[header::CONTENT_SECURITY_POLICY],
                policy,
                "{media} {inline} {in_frame}"
            );
        }
        assert!(!FRAMED_SANDBOX.contains("allow-same-origin"));
        let mut req = HeaderMap::new();
        assert!(!for_a_frame(&req));
        req.insert("sec-fetch-dest", HeaderValue::from_static("iframe"));
        assert!(for_a_frame(&req));
        req.insert("sec-fetch-dest", HeaderValue::from_static("document"));
        assert!(!for_a_frame(&req));
        let mut h = HeaderMap::new();
        protect(&mut h, "text/plain", "log.txt", false, false);
        assert!(h.get(header::CONTENT_DISPOSITION).is_none());
    }

    fn request<'a>(method: &'a Method, media_type: &'a str, query: &str) -> DownloadRequest<'a> {
        let uri: Uri = format!("/x{query}").parse().unwrap();
        DownloadRequest {
            method,
            media_type,
            file_name: "r 1.html",
            inline: inline_requested(&uri),
            redirect_refused: redirect_refused(&uri),
        }
    }

    #[test]
    fn redirects_carry_what_the_proxy_would_send_and_never_an_inline_active_document() {
        let on = Downloads::Redirect {
            expires_in: Duration::from_secs(60),
        };
        let get = Method::GET;
        let html = redirect_options(on, &request(&get, "text/html", "")).unwrap();
        assert_eq!(html.expires_in, Duration::from_secs(60));
        assert_eq!(html.content_type.as_deref(), Some("text/html"));
        assert_eq!(
            html.content_disposition.as_deref(),
            Some("attachment; filename*=UTF-8''r%201.html")
        );
        let text = redirect_options(on, &request(&get, "text/plain", "?inline=1")).unwrap();
        assert_eq!(text.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            text.content_disposition, None,
            "as the proxy: no disposition"
        );
        for (method, media_type, query) in [
            (Method::GET, "text/html", "?inline=1"),
            (Method::GET, "image/svg+xml", "?a=b&inline=true"),
            (Method::HEAD, "text/plain", ""),
            (Method::GET, "text/plain", "?redirect=0"),
            (Method::GET, "text/html", "?redirect=false"),
        ] {
            assert_eq!(
                redirect_options(on, &request(&method, media_type, query)),
                None,
                "{method} {media_type} {query}"
            );
        }
        assert_eq!(
            redirect_options(Downloads::Proxy, &request(&get, "text/plain", "")),
            None
        );
        assert!(redirect_refused(&"/x?redirect=0".parse().unwrap()));
        assert!(!redirect_refused(&"/x?redirect=1".parse().unwrap()));
    }

    #[test]
    fn inline_is_read_from_the_query() {
        assert!(inline_requested(&"/x?inline=1".parse().unwrap()));
        assert!(inline_requested(&"/x?a=b&inline=true".parse().unwrap()));
        assert!(!inline_requested(&"/x?inline=0".parse().unwrap()));
        assert!(!inline_requested(&"/x".parse().unwrap()));
    }
}
