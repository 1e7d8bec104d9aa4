//! Forged requests, over HTTP as a browser would send them: a page of another origin (another
//! port of the same host included) must not act on the server, with an operator's cookie or,
//! on a server without tokens, at all. Same-origin forms with the session's token still work;
//! the command line's bearer-token requests (no `Origin`) too.

use super::*;

/// What a request got back: status, headers (lowercase names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The cookies it sets: (name, whole `Set-Cookie` value).
    fn set_cookies(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .map(|(_, v)| (v.split('=').next().unwrap().to_string(), v.clone()))
            .collect()
    }

    /// The CSRF token in the page's forms.
    fn form_token(&self) -> String {
        let at = self.body.find(r#"name="csrf" value=""#).unwrap_or_else(|| panic!("no token: {}", self.body));
        let rest = &self.body[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl Server {
    fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// `method path` with `headers` and `body`, following no redirect.
    fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into();
        let mut req = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.url));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let response = if body.is_empty() {
            agent.run(req.body(()).unwrap())
        } else {
            agent.run(req.body(body.as_bytes().to_vec()).unwrap())
        };
        let mut response = response.unwrap();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Answer { status: response.status().as_u16(), headers, body }
    }

    /// The status of a WebSocket handshake on `path`, sent with `origin`.
    fn websocket(&self, path: &str, origin: Option<&str>) -> u16 {
        use std::io::{Read as _, Write as _};
        let host = self.url.trim_start_matches("http://");
        let mut tcp = std::net::TcpStream::connect(host).unwrap();
        let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\n{origin}Connection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).unwrap();
        String::from_utf8_lossy(&head[9..12]).parse().unwrap()
    }

    /// The server's own origin, as a browser names it.
    fn origin(&self) -> String {
        self.url.clone()
    }

    fn run_state(&self, run: i64) -> RunState {
        self.state.store.load(RunId::new(run)).unwrap().run.state
    }
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// A request as a browser would send it: what it is, its headers, its body.
type Forged<'a> = (&'a str, Vec<(&'a str, &'a str)>, String);

/// A page of another port on the same host: the same site, another origin.
fn other_origin(server: &Server) -> String {
    format!("http://127.0.0.1:{}", server.port() + 1)
}

/// Signs in with `token` through the sign-in form, as a browser does: returns the `Cookie`
/// header the browser then sends.
fn sign_in(server: &Server, token: &str) -> String {
    let page = server.http("GET", "/login", &[], "");
    let session = page.set_cookies().into_iter().next().expect("a session cookie").1;
    let session = session.split(';').next().unwrap().to_string();
    let origin = server.origin();
    let form = format!("csrf={}&next=%2Fruns&token={token}", page.form_token());
    let signed = server.http("POST", "/login", &[FORM, ("origin", &origin), ("cookie", &session)], &form);
    assert_eq!(signed.status, 303, "{}", signed.body);
    let token_cookie = signed.set_cookies().into_iter().next().expect("the token cookie").1;
    format!("{session}; {}", token_cookie.split(';').next().unwrap())
}

