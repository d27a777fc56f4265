//! A real headless Chromium for the web console's tests: Debian's `chromium` driven through
//! its `chromedriver` (started here on a free port) with fantoccini. Screenshots go to
//! `target/console-screenshots/`, for a reviewer to look at.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// A chromedriver process and one browser session on it; both end on drop.
pub struct Browser {
    pub client: Client,
    /// Leads its own process group, which the Chromium it starts joins.
    driver: Child,
    /// Chromium's profile and `TMPDIR`, removed on drop.
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: killing chromedriver alone leaves its Chromium running (about
        // 0.5 GiB a test) for as long as the machine is up.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium at 1280×800; panics, saying how to install
    /// them, when they are missing.
    pub async fn start() -> Browser {
        let missing = || {
            panic!(
                "chromium and chromedriver are missing: the web console's tests drive a real \
                 headless browser. Install Debian's packages (`apt-get install -y chromium \
                 chromium-driver`; .ci/tools.sh does this)"
            )
        };
        let driver_bin = crate::which("chromedriver").unwrap_or_else(missing);
        let chromium = crate::which("chromium").unwrap_or_else(missing);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Chromium's profile and scratch directories, all in one place removed on drop.
        let profile = tempfile::tempdir().expect("a profile directory");
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .env("TMPDIR", profile.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,800", "--no-first-run", "--disable-extensions",
                         format!("--user-data-dir={}", profile.path().join("user-data").display())],
            }),
        );
        let started = Instant::now();
        let client = loop {
            match ClientBuilder::rustls()
                .expect("rustls connector")
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if started.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot start a chromium session through chromedriver: {e}"),
            }
        };
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// The page's visible text.
    pub async fn body(&self) -> String {
        self.text("body").await
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Writes a screenshot of the page at the laptop (1280×800) and phone (390×844) sizes to
    /// `target/console-screenshots/<name>-<w>x<h>.png`; returns the laptop one's path.
    pub async fn screenshots(&self, name: &str) -> PathBuf {
        let dir = crate::bin::workspace_root().join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let mut first = None;
        for (w, h) in [(1280, 800), (390, 844)] {
            self.client.set_window_size(w, h).await.unwrap();
            let png = self.client.screenshot().await.unwrap();
            assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
            let path = dir.join(format!("{name}-{w}x{h}.png"));
            std::fs::write(&path, png).unwrap();
            first.get_or_insert(path);
        }
        self.client.set_window_size(1280, 800).await.unwrap();
        first.unwrap()
    }

    /// Signs in at `base` with `token` through the sign-in form.
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/login")).await;
        let field = self.client.find(Locator::Css("#token")).await.unwrap();
        field.send_keys(token).await.unwrap();
        self.client
            .find(Locator::Css("form.login button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_for("the overview after signing in", "document.querySelector('h1') && document.querySelector('h1').textContent === 'Overview'").await;
    }

    /// Waits (up to 20 s) until `condition`, a JavaScript expression, is true in the page.
    pub async fn wait_for(&self, what: &str, condition: &str) {
        let started = Instant::now();
        loop {
            let v = self
                .client
                .execute(&format!("return !!({condition});"), vec![])
                .await;
            if matches!(v, Ok(serde_json::Value::Bool(true))) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what} ({condition}): {v:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
