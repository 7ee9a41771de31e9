//! The dashboard in a real headless Chromium, driven by `chromedriver` over the W3C WebDriver
//! HTTP protocol: before sign-in the page holds no member data; after it, the community
//! finds a two-dwelling member by name and opens the case file, which shows both offices'
//! activities, each with its recording office.
//!
//! Needs `chromedriver` and Chromium on PATH (Debian: `apt-get install chromium
//! chromium-driver`; `.ci/run` installs them). Without them the test fails, it does not skip.
//! Screenshots at 1366×768: `target/dashboard.png` (overview) and
//! `target/dashboard-casefile.png` (case file).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amphi_cluster_tests::{County, eventually};
use serde_json::{Value, json};

const XINGFU: &str = "hoboksar/hoboksar-town/xingfu";
const BAYIN: &str = "hoboksar/chagantolgay/bayin";
const WAIT: Duration = Duration::from_secs(30);
const NAME: &str = "Tsetseg Dorji";
const BAYIN_ACTIVITY: &str = "busy-season branch meeting";
/// Markup in user data must show as text, never as markup.
const XINGFU_ACTIVITY: &str = "slack-season study <i>at</i> Xingfu";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_community_signs_in_finds_a_two_dwelling_member_and_sees_both_offices_activities() {
    let chromedriver = find_chromedriver();
    let started = Instant::now();

    // Bayin registers a two-dwelling member resident at Xingfu; both offices record an activity.
    let mut county = County::new();
    county
        .start_all(&["county", "chagantolgay", "hoboksar-town", "bayin", "xingfu"])
        .await;
    let (bayin, xingfu) = (county.office("bayin"), county.office("xingfu"));
    let id = county.two_dwelling_member(NAME).await;
    let other = xingfu.create_member("Gulbahar").await;
    assert_eq!(bayin.record_activity(&id, BAYIN_ACTIVITY).await, 201);
    assert_eq!(xingfu.record_activity(&id, XINGFU_ACTIVITY).await, 201);
    let expected = vec![
        (BAYIN_ACTIVITY.to_owned(), BAYIN.to_owned()),
        (XINGFU_ACTIVITY.to_owned(), XINGFU.to_owned()),
    ];
    eventually(WAIT, "Xingfu holds both offices' activities", || async {
        (xingfu.activities(&id).await == expected).then_some(())
    })
    .await;
    println!("cluster ready in {:?}", started.elapsed());

    let base = format!("http://{}", xingfu.node().admin_addr);
    let token = xingfu.node().token.clone();

    // Without a session no data route answers, with or without a guess at the API's token.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .get(format!("{base}/dashboard/sync"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{base}/dashboard/members/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the case file redirects to sign-in");
    let r = http
        .get(format!("{base}/dashboard/members/{id}"))
        .header("cookie", format!("amphi_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the raw token is not a session");

    let browser_started = Instant::now();
    let mut driver = Driver::start(&chromedriver).await;
    let screenshots = target_dir();

    // Signed out: only the sign-in form, no member data.
    driver.goto(&format!("{base}/")).await;
    driver.wait_for("input[name=token]").await;
    let source = driver.source().await;
    assert!(!source.contains("Tsetseg"), "member data before sign-in");
    assert!(!source.contains(XINGFU), "status data before sign-in");
    assert!(driver.find("input[name=q]").await.is_none());

    // A wrong token re-shows the form with an error.
    let field = driver.wait_for("input[name=token]").await;
    driver.type_into(&field, "not-the-token").await;
    driver
        .click(&driver.wait_for("form.login button").await)
        .await;
    let error = driver.wait_for(".login .error").await;
    assert!(driver.text(&error).await.contains("Wrong token"));
    assert!(!driver.source().await.contains("Tsetseg"));

    // The right token signs in; the cookie is HttpOnly, SameSite=Strict, and not the token.
    let field = driver.wait_for("input[name=token]").await;
    driver.type_into(&field, &token).await;
    driver
        .click(&driver.wait_for("form.login button").await)
        .await;
    driver.wait_for("input[name=q]").await;
    let cookies = driver.cmd("GET", "/cookie", None).await;
    let session = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "amphi_session")
        .unwrap_or_else(|| panic!("no session cookie in {cookies}"));
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    assert!(!session["value"].as_str().unwrap().contains(&token));
    let sync = driver.text(&driver.wait_for("#sync").await).await;
    assert!(
        sync.contains("hoboksar/hoboksar-town") && sync.contains("connected"),
        "the parent shows as a peer: {sync}"
    );

    // Search by name: the member is found, Xingfu's other member is not.
    let search = driver.wait_for("input[name=q]").await;
    driver.type_into(&search, "tsetseg").await;
    driver
        .click(&driver.wait_for(".search-form button").await)
        .await;
    eventually(Duration::from_secs(10), "the search answers", || async {
        driver
            .current_url()
            .await
            .contains("q=tsetseg")
            .then_some(())
    })
    .await;
    let results = driver.text(&driver.wait_for("#results").await).await;
    assert!(results.contains(NAME), "{results}");
    assert!(!results.contains("Gulbahar"), "{results}");
    driver.screenshot(&screenshots.join("dashboard.png")).await;

    // The case file: both activities, each with its recording office; markup shown as text.
    let link = driver
        .wait_for(&format!("#results a[href='/dashboard/members/{id}']"))
        .await;
    driver.click(&link).await;
    let activities = driver.text(&driver.wait_for("#activities").await).await;
    for expected in [BAYIN_ACTIVITY, XINGFU_ACTIVITY, BAYIN, XINGFU] {
        assert!(
            activities.contains(expected),
            "{expected:?} missing from the activities: {activities}"
        );
    }
    assert!(activities.contains("记录组织 Recorded by"), "{activities}");
    assert!(
        driver.find("#activities i").await.is_none(),
        "a description's markup was rendered"
    );
    let affiliation = driver.text(&driver.wait_for("#affiliation").await).await;
    assert!(
        affiliation.contains(BAYIN) && affiliation.contains(XINGFU),
        "{affiliation}"
    );
    driver
        .screenshot(&screenshots.join("dashboard-casefile.png"))
        .await;

    // Sign out: the form again, and the case file is out of reach.
    driver.click(&driver.wait_for(".logout button").await).await;
    driver.wait_for("input[name=token]").await;
    driver
        .goto(&format!("{base}/dashboard/members/{other}"))
        .await;
    driver.wait_for("input[name=token]").await;
    assert!(!driver.source().await.contains("Gulbahar"));

    driver.quit().await;
    println!(
        "browser part took {:?}; screenshots in {}",
        browser_started.elapsed(),
        screenshots.display()
    );
    drop((driver, http));
    county.shutdown().await;
}