#[test]
fn a_page_of_another_origin_cannot_act_with_an_operators_cookie() {
    let server = Server::start();
    let operator = auth::create_token(&server.state.conn.lock().unwrap(), "ops", auth::Role::Operator).unwrap();
    // The command line: a bearer token and no Origin.
    let (status, body, _) = server.request(
        "POST",
        "/api/v1/runs",
        Some(&operator),
        Some(json!({"workflow": "etl", "input": {"n": 1}}).to_string().as_bytes()),
    );
    assert_eq!(status, 201, "{body}");
    let cookies = sign_in(&server, &operator);
    let page = server.http("GET", "/runs/1", &[("cookie", &cookies)], "");
    assert_eq!(page.status, 200, "{}", page.body);
    let token = page.form_token();
    let good_form = format!("csrf={token}&go=1");
    let evil = other_origin(&server);
    let evil = evil.as_str();
    let own = server.origin();
    let own = own.as_str();
    let cookies = cookies.as_str();

    let forged: Vec<Forged<'_>> = vec![
        // A form on another port of the same host, posting with the cookie (and even the token).
        ("form from another port", vec![FORM, ("origin", evil), ("sec-fetch-site", "same-site")], good_form.clone()),
        ("Origin of another port", vec![FORM, ("origin", evil)], good_form.clone()),
        ("Sec-Fetch-Site: cross-site", vec![FORM, ("sec-fetch-site", "cross-site")], good_form.clone()),
        ("Origin: null", vec![FORM, ("origin", "null")], good_form.clone()),
        // `fetch(url, {method: "POST", mode: "no-cors", credentials: "include"})`.
        (
            "no-cors fetch",
            vec![("content-type", "text/plain"), ("origin", evil), ("sec-fetch-mode", "no-cors")],
            "go=1".into(),
        ),
        // A browser that says nothing of where the form came from: the token decides.
        ("no token", vec![FORM], "go=1".into()),
        ("a wrong token", vec![FORM, ("origin", own)], format!("csrf={}&go=1", "0".repeat(64))),
        ("an empty token", vec![FORM, ("origin", own), ("sec-fetch-site", "same-origin")], "csrf=&go=1".into()),
    ];
    for (what, headers, body) in &forged {
        let mut headers = headers.clone();
        headers.push(("cookie", cookies));
        let answer = server.http("POST", "/runs/1/cancel", &headers, body);
        assert_eq!(answer.status, 403, "{what}: {}", answer.body);
        assert!(answer.body.contains("Refused: "), "{what}: {}", answer.body);
        assert_eq!(server.run_state(1), RunState::Queued, "{what}: the run was not cancelled");
    }
    let answer = server.http("POST", "/runs/1/cancel", &[FORM, ("origin", evil), ("cookie", cookies)], &good_form);
    assert!(
        answer.body.contains(&format!("this request comes from `{evil}`, not from this server")),
        "{}",
        answer.body
    );
    let answer = server.http("POST", "/runs/1/cancel", &[FORM, ("cookie", cookies)], "go=1");
    assert!(answer.body.contains("security token is missing or out of date"), "{}", answer.body);

    // The REST API with the cookie: refused from another origin, and without the token.
    for headers in [
        vec![("content-type", "application/json"), ("origin", evil)],
        vec![("content-type", "text/plain"), ("sec-fetch-site", "cross-site")],
        vec![("content-type", "application/json")],
    ] {
        let mut headers = headers.clone();
        headers.push(("cookie", cookies));
        let answer = server.http("POST", "/api/v1/runs/1/cancel", &headers, "{}");
        assert_eq!(answer.status, 403, "{headers:?}: {}", answer.body);
        let body: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body["error"], "forbidden", "{body}");
        assert_eq!(server.run_state(1), RunState::Queued);
    }
    // Another session's token is not this one's.
    let other = sign_in(&server, &operator);
    let other_token = server.http("GET", "/runs/1", &[("cookie", &other)], "").form_token();
    assert_ne!(other_token, token);
    let answer = server.http("POST", "/runs/1/cancel", &[FORM, ("cookie", cookies)], &format!("csrf={other_token}"));
    assert_eq!(answer.status, 403);
    assert_eq!(server.run_state(1), RunState::Queued);
    assert_eq!(server.engine.calls().len(), 1, "{:?}", server.engine.calls());

    // The page's own form, as the browser sends it, works.
    let headers = [FORM, ("origin", own), ("sec-fetch-site", "same-origin"), ("cookie", cookies)];
    let answer = server.http("POST", "/runs/1/cancel", &headers, &good_form);
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(server.run_state(1), RunState::Cancelled);
}

