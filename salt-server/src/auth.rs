//! Tokens and what each role may do.
//!
//! A token is shown once, when it is created; the server keeps only its sha256 and compares
//! hashes in constant time. While no token exists the server is open (and then binds only to
//! loopback unless told to run open); once one exists, every request needs
//! `Authorization: Bearer TOKEN` (or, for a browser, the cookie `salt_token_PORT` the sign-in page
//! sets, see [`crate::csrf::CookieNames`]), except `GET /healthz`.

use crate::sql::Conn;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use crate::api::ApiError;
use crate::db;
use crate::state::AppState;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads only.
    Viewer,
    /// Reads, starts runs and acts on them (cancel, pause, resume, recover, rerun, signal).
    Operator,
    /// Everything: also registers binaries and manages queues.
    Admin,
    /// Only the worker endpoints (`/api/v1/workers/…`) and fetching binaries.
    Worker,
}

impl Role {
    /// The lowercase name, as stored and as the command line takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Worker => "worker",
        }
    }

    /// The role named `text`.
    pub fn parse(text: &str) -> Option<Role> {
        [Role::Viewer, Role::Operator, Role::Admin, Role::Worker].into_iter().find(|r| r.as_str() == text)
    }
}

/// Who made a request: the name and role of its token. Handlers find it in the request's
/// extensions when tokens are in use (the worker endpoints use the name for private queues).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// The sha256 of a token, lowercase hex: what is stored.
pub fn hash(token: &str) -> String {
    crate::registry::sha256_hex(token.as_bytes())
}

/// Creates a token `name` with `role` and returns it: the only time it is shown. Fails when a
/// token of that name exists.
pub fn create_token(conn: &Conn, name: &str, role: Role) -> Result<String, String> {
    if name.is_empty() || name.len() > 100 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("`{name}` is not a token name: use 1 to 100 characters, no spaces"));
    }
    let mut bytes = [0u8; 32];
    random_bytes(&mut bytes).map_err(|e| format!("cannot read random bytes: {e}"))?;
    let token = format!("salt_{}", hex::encode(bytes));
    match db::insert_token(conn, name, role.as_str(), &hash(&token)) {
        Ok(()) => Ok(token),
        Err(e) if e.is_constraint() => Err(format!("a token named `{name}` exists already")),
        Err(e) => Err(format!("cannot store the token: {e}")),
    }
}

/// Fills `buf` with random bytes from the kernel.
pub(crate) fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// The token `presented` matches, if any. Every stored hash is compared, each in constant time.
pub fn authenticate(conn: &Conn, presented: &str) -> crate::sql::Result<Option<Caller>> {
    let presented = hash(presented);
    let mut found = None;
    for t in db::tokens(conn)? {
        let same: bool = t.hash.as_bytes().ct_eq(presented.as_bytes()).into();
        if same && let Some(role) = Role::parse(&t.role) {
            found = Some(Caller { name: t.name, role });
        }
    }
    Ok(found)
}

/// Whether `role` may make a request of `method` on `path`.
pub fn allowed(role: Role, method: &Method, path: &str) -> bool {
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let worker_path = path.starts_with("/api/v1/workers/") || path == "/api/v1/workers";
    match role {
        Role::Admin => true,
        Role::Worker => worker_path || (read && path.starts_with("/api/v1/binaries/")),
        Role::Viewer => read && !worker_path,
        Role::Operator => {
            if worker_path {
                return false;
            }
            // A DAG file runs any command it names: as registering a binary, that is an admin's.
            read || !(path.starts_with("/api/v1/binaries")
                || path.starts_with("/api/v1/queues")
                || path.starts_with("/api/v1/dags"))
        }
    }
}

/// Paths anyone may use, even when tokens exist: the health check, the UI's sign-in and
/// sign-out and its style and script.
fn public(method: &Method, path: &str) -> bool {
    let read = matches!(*method, Method::GET | Method::HEAD);
    (read && matches!(path, "/healthz" | "/ui/style.css" | "/ui/app.js")) || matches!(path, "/login" | "/logout")
}

/// Whether `path` is a page of the web UI (not the REST API, the worker endpoints or the
/// metrics): a browser without a token is sent to the sign-in page instead of getting 401.
fn ui_page(path: &str) -> bool {
    !path.starts_with("/api/") && path != "/metrics" && path != "/healthz"
}

/// The token a request carries: `Authorization: Bearer TOKEN`, or the sign-in cookie.
fn presented(req: &Request) -> Option<String> {
    let headers = req.headers();
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let text = value.to_str().ok()?;
        let (scheme, token) = text.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string());
    }
    let names = req.extensions().get::<crate::csrf::CookieNames>()?;
    crate::csrf::cookie(headers, names.token())
}