/// `chromedriver` from `$CHROMEDRIVER` or PATH; fails the test with what to install.
fn find_chromedriver() -> PathBuf {
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
fn target_dir() -> PathBuf {
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
struct Driver {
    child: Child,
    addr: SocketAddr,
    session: Option<String>,
    http: reqwest::Client,
}

impl Driver {
    /// Starts chromedriver on a free port and opens a headless 1366×768 session.
    async fn start(chromedriver: &Path) -> Driver {
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
            "--window-size=1366,768", "--lang=zh-TW", "--hide-scrollbars",
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
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    async fn try_call(
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
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let sid = self.session.as_deref().expect("a session");
        self.call(method, &format!("/session/{sid}{path}"), body)
            .await
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn current_url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element matching `css`, if there is one now.
    async fn find(&self, css: &str) -> Option<String> {
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
    async fn wait_for(&self, css: &str) -> String {
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

    async fn text(&self, element: &str) -> String {
        self.cmd("GET", &format!("/element/{element}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn type_into(&self, element: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn click(&self, element: &str) {
        self.cmd("POST", &format!("/element/{element}/click"), None)
            .await;
    }

    /// Saves a PNG of the viewport.
    async fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", None).await;
        let png = base64_decode(b64.as_str().expect("base64 text"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).expect("screenshot written");
        println!("screenshot: {}", path.display());
    }

    /// Ends the session (Chromium exits); chromedriver is killed on drop.
    async fn quit(&mut self) {
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

#[test]
fn base64_decodes_with_and_without_padding() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
    assert_eq!(base64_decode("iVBORw0K"), b"\x89PNG\r\n");
}
