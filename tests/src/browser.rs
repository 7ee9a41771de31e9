//! A real headless Chromium driven by `chromedriver` over the W3C WebDriver HTTP protocol,
//! for the dashboard's browser tests: start a session, go to a page, find, type, click,
//! resize the window and take screenshots.
//!
//! Needs `chromedriver` and Chromium on PATH (Debian: `apt-get install chromium
//! chromium-driver`; `.ci/run` installs them). Without them a test fails, it does not skip.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::eventually;

/// `chromedriver` from `$CHROMEDRIVER` or PATH; fails the test with what to install.
pub fn find_chromedriver() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMEDRIVER") {
        return PathBuf::from(p);
    }
    on_path("chromedriver").unwrap_or_else(|| {
        panic!(
            "chromedriver is not on PATH: this test drives a real headless Chromium. Install it \
             (Debian/Ubuntu as root: `apt-get install -y chromium chromium-driver`; `.ci/run` \
             does this) or set CHROMEDRIVER=/path/to/chromedriver"
        )
    })
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Where screenshots go: `$CARGO_TARGET_DIR`, else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => workspace.join(d),
        None => workspace.join("target"),
    };
    std::fs::create_dir_all(&dir).expect("target dir");
    dir
}

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver child process and one browser session. Dropping it (also on panic) ends
/// the session, which closes Chromium, and kills chromedriver.
pub struct Driver {
    child: Child,
    addr: SocketAddr,
    session: Option<String>,
    http: reqwest::Client,
}

impl Driver {
    /// Starts chromedriver on a free port and opens a headless 1366×768 session.
    pub async fn start(chromedriver: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let mut driver = Driver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            session: None,
            http: reqwest::Client::new(),
        };
        let status = format!("http://{}/status", driver.addr);
        eventually(Duration::from_secs(20), "chromedriver is ready", || async {
            let r = driver.http.get(&status).send().await.ok()?;
            let v: Value = r.json().await.ok()?;
            (v["value"]["ready"] == true).then_some(())
        })
        .await;
        let mut options = json!({"args": [
            "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
            "--window-size=1366,768", "--lang=zh-CN", "--hide-scrollbars",
        ]});
        if let Some(binary) = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find_map(on_path)
        {
            options["binary"] = json!(binary);
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options,
        }}});
        let answer = driver.call("POST", "/session", Some(caps)).await;
        let id = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver opened no session: {answer}"));
        driver.session = Some(id.to_owned());
        driver
    }

    /// A raw WebDriver call: the answer's `value`, or a panic naming the WebDriver error.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// A raw WebDriver call: the answer's `value`, or the WebDriver error.
    pub async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method.clone(), format!("http://{}{path}", self.addr));
        if method == reqwest::Method::POST {
            req = req.json(&body.unwrap_or_else(|| json!({})));
        }
        let resp = req.send().await.expect("chromedriver answers");
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.expect("a JSON answer");
        let value = v.get("value").cloned().unwrap_or(v);
        if ok { Ok(value) } else { Err(value) }
    }

    /// A call within the session.
    pub async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let sid = self.session.as_deref().expect("a session");
        self.call(method, &format!("/session/{sid}{path}"), body)
            .await
    }

    /// Loads `url`.
    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// The page's URL.
    pub async fn current_url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's HTML.
    pub async fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element matching `css`, if there is one now.
    pub async fn find(&self, css: &str) -> Option<String> {
        let sid = self.session.as_deref().expect("a session");
        let body = json!({"using": "css selector", "value": css});
        match self
            .try_call("POST", &format!("/session/{sid}/element"), Some(body))
            .await
        {
            Ok(v) => Some(v[ELEMENT].as_str().expect("an element id").to_owned()),
            Err(e) if e["error"] == "no such element" => None,
            Err(e) => panic!("find {css}: {e}"),
        }
    }

    /// Waits (10 s at most) for an element matching `css`.
    pub async fn wait_for(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            if Instant::now() > deadline {
                let url = self.current_url().await;
                panic!("no element {css} at {url}; page:\n{}", self.source().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An element's visible text.
    pub async fn text(&self, element: &str) -> String {
        self.cmd("GET", &format!("/element/{element}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Types `text` into an element.
    pub async fn type_into(&self, element: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Clicks an element.
    pub async fn click(&self, element: &str) {
        self.cmd("POST", &format!("/element/{element}/click"), None)
            .await;
    }

    /// Saves a PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", None).await;
        let png = base64_decode(b64.as_str().expect("base64 text"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).expect("screenshot written");
        println!("screenshot: {}", path.display());
    }

    /// Ends the session (Chromium exits); chromedriver is killed on drop.
    /// Runs `script` in the page with `args` (`arguments[0]`, …); its return value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        let sid = self.session.as_deref().expect("a session");
        let body = json!({"script": script, "args": args});
        self.call("POST", &format!("/session/{sid}/execute/sync"), Some(body))
            .await
    }

    /// Sets the value of the input `css` (a date picker, which WebDriver cannot type into the
    /// same way in every locale).
    pub async fn set_value(&self, css: &str, value: &str) {
        self.wait_for(css).await;
        self.execute(
            "document.querySelector(arguments[0]).value = arguments[1];",
            json!([css, value]),
        )
        .await;
    }

    /// Resizes the window (the page's width decides its layout).
    pub async fn resize(&self, width: u32, height: u32) {
        let sid = self.session.as_deref().expect("a session");
        let body = json!({"width": width, "height": height});
        self.call("POST", &format!("/session/{sid}/window/rect"), Some(body))
            .await;
    }

    /// Ends the browser session.
    pub async fn quit(&mut self) {
        if let Some(sid) = self.session.take() {
            self.call("DELETE", &format!("/session/{sid}"), None).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // On a panic: end the session with a plain blocking request so Chromium exits too.
        if let Some(sid) = self.session.take()
            && let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))
        {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{sid} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.addr
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c:?}"),
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | u32::from(*d) << (18 - 6 * i));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[cfg(test)]
#[test]
fn base64_decodes_with_and_without_padding() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
    assert_eq!(base64_decode("iVBORw0K"), b"\x89PNG\r\n");
}