#[test]
fn without_tokens_a_page_of_another_origin_cannot_start_a_run() {
    let server = Server::start();
    // A session cookie holds the secret the form's token is made from.
    let page = server.http("GET", "/workflows/etl", &[], "");
    assert_eq!(page.status, 200, "{}", page.body);
    let session = page.set_cookies();
    let port = server.port();
    assert_eq!(session.len(), 1, "{session:?}");
    assert_eq!(session[0].0, format!("salt_session_{port}"));
    assert!(session[0].1.contains("HttpOnly") && session[0].1.contains("SameSite=Strict"), "{session:?}");
    let cookie = session[0].1.split(';').next().unwrap().to_string();
    let token = page.form_token();
    assert_eq!(token.len(), 64);
    let start = format!("csrf={token}&version=1&v%2Fn=3");
    let evil = "https://evil.example";

    // A plain form of another site: no cookie (SameSite) and another Origin.
    let answer = server.http("POST", "/workflows/etl/start", &[FORM, ("origin", evil)], "version=1&v%2Fn=3");
    assert_eq!(answer.status, 403, "{}", answer.body);
    // Even one that knew the token and had the cookie.
    let answer = server.http(
        "POST",
        "/workflows/etl/start",
        &[FORM, ("origin", evil), ("sec-fetch-site", "cross-site"), ("cookie", &cookie)],
        &start,
    );
    assert_eq!(answer.status, 403, "{}", answer.body);
    // A browser that sends no Origin: the token decides.
    let answer = server.http("POST", "/workflows/etl/start", &[FORM, ("cookie", &cookie)], "version=1&v%2Fn=3");
    assert_eq!(answer.status, 403, "{}", answer.body);
    // The REST API, from a page of another site.
    let json = json!({"workflow": "etl", "input": {"n": 3}}).to_string();
    for headers in [
        vec![("content-type", "text/plain"), ("origin", evil)],
        vec![("content-type", "application/json"), ("sec-fetch-site", "cross-site")],
    ] {
        let answer = server.http("POST", "/api/v1/runs", &headers, &json);
        assert_eq!(answer.status, 403, "{headers:?}: {}", answer.body);
    }
    // A page of another site opening a WebSocket to the worker endpoint (a worker sends no
    // Origin).
    assert_eq!(server.websocket("/api/v1/workers/connect", Some(evil)), 403);
    assert_ne!(server.websocket("/api/v1/workers/connect", None), 403);
    assert_eq!(server.run_count(), 0);

    // The page's own form works; so does the command line's request.
    let headers = [FORM, ("origin", server.url.as_str()), ("sec-fetch-site", "same-origin"), ("cookie", &cookie)];
    let answer = server.http("POST", "/workflows/etl/start", &headers, &start);
    assert_eq!((answer.status, answer.header("location")), (303, Some("/runs/1?notice=started%20run%201")));
    let answer = server.http("POST", "/api/v1/runs", &[("content-type", "application/json")], &json);
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(server.run_count(), 2);
}

#[test]
fn pages_forbid_inline_scripts_framing_and_sniffing() {
    let server = Server::start();
    server.post("/api/v1/runs", json!({"workflow": "etl", "input": {"n": 1}}));
    for path in ["/runs", "/runs/1", "/runs/1/nodes/1", "/workflows", "/workflows/etl", "/workers", "/login", "/nope"] {
        let page = server.http("GET", path, &[], "");
        let csp = page.header("content-security-policy").unwrap_or_else(|| panic!("{path}: no policy"));
        for part in ["script-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "form-action 'self'"] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(page.header("referrer-policy"), Some("same-origin"), "{path}");
        assert_eq!(page.header("x-frame-options"), Some("DENY"), "{path}");
        if page.header("content-type").is_some_and(|c| c.starts_with("text/html")) {
            // No inline script for the policy to stop: one script, from the server.
            assert_eq!(page.body.matches("<script").count(), 1, "{path}: {}", page.body);
            assert!(page.body.contains(r#"<script src="/ui/app.js" defer></script>"#), "{path}");
            for inline in [" onclick=", " onload=", " onsubmit=", "javascript:", " style="] {
                assert!(!page.body.contains(inline), "{path} has {inline}: {}", page.body);
            }
            assert!(page.body.contains(r#"<meta name="csrf-token" content=""#), "{path}");
        }
    }
    let api = server.http("GET", "/api/v1/runs", &[], "");
    assert_eq!(api.header("x-content-type-options"), Some("nosniff"));
}

#[test]
fn two_servers_on_one_host_never_share_a_session() {
    let (a, b) = (Server::start(), Server::start());
    let token_a = auth::create_token(&a.state.conn.lock().unwrap(), "ops", auth::Role::Operator).unwrap();
    auth::create_token(&b.state.conn.lock().unwrap(), "ops", auth::Role::Operator).unwrap();
    let cookies_a = sign_in(&a, &token_a);
    assert_eq!(
        cookies_a.split("; ").map(|c| c.split('=').next().unwrap().to_string()).collect::<Vec<_>>(),
        [format!("salt_session_{}", a.port()), format!("salt_token_{}", a.port())]
    );
    // The browser sends every cookie of the host to both ports: B finds none of its own.
    let at_b = b.http("GET", "/runs", &[("cookie", &cookies_a)], "");
    assert_eq!((at_b.status, at_b.header("location")), (303, Some("/login?next=%2Fruns")));
    let login_b = b.http("GET", "/login", &[("cookie", &cookies_a)], "");
    assert_eq!(login_b.set_cookies()[0].0, format!("salt_session_{}", b.port()));
    assert_eq!(a.http("GET", "/runs", &[("cookie", &cookies_a)], "").status, 200);
}
