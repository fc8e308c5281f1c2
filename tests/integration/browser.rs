//! A real headless Chromium driven over WebDriver (Debian's `chromium` + `chromedriver`,
//! both on loopback): one chromedriver and one throwaway browser profile per test, a
//! blocking API over fantoccini for the tests, and page screenshots into `docs/ui/` when
//! `NKPKI_UI_SCREENSHOTS=1` (`make screenshots`).

use crate::harness::Proc;
use fantoccini::{Client, ClientBuilder, Locator, elements::Element, error::CmdError};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// Set to `1` to write page screenshots into `docs/ui/` (off in `make test`).
pub const SCREENSHOTS_ENV: &str = "NKPKI_UI_SCREENSHOTS";
/// The height of the browser window; screenshots grow to the page's height.
const WINDOW_HEIGHT: u32 = 900;
/// Screenshots stop at this height so the PNGs stay small.
const MAX_SCREENSHOT_HEIGHT: u32 = 2400;

/// A headless Chromium session on its own chromedriver; both end when this is dropped.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Proc,
    /// Holds the browser profile (`--user-data-dir`) and chromedriver's log.
    profile: tempfile::TempDir,
    /// The server's base URL (`http://127.0.0.1:PORT`), without a trailing slash.
    pub base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session on it,
    /// 1280 px wide, for pages under `base`.
    pub fn start(base: &str) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).unwrap();
        let port = free_port();
        let driver = Proc {
            child: std::process::Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("chromedriver missing: run `make deps` (Debian's chromium-driver)"),
        };
        let webdriver = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--hide-scrollbars",
                    format!("--window-size=1280,{WINDOW_HEIGHT}"),
                    format!("--user-data-dir={}", profile.path().join("chromium").display()),
                ],
            }),
        );
        // an alert must stay open for the test to see it, not be dismissed silently
        caps.insert("unhandledPromptBehavior".into(), json!("ignore"));
        let client = rt
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&webdriver),
            )
            .unwrap_or_else(|e| panic!("WebDriver session on {webdriver}: {e}"));
        Browser {
            rt,
            client: Some(client),
            driver,
            profile,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    fn block<T>(&self, f: impl std::future::Future<Output = Result<T, CmdError>>) -> T {
        self.rt
            .block_on(f)
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    /// Opens `path` (`/ui/…`) on the server, or an absolute URL.
    pub fn goto(&self, path: &str) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        self.block(self.client().goto(&url));
    }

    /// The address bar: the path and query of the current page (`/ui/sign-in?next=…`).
    pub fn path(&self) -> String {
        let url = self.block(self.client().current_url());
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    pub fn find(&self, css: &str) -> Element {
        self.rt
            .block_on(self.client().find(Locator::Css(css)))
            .unwrap_or_else(|e| {
                panic!(
                    "no element {css} on {}: {e}\n{}",
                    self.path(),
                    self.body_text()
                )
            })
    }

    pub fn find_all(&self, css: &str) -> Vec<Element> {
        self.block(self.client().find_all(Locator::Css(css)))
    }

    pub fn exists(&self, css: &str) -> bool {
        !self.find_all(css).is_empty()
    }

    /// The visible text of the element at `css`.
    pub fn text(&self, css: &str) -> String {
        let el = self.find(css);
        self.block(el.text())
    }

    /// The visible text of the whole page.
    pub fn body_text(&self) -> String {
        self.rt
            .block_on(async { self.client().find(Locator::Css("body")).await?.text().await })
            .unwrap_or_default()
    }

    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let el = self.find(css);
        self.block(el.attr(name))
    }

    pub fn click(&self, css: &str) {
        let el = self.find(css);
        self.block(el.click());
    }

    /// Clears the field at `css` and types `value` into it.
    pub fn fill(&self, css: &str, value: &str) {
        let el = self.find(css);
        self.block(el.clear());
        self.block(el.send_keys(value));
    }

    /// Chooses the option whose value is `value` in the `<select>` at `css`.
    pub fn select(&self, css: &str, value: &str) {
        let el = self.find(css);
        self.block(el.select_by_value(value));
    }

    /// Presses and releases each key of `keys` (text, or [`fantoccini::key::Key`]s as
    /// characters) in turn, as a keyboard does: into whatever has the focus.
    pub fn keys(&self, keys: &str) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let mut actions = KeyActions::new("keyboard".into());
        for value in keys.chars() {
            actions = actions
                .then(KeyAction::Down { value })
                .then(KeyAction::Up { value });
        }
        self.block(self.client().perform_actions(actions));
    }

    /// Presses one special key ([`fantoccini::key::Key::Tab`], `Enter`…).
    pub fn key(&self, key: fantoccini::key::Key) {
        self.keys(&char::from(key).to_string());
    }

    /// The `id` (or, without one, the `name`) of the element that has the focus.
    pub fn focused(&self) -> String {
        let v = self.execute(
            "const e = document.activeElement; return e ? (e.id || e.getAttribute('name') || e.tagName) : '';",
            vec![],
        );
        v.as_str().unwrap_or_default().to_owned()
    }

    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.block(self.client().execute(script, args))
    }

    /// The text of an open `alert`/`confirm`/`prompt` dialog, if one is open.
    pub fn open_dialog(&self) -> Option<String> {
        self.rt.block_on(self.client().get_alert_text()).ok()
    }

    /// Waits (up to `secs`) until the element at `css` exists; panics with the page text if not.
    pub fn wait_for(&self, css: &str, secs: u64) -> Element {
        self.rt
            .block_on(
                self.client()
                    .wait()
                    .at_most(Duration::from_secs(secs))
                    .for_element(Locator::Css(css)),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "{css} did not appear on {} within {secs} s: {e}\n{}",
                    self.path(),
                    self.body_text()
                )
            })
    }

    /// Waits (up to `secs`) until the text of the element at `css` satisfies `pred`, and
    /// returns it; panics with the last text seen if it never does.
    pub fn wait_text(&self, css: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let text = self
                .rt
                .block_on(async { self.client().find(Locator::Css(css)).await?.text().await })
                .unwrap_or_default();
            if pred(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} on {} never matched within {secs} s; last text: {text:?}",
                self.path()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (up to `secs`) until the address bar's path starts with `prefix`.
    pub fn wait_path(&self, prefix: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let path = self.path();
            if path.starts_with(prefix) {
                return path;
            }
            assert!(
                Instant::now() < deadline,
                "still on {path}, not {prefix}…, after {secs} s:\n{}",
                self.body_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fetches `path` from the page's origin with the browser's own cookies (what a
    /// download link gives the user); returns the status and the body.
    pub fn fetch(&self, path: &str) -> (u16, Vec<u8>) {
        let v = self.block(self.client().execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0], {credentials: 'same-origin'})
               .then(r => r.arrayBuffer().then(b => {
                   const bytes = new Uint8Array(b); let s = '';
                   for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
                   done([r.status, btoa(s)]);
               }))
               .catch(e => done([0, btoa(String(e))]));",
            vec![json!(path)],
        ));
        let status = v[0].as_u64().unwrap_or(0) as u16;
        let body = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            v[1].as_str().unwrap_or_default(),
        )
        .unwrap();
        (status, body)
    }

    /// The browser's cookies for the current page, as `(name, value)`.
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.block(self.client().get_all_cookies())
            .into_iter()
            .map(|c| (c.name().to_owned(), c.value().to_owned()))
            .collect()
    }

    /// Resizes the window's viewport to `width` × `height` CSS pixels (Chromium's device
    /// metrics, so narrower than a desktop window may be, like a phone).
    pub fn viewport(&self, width: u32, height: u32) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}),
        );
    }

    /// Runs a Chrome DevTools Protocol command through chromedriver's `goog/cdp/execute`.
    fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.block(self.client().issue_cmd(Cdp {
            cmd: cmd.to_owned(),
            params,
        }))
    }

    /// When `NKPKI_UI_SCREENSHOTS=1`: saves the current page at `width` px wide (as tall as
    /// the page, up to a limit) as `docs/ui/<name>-<width>.png`. Otherwise does nothing.
    pub fn screenshot(&self, name: &str, width: u32) {
        if std::env::var(SCREENSHOTS_ENV).as_deref() != Ok("1") {
            return;
        }
        self.viewport(width, WINDOW_HEIGHT);
        let height = self
            .execute(
                "return Math.ceil(document.documentElement.scrollHeight);",
                vec![],
            )
            .as_u64()
            .unwrap_or(WINDOW_HEIGHT as u64) as u32;
        self.viewport(width, height.clamp(200, MAX_SCREENSHOT_HEIGHT));
        let png = self.block(self.client().screenshot());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ui");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({}));
    }

    /// Saves the page at 1280 px and 390 px wide (see [`Browser::screenshot`]).
    pub fn screenshots(&self, name: &str) {
        self.screenshot(name, 1280);
        self.screenshot(name, 390);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // ending the session closes Chromium; then chromedriver goes (Proc's drop)
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        // a Chromium left behind (the session did not end) is found by its own profile
        let marker = self.profile.path().join("chromium");
        let marker = marker.to_string_lossy();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if crate::harness::contains(&cmdline, marker.as_bytes()) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        let _ = &self.driver;
    }
}

/// A Chrome DevTools Protocol command sent through chromedriver.
#[derive(Debug)]
struct Cdp {
    cmd: String,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"cmd": self.cmd, "params": self.params}).to_string()),
        )
    }
}
