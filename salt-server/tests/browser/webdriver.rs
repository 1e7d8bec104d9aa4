//! Just enough of a WebDriver client (W3C protocol, JSON over HTTP on loopback) to drive a
//! headless Chromium through `chromedriver`: no HTTP library, no TLS, nothing to download.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key W3C WebDriver names element references with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One HTTP/1.1 request; the status and the body.
pub(crate) fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    // Read the head, then the body by its length (or its chunks): the server may keep the
    // connection open.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let split = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed before the response's head"));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut rest = raw[split + 4..].to_vec();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    let complete = |rest: &[u8]| match length {
        Some(len) => rest.len() >= len,
        None if chunked => rest.ends_with(b"0\r\n\r\n"),
        None => false,
    };
    while !complete(&rest) {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&buf[..n]);
    }
    if chunked {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(end) = rest[at..].windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[at..at + end]).trim(), 16).unwrap_or(0);
            at += end + 2;
            if size == 0 || at + size > rest.len() {
                break;
            }
            out.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
        rest = out;
    }
    Ok((status, rest))
}

/// A free port on loopback.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A headless Chromium driven through `chromedriver`.
pub(crate) struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium session. Panics with what to install when
    /// either is missing or cannot start.
    pub(crate) fn start() -> Browser {
        const INSTALL: &str = "the browser tests need Chromium and its WebDriver from Debian's packages: \
                               apt-get install -y --no-install-recommends chromium chromium-driver";
        let chromium = find(&["chromium", "chromium-browser", "google-chrome"])
            .unwrap_or_else(|| panic!("no chromium on the PATH; {INSTALL}"));
        let chromedriver = find(&["chromedriver"]).unwrap_or_else(|| panic!("no chromedriver on the PATH; {INSTALL}"));
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL}", chromedriver.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, body)) = http(port, "GET", "/status", None)
                && serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["value"]["ready"] == true)
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready on port {port}; {INSTALL}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--hide-scrollbars", "--window-size=1280,900",
                     format!("--user-data-dir={}", profile.path().display())],
        }}}});
        let mut browser = Browser { driver, port, session: String::new(), _profile: profile };
        let created = browser.call("POST", "/session", Some(caps));
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromium did not start a session: {created}; {INSTALL}"))
            .to_string();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.or_else(|| (method == "POST").then(|| json!({})));
        let (status, raw) =
            http(self.port, method, path, body.as_ref()).map_err(|e| format!("webdriver {method} {path}: {e}"))?;
        let v: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        if status != 200 {
            return Err(format!("webdriver {method} {path} answered {status}: {}", v["value"]["message"]));
        }
        Ok(v["value"].clone())
    }

    /// Does `action` on the element `css` selects; again when a live update replaced the
    /// element meanwhile.
    fn on_element(&self, css: &str, action: &str, body: Option<Value>) {
        for _ in 0..20 {
            let e = self.element(css);
            match self.try_call("POST", &self.at(&format!("/element/{e}/{action}")), body.clone()) {
                Ok(_) => return,
                Err(m) if m.contains("stale element") => std::thread::sleep(Duration::from_millis(50)),
                Err(m) => panic!("{m}"),
            }
        }
        panic!("`{css}` kept being replaced");
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Opens `url` and waits for it to load.
    pub(crate) fn goto(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({"url": url})));
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns what it returns.
    pub(crate) fn js(&self, script: &str, args: Value) -> Value {
        self.call("POST", &self.at("/execute/sync"), Some(json!({"script": script, "args": args})))
    }

    /// The cookie `name` as the browser keeps it (`name`, `value`, `httpOnly`, `sameSite`, …).
    pub(crate) fn cookie(&self, name: &str) -> Value {
        self.call("GET", &self.at(&format!("/cookie/{name}")), None)
    }

    /// The current URL.
    pub(crate) fn url(&self) -> String {
        self.call("GET", &self.at("/url"), None).as_str().unwrap_or_default().to_string()
    }

    /// The element `css` selects; panics when there is none.
    pub(crate) fn element(&self, css: &str) -> String {
        let v = self.call("POST", &self.at("/element"), Some(json!({"using": "css selector", "value": css})));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element `{css}`: {v}")).to_string()
    }

    /// Clicks the element `css` selects.
    pub(crate) fn click(&self, css: &str) {
        self.on_element(css, "click", None);
    }

    /// Replaces the text of the input `css` selects with `text`, as typed.
    pub(crate) fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, "clear", None);
        self.on_element(css, "value", Some(json!({"text": text})));
    }

    /// Waits until `script` returns `true`, at most `secs` seconds; panics with `what`.
    pub(crate) fn wait_until(&self, script: &str, secs: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.js(script, json!([])) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "timed out waiting until {what} (at {})", self.url());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A screenshot of the window, written as PNG to `path`.
    pub(crate) fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let data = self.call("GET", &self.at("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(self.port, "DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
