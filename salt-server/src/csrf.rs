//! Forged requests: a page of another site, or of another port on the same host, must not make
//! a browser act on this server (with its cookie when tokens exist, at all when none does).
//! `SameSite=Strict` alone does not do it: a site is a host, whatever its port.
//!
//! Every request that may change something (any method but `GET`, `HEAD`, `OPTIONS` and
//! `TRACE`, and every WebSocket upgrade) is refused with 403 when
//! - it says it comes from another origin: `Sec-Fetch-Site` other than `same-origin` or `none`,
//!   or an `Origin` other than this server's own (`http://HOST` or `https://HOST`, with HOST as
//!   the request's `Host` gives it). The command line and the workers send neither;
//! - it is for the web UI (any path outside `/api/`, `/metrics` and `/healthz`) and does not
//!   carry the session's CSRF token: the form field `csrf` or the header `X-CSRF-Token`;
//! - it is for the REST API, authenticated by the sign-in cookie rather than
//!   `Authorization: Bearer`, and does not send the token in `X-CSRF-Token`.
//!
//! The token is the HMAC-SHA256, keyed by a random secret kept in the session cookie, of the
//! sign-in token the browser holds (none while the server has no token): a page of another port
//! that plants a session cookie still cannot know the token of a signed-in browser. Each HTML
//! page gets a session cookie when it has none, and the token in its forms and in its
//! `<meta name="csrf-token">` (also in the forms its live parts send). Every response also
//! carries a `Content-Security-Policy` (scripts and styles from this server only, no inline
//! script, never framed), `X-Content-Type-Options: nosniff` and `Referrer-Policy: same-origin`.
//!
//! Both cookies are named with the port the server listens on ([`CookieNames`]): two servers on
//! one host never share a session.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::api::ApiError;

/// The header a script sends the token in.
pub const HEADER: &str = "x-csrf-token";
/// The form field that carries the token.
pub const FIELD: &str = "csrf";
/// The hidden field every form that posts holds; the token is filled in on the way out.
pub const FORM_FIELD: &str = r#"<input type="hidden" name="csrf" value="">"#;
/// The page's token for its scripts, in its head; filled in on the way out.
pub const META: &str = r#"<meta name="csrf-token" content="">"#;

/// What every response carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// The largest form whose token is looked for (as much as a form handler takes).
const MAX_FORM_BYTES: usize = 2 << 20;

/// The names of a server's cookies, with the port it listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieNames {
    token: String,
    session: String,
}

impl CookieNames {
    /// The names for a server listening on `port`: `salt_token_PORT`, `salt_session_PORT`.
    pub fn for_port(port: u16) -> Self {
        Self { token: format!("salt_token_{port}"), session: format!("salt_session_{port}") }
    }

    /// The cookie that holds the sign-in token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The cookie that holds the session's secret, from which its CSRF token is made.
    pub fn session(&self) -> &str {
        &self.session
    }
}

/// The value of the cookie `name` in `headers`, if any.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|c| c.to_str().ok()).flat_map(|c| c.split(';')).find_map(|pair| {
        let (n, value) = pair.trim().split_once('=')?;
        (n == name).then(|| value.trim().to_string())
    })
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > k.len() {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The CSRF token of the session `secret` for a browser signed in with `signed_in`.
pub fn token_for(secret: &str, signed_in: Option<&str>) -> String {
    let mut message = b"salt csrf\0".to_vec();
    message.extend_from_slice(signed_in.unwrap_or("").as_bytes());
    hex::encode(hmac_sha256(secret.as_bytes(), &message))
}

/// A session secret as the server makes them: 64 lowercase hex digits.
fn is_secret(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A new session secret.
fn new_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    crate::auth::random_bytes(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Whether a request may change something: every method but the safe ones, and WebSocket
/// upgrades (a `GET` a page of any site may make, cookies and all).
fn may_change(method: &Method, headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|u| u.to_str().ok())
        .is_some_and(|u| u.to_ascii_lowercase().contains("websocket"));
    upgrade || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// Why a request from a browser comes from another origin than this server (`authority` is
/// the host and port it was sent to), if it says so.
pub fn cross_origin(headers: &HeaderMap, authority: Option<&str>) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("").trim().to_ascii_lowercase();
        if site != "same-origin" && site != "none" {
            return Some(format!(
                "this request comes from a page of another site or port (Sec-Fetch-Site: {site}); \
                 only this server's own pages may change anything here"
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").trim();
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).or(authority).unwrap_or("").trim();
        let own = !host.is_empty()
            && ["http", "https"].iter().any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}://{host}")));
        if !own {
            return Some(format!(
                "this request comes from `{origin}`, not from this server (`{host}`); \
                 only this server's own pages may change anything here"
            ));
        }
    }
    None
}

/// Whether `path` is the web UI's (not the REST API, the metrics or the health check).
fn ui_path(path: &str) -> bool {
    !path.starts_with("/api/") && path != "/metrics" && path != "/healthz"
}

/// The token a request presents: the header, else the field of a posted form (the request is
/// given back whole either way). `Err` when the form is too large to read.
async fn presented(req: Request) -> Result<(Request, Option<String>), Response> {
    if let Some(value) = req.headers().get(HEADER) {
        let token = value.to_str().ok().map(|t| t.trim().to_string());
        return Ok((req, token));
    }
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Ok((req, None));
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let message = format!("the form is larger than {MAX_FORM_BYTES} bytes");
            return Err((StatusCode::PAYLOAD_TOO_LARGE, message).into_response());
        }
    };
    let token = form_urlencoded::parse(&bytes).find(|(k, _)| k == FIELD).map(|(_, v)| v.into_owned());
    Ok((Request::from_parts(parts, Body::from(bytes)), token))
}

