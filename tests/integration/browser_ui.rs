//! The web pages in a real headless Chromium (tests/integration/browser.rs).

use crate::browser::Browser;
use crate::harness::Env;

/// The harness itself: a headless Chromium on its own chromedriver loads a page of the
/// real server and reads it.
#[test]
fn browser_loads_the_server_health_page() {
    let env = Env::new();
    let server = env.serve(&[]);
    let browser = Browser::start(&server.url);
    browser.goto("/healthz");
    assert_eq!(browser.path(), "/healthz");
    let text = browser.body_text();
    assert!(text.contains("\"ok\""), "healthz said {text:?}");
}
