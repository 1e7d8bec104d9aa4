//! Signing in: a page that takes a token and keeps it in the cookie `salt_token_PORT` (HttpOnly,
//! SameSite=Strict, named with the server's port), which the server accepts like
//! `Authorization: Bearer`. While no token exists, the page says nothing is needed.

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{CSRF, UiError, UiResult, blocking, esc, html_page};
use crate::auth::{self, Caller};
use crate::csrf::CookieNames;
use crate::db;
use crate::state::AppState;

/// Where to go once signed in.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Next {
    /// A path on this server.
    next: Option<String>,
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub(super) struct SignIn {
    /// The token.
    token: String,
    /// Where to go once signed in.
    next: Option<String>,
}

/// `next` when it is a path on this server, else `/`.
fn local(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.starts_with("/login") => {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

fn any_token(state: &AppState) -> UiResult<bool> {
    let conn = state.conn.lock().unwrap_or_else(|p| p.into_inner());
    db::any_token(&conn).map_err(|e| UiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the tokens: {e}")))
}

fn form(next: &str, caller: Option<&Caller>, error: Option<&str>) -> String {
    let who = caller
        .map(|c| {
            format!(
                r#"<p class="notice" id="signed-in">Signed in as <b>{}</b> ({}).</p><form method="post" action="/logout">{CSRF}<button>Sign out</button></form>"#,
                esc(&c.name),
                c.role.as_str()
            )
        })
        .unwrap_or_default();
    let error = error.map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, esc(e))).unwrap_or_default();
    format!(
        r#"<h1>Sign in</h1>{who}{error}<p>This server needs a token. Paste one made with <code>salt token create NAME --role viewer|operator|admin</code>; the browser keeps it in a cookie only this server reads.</p>
<form class="login" method="post" action="/login">{CSRF}<input type="hidden" name="next" value="{next}"><label class="field"><span>Token</span><input type="password" name="token" autocomplete="current-password" required size="70"></label><button class="primary">Sign in</button></form>"#,
        next = esc(next)
    )
}

/// `GET /login`.
pub(super) async fn page(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    Query(q): Query<Next>,
) -> UiResult<Response> {
    let next = local(q.next.as_deref());
    let s = state.clone();
    if !blocking(move || any_token(&s)).await? {
        let body = r#"<h1>Sign in</h1><p class="notice">This server has no token yet: anyone who can reach it may use it, and no sign-in is needed.</p><p><a href="/runs">Runs</a></p>"#;
        return Ok(html_page("Sign in", body).into_response());
    }
    Ok(html_page("Sign in", &form(&next, caller.as_deref(), None)).into_response())
}

/// `POST /login`: a valid token is kept in the cookie and the browser goes on to `next`; a
/// wrong one gets the form again with 401.
pub(super) async fn sign_in(
    State(state): State<AppState>,
    Extension(names): Extension<CookieNames>,
    Form(f): Form<SignIn>,
) -> UiResult<Response> {
    let next = local(f.next.as_deref());
    let token = f.token.trim().to_string();
    let t = token.clone();
    let found = blocking(move || {
        let conn = state.conn.lock().unwrap_or_else(|p| p.into_inner());
        auth::authenticate(&conn, &t)
            .map_err(|e| UiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the tokens: {e}")))
    })
    .await?;
    // A token is `salt_` and hex: nothing in it needs quoting in a cookie.
    let plain = !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    match found {
        Some(_) if plain => {
            let cookie = format!("{}={token}; Path=/; HttpOnly; SameSite=Strict", names.token());
            Ok((StatusCode::SEE_OTHER, [(header::SET_COOKIE, cookie), (header::LOCATION, next)]).into_response())
        }
        _ => Ok((
            StatusCode::UNAUTHORIZED,
            html_page("Sign in", &form(&next, None, Some("That token is not valid here."))),
        )
            .into_response()),
    }
}

/// `POST /logout`: forgets the cookie.
pub(super) async fn sign_out(Extension(names): Extension<CookieNames>) -> Response {
    let cookie = format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0", names.token());
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, cookie), (header::LOCATION, "/login".to_string())]).into_response()
}

#[cfg(test)]
mod tests {
    use super::local;

    #[test]
    fn only_local_paths_are_followed_after_signing_in() {
        assert_eq!(local(Some("/runs/3?x=1")), "/runs/3?x=1");
        assert_eq!(local(Some("//evil.example/")), "/");
        assert_eq!(local(Some("https://evil.example/")), "/");
        assert_eq!(local(Some("/\\evil.example")), "/");
        assert_eq!(local(Some("/login")), "/");
        assert_eq!(local(None), "/");
    }
}