/// The 403 for a refused request: a page for the UI, the API's JSON error for the API.
fn refuse(path: &str, why: &str) -> Response {
    if ui_path(path) {
        return crate::ui::refused(why);
    }
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("refused: {why}")).into_response()
}

/// The middleware (see the module's docs). `names` are the server's cookies.
pub async fn guard(State(names): State<CookieNames>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let changes = may_change(req.method(), req.headers());
    if changes && let Some(why) = cross_origin(req.headers(), req.uri().authority().map(|a| a.as_str())) {
        return refuse(&path, &why);
    }
    let signed_in = cookie(req.headers(), names.token());
    let session = cookie(req.headers(), names.session()).filter(|s| is_secret(s));
    let bearer = req.headers().contains_key(header::AUTHORIZATION);
    let needs_token = ui_path(&path) || (signed_in.is_some() && !bearer);
    let req = if changes && req.method() != Method::GET && needs_token {
        let (req, token) = match presented(req).await {
            Ok(found) => found,
            Err(response) => return response,
        };
        let expected = session.as_deref().map(|s| token_for(s, signed_in.as_deref()));
        let good = match (expected, token) {
            (Some(expected), Some(token)) => bool::from(expected.as_bytes().ct_eq(token.as_bytes())),
            _ => false,
        };
        if !good {
            let why = if ui_path(&path) {
                "the form's security token is missing or out of date (the page may be older than \
                 your sign-in, or come from elsewhere); reload the page and try again"
            } else {
                "a request signed in by the cookie must send the page's CSRF token in the header \
                 `X-CSRF-Token`; scripts and the command line send `Authorization: Bearer TOKEN` instead"
            };
            return refuse(&path, why);
        }
        req
    } else {
        req
    };
    let mut response = next.run(req).await;
    secure(response.headers_mut());
    let kind = response.headers().get(header::CONTENT_TYPE).and_then(|c| c.to_str().ok()).unwrap_or("");
    if kind.starts_with("text/html") {
        let (secret, fresh) = match session {
            Some(s) => (s, false),
            None => match new_secret() {
                Ok(s) => (s, true),
                Err(e) => {
                    return (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read random bytes: {e}"))
                        .into_response();
                }
            },
        };
        let token = token_for(&secret, signed_in.as_deref());
        let mut response = fill_page(response, &token).await;
        if fresh {
            let cookie = format!("{}={secret}; Path=/; HttpOnly; SameSite=Strict", names.session());
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        return response;
    }
    if kind.starts_with("text/event-stream")
        && let Some(secret) = session
    {
        return fill_stream(response, token_for(&secret, signed_in.as_deref()));
    }
    response
}

/// The headers every response carries (unless it set its own).
fn secure(headers: &mut HeaderMap) {
    let set = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in set {
        headers.entry(name).or_insert(HeaderValue::from_static(value));
    }
}

/// `html` with `token` in its forms' hidden fields and its head's meta tag; in `json` form
/// (a live part inside a JSON string) too.
fn fill(html: &str, token: &str) -> String {
    let field = FORM_FIELD.replace(r#"value="""#, &format!(r#"value="{token}""#));
    let meta = META.replace(r#"content="""#, &format!(r#"content="{token}""#));
    let json = |s: &str| s.replace('"', "\\\"");
    html.replace(FORM_FIELD, &field).replace(META, &meta).replace(&json(FORM_FIELD), &json(&field))
}

async fn fill_page(response: Response, token: &str) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the page: {e}")).into_response(),
    };
    let body = match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains(FORM_FIELD) || text.contains(META) => Body::from(fill(text, token)),
        _ => Body::from(bytes),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}

/// A stream of server-sent events whose live parts get `token` in their forms: each event is
/// one chunk of the body.
fn fill_stream(response: Response, token: String) -> Response {
    use futures::TryStreamExt as _;
    let (parts, body) = response.into_parts();
    let events = body.into_data_stream().map_ok(move |chunk| match std::str::from_utf8(&chunk) {
        Ok(text) if text.contains("name=\\\"csrf\\\"") => bytes::Bytes::from(fill(text, &token)),
        _ => chunk,
    });
    Response::from_parts(parts, Body::from_stream(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hmac_sha256_is_rfc_4231() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        let mac = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex::encode(mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn the_token_depends_on_the_session_and_on_who_is_signed_in() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        assert_eq!(token_for(&a, None), token_for(&a, None));
        assert_ne!(token_for(&a, None), token_for(&b, None));
        assert_ne!(token_for(&a, None), token_for(&a, Some("salt_1")));
        assert_ne!(token_for(&a, Some("salt_1")), token_for(&a, Some("salt_2")));
        assert!(is_secret(&a) && !is_secret("abc") && !is_secret(&"A".repeat(64)));
    }

    #[test]
    fn only_the_servers_own_origin_passes() {
        let own = headers(&[("host", "127.0.0.1:7878"), ("origin", "http://127.0.0.1:7878")]);
        assert_eq!(cross_origin(&own, None), None);
        let tls = headers(&[("host", "salt.example"), ("origin", "https://salt.example")]);
        assert_eq!(cross_origin(&tls, None), None);
        let port = headers(&[("host", "127.0.0.1:7878"), ("origin", "http://127.0.0.1:9999")]);
        assert!(cross_origin(&port, None).unwrap().contains("`http://127.0.0.1:9999`"));
        let null = headers(&[("host", "127.0.0.1:7878"), ("origin", "null")]);
        assert!(cross_origin(&null, None).is_some());
        let same_site = headers(&[("host", "127.0.0.1:7878"), ("sec-fetch-site", "same-site")]);
        assert!(cross_origin(&same_site, None).unwrap().contains("Sec-Fetch-Site: same-site"));
        assert!(cross_origin(&headers(&[("sec-fetch-site", "cross-site")]), None).is_some());
        assert_eq!(cross_origin(&headers(&[("sec-fetch-site", "none")]), None), None);
        assert_eq!(cross_origin(&headers(&[("sec-fetch-site", "same-origin")]), None), None);
        // The command line and workers send neither.
        assert_eq!(cross_origin(&headers(&[("host", "127.0.0.1:7878")]), None), None);
        // HTTP/2: no Host, the authority instead.
        let h2 = headers(&[("origin", "http://127.0.0.1:7878")]);
        assert_eq!(cross_origin(&h2, Some("127.0.0.1:7878")), None);
        assert!(cross_origin(&h2, None).is_some());
    }

    #[test]
    fn websocket_upgrades_and_unsafe_methods_may_change_things() {
        assert!(may_change(&Method::POST, &HeaderMap::new()));
        assert!(may_change(&Method::DELETE, &HeaderMap::new()));
        assert!(!may_change(&Method::GET, &HeaderMap::new()));
        assert!(may_change(&Method::GET, &headers(&[("upgrade", "WebSocket")])));
    }

    #[test]
    fn pages_and_live_parts_get_the_token() {
        let page = format!("<head>{META}</head><form method=\"post\">{FORM_FIELD}</form>");
        assert_eq!(
            fill(&page, "t0k"),
            r#"<head><meta name="csrf-token" content="t0k"></head><form method="post"><input type="hidden" name="csrf" value="t0k"></form>"#
        );
        let part = serde_json::json!({"parts": {"c": format!("<form>{FORM_FIELD}</form>")}}).to_string();
        let filled: serde_json::Value = serde_json::from_str(&fill(&part, "t0k")).unwrap();
        assert_eq!(filled["parts"]["c"], r#"<form><input type="hidden" name="csrf" value="t0k"></form>"#);
    }

    #[test]
    fn cookies_are_named_with_the_port_and_read_by_name() {
        let names = CookieNames::for_port(8080);
        assert_eq!((names.token(), names.session()), ("salt_token_8080", "salt_session_8080"));
        let h = headers(&[("cookie", "salt_token_9090=x; salt_token_8080=salt_1"), ("cookie", "a=b")]);
        assert_eq!(cookie(&h, "salt_token_8080").as_deref(), Some("salt_1"));
        assert_eq!(cookie(&h, "salt_token"), None);
    }
}