/// The middleware: when any token exists, a request without a valid one is refused with 401,
/// one whose role may not make it with 403; the caller is put in the request's extensions.
pub async fn require_token(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let token = presented(&req);
    let checked: Result<Option<Option<Caller>>, crate::sql::Error> = {
        let conn = state.conn.lock().unwrap_or_else(|p| p.into_inner());
        match db::any_token(&conn) {
            Ok(false) => Ok(None),
            Ok(true) if public(&method, &path) => {
                // Open to anyone; who is asking still matters to the sign-in page.
                if let Some(Ok(Some(caller))) = token.map(|t| authenticate(&conn, &t)) {
                    req.extensions_mut().insert(caller);
                }
                Ok(None)
            }
            Ok(true) => match token.map(|t| authenticate(&conn, &t)) {
                Some(Ok(found)) => Ok(Some(found)),
                Some(Err(e)) => Err(e),
                None => Ok(Some(None)),
            },
            Err(e) => Err(e),
        }
    };
    let caller = match checked {
        Ok(None) => return next.run(req).await,
        Ok(Some(Some(caller))) => caller,
        Ok(Some(None)) if method == Method::GET && ui_page(&path) => {
            let next = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let to = format!("/login?next={}", crate::ui::encode_query(next));
            return (StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, to)]).into_response();
        }
        Ok(Some(None)) => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this server needs a valid token: `Authorization: Bearer TOKEN`",
            )
            .into_response();
        }
        Err(e) => return ApiError::internal(e).into_response(),
    };
    if !allowed(caller.role, &method, &path) {
        if ui_page(&path) {
            return crate::ui::forbidden(&caller, &method, &path);
        }
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token `{}` ({}) may not {method} {path}", caller.name, caller.role.as_str()),
        )
        .into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_may_do_what_it_is_for() {
        let get = Method::GET;
        let post = Method::POST;
        let cases = [
            (Role::Viewer, &get, "/api/v1/runs", true),
            (Role::Viewer, &post, "/api/v1/runs/1/cancel", false),
            (Role::Viewer, &get, "/api/v1/workers/connect", false),
            (Role::Operator, &post, "/api/v1/runs/1/cancel", true),
            (Role::Operator, &post, "/api/v1/runs", true),
            (Role::Operator, &post, "/api/v1/binaries", false),
            (Role::Operator, &get, "/api/v1/workers/connect", false),
            (Role::Worker, &get, "/api/v1/workers/connect", true),
            (Role::Worker, &get, "/api/v1/binaries/abc", true),
            (Role::Worker, &post, "/api/v1/binaries", false),
            (Role::Worker, &get, "/api/v1/runs", false),
            (Role::Worker, &post, "/api/v1/runs/1/cancel", false),
            (Role::Admin, &post, "/api/v1/binaries", true),
            (Role::Admin, &get, "/api/v1/workers/connect", true),
        ];
        for (role, method, path, expected) in cases {
            assert_eq!(allowed(role, method, path), expected, "{role:?} {method} {path}");
        }
    }

    #[test]
    fn the_sign_in_page_and_the_ui_assets_are_open_and_other_pages_are_not() {
        assert!(public(&Method::GET, "/login"));
        assert!(public(&Method::POST, "/login"));
        assert!(public(&Method::POST, "/logout"));
        assert!(public(&Method::GET, "/ui/app.js"));
        assert!(public(&Method::GET, "/healthz"));
        assert!(!public(&Method::GET, "/runs"));
        assert!(!public(&Method::POST, "/ui/app.js"));
        assert!(!public(&Method::GET, "/api/v1/runs"));
        assert!(ui_page("/runs/3") && ui_page("/") && ui_page("/workers"));
        assert!(!ui_page("/api/v1/runs") && !ui_page("/metrics"));
    }

    #[test]
    fn a_token_is_stored_hashed_and_found_by_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        salt_runtime::ops::open(&path.display().to_string()).unwrap();
        let conn = db::open(&path.display().to_string()).unwrap();
        let token = create_token(&conn, "ci", Role::Operator).unwrap();
        assert!(token.starts_with("salt_") && token.len() == 69, "{token}");
        let stored = db::tokens(&conn).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].hash, hash(&token));
        assert_ne!(stored[0].hash, token);
        assert_eq!(authenticate(&conn, &token).unwrap(), Some(Caller { name: "ci".into(), role: Role::Operator }));
        assert_eq!(authenticate(&conn, "salt_wrong").unwrap(), None);
        assert_eq!(create_token(&conn, "ci", Role::Admin).unwrap_err(), "a token named `ci` exists already");
        assert!(create_token(&conn, "two words", Role::Admin).is_err());
    }
}
