//! Headless Chromium driven over the DevTools protocol (a WebSocket, JSON commands): enough to
//! open pages, run a line of script in them, resize the window and take screenshots.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Browser {
    child: Child,
    socket: Socket,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn executable() -> String {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(name).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok() {
            return name.to_owned();
        }
    }
    panic!("the dashboard tests need Chromium: apt-get install -y chromium (.ci/run installs it)");
}

impl Browser {
    /// Starts a headless Chromium with a fresh profile and attaches to its first tab.
    pub async fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(executable())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Chromium writes the port it listens on into the profile.
        let marker = profile.path().join("DevToolsActivePort");
        let mut port = None;
        for _ in 0..300 {
            if let Some(first) = std::fs::read_to_string(&marker).ok().and_then(|t| t.lines().next().map(str::to_owned))
                && let Ok(p) = first.trim().parse::<u16>()
            {
                port = Some(p);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let port = port.expect("Chromium did not start its DevTools server within 15 s");
        let mut tab = None;
        for _ in 0..100 {
            let targets: Value = match reqwest::get(format!("http://127.0.0.1:{port}/json/list")).await {
                Ok(response) => response.json().await.unwrap_or_default(),
                Err(_) => Value::Null,
            };
            tab = targets
                .as_array()
                .and_then(|all| all.iter().find(|t| t["type"] == "page"))
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned));
            if tab.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let url = tab.expect("Chromium has no tab");
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
        let mut browser = Self { child, socket, next_id: 0, _profile: profile };
        browser.call("Page.enable", json!({})).await;
        browser
    }

    /// Sends a command and waits for its answer (events in between are skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params).await {
            Ok(result) => result,
            Err(error) => panic!("{method}: {error}"),
        }
    }

    /// Sends a command and waits for its answer, or the error Chromium gave.
    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let text = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket.send(Message::Text(text.into())).await.unwrap();
        let wait = async {
            while let Some(message) = self.socket.next().await {
                let Ok(Message::Text(text)) = message else { continue };
                let value: Value = serde_json::from_str(&text).unwrap_or_default();
                if value["id"] == id {
                    return match value.get("error") {
                        Some(error) => Err(error.clone()),
                        None => Ok(value["result"].clone()),
                    };
                }
            }
            panic!("Chromium closed the connection during {method}");
        };
        tokio::time::timeout(Duration::from_secs(30), wait).await.unwrap_or_else(|_| panic!("{method} took over 30 s"))
    }

    /// The value of a JavaScript expression in the page, waiting for it when it is a promise.
    pub async fn eval_async(&mut self, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self.call("Runtime.evaluate", params).await;
        assert!(result.get("exceptionDetails").is_none(), "{expression}: {result}");
        result["result"]["value"].clone()
    }

    /// Runs axe-core (`axe`: the text of `axe.min.js`) on the page and returns its violations
    /// (`rule (impact): the elements`).
    pub async fn axe_violations(&mut self, axe: &str) -> Vec<String> {
        self.eval(axe).await;
        let found = self
            .eval_async(
                "axe.run(document).then(r => [r.passes.length, r.violations.map(v => \
                 v.id + ' (' + v.impact + '): ' + v.nodes.map(n => n.target.join(' ')).join(', '))])",
            )
            .await;
        assert!(found[0].as_u64().is_some_and(|passed| passed >= 10), "axe-core ran its rules: {found}");
        found[1]
            .as_array()
            .map(|all| all.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Submits a form of the page, as a person's click, and waits for the page that answers at
    /// `path` (the same address as the form's page, often: the old page is marked, so it is not
    /// taken for the answer).
    pub async fn submit(&mut self, selector: &str, path: &str) {
        let script = format!("window.__before = true; document.querySelector({}).submit(); true", json!(selector));
        self.eval(&script).await;
        self.answered(path, selector).await;
    }

    /// Waits for the page that answers a form at `path`: the page that sent it was marked, so it
    /// is not taken for the answer.
    async fn answered(&mut self, path: &str, what: &str) {
        for _ in 0..400 {
            let state = self.poll("[document.readyState, window.__before === true]").await;
            if state[0] == "complete" && state[1] == false {
                self.wait_for(path).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{what} sent the form, and no page answered");
    }

    /// Clicks the button `selector` (so the form sends its name and value) and waits for the
    /// page that answers at `path`, as [`Self::submit`] does.
    pub async fn press(&mut self, selector: &str, path: &str) {
        let script = format!("window.__before = true; document.querySelector({}).click(); true", json!(selector));
        assert_eq!(self.eval(&script).await, true, "no button {selector}");
        self.answered(path, selector).await;
    }

    /// Chooses the file at `path` in the file field `selector`, as a person picking it would.
    pub async fn choose_file(&mut self, selector: &str, path: &std::path::Path) {
        let document = self.call("DOM.getDocument", json!({})).await;
        let root = document["root"]["nodeId"].clone();
        let found = self.call("DOM.querySelector", json!({"nodeId": root, "selector": selector})).await;
        let node = found["nodeId"].clone();
        assert!(node.as_u64().is_some_and(|n| n > 0), "no field {selector}");
        self.call("DOM.setFileInputFiles", json!({"files": [path.to_string_lossy()], "nodeId": node})).await;
    }

    /// Types `value` into the field `selector` of the page.
    pub async fn fill(&mut self, selector: &str, value: &str) {
        let script = format!("document.querySelector({}).value = {}; true", json!(selector), json!(value));
        assert_eq!(self.eval(&script).await, true, "no field {selector}");
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self.call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true})).await;
        assert!(result.get("exceptionDetails").is_none(), "{expression}: {result}");
        result["result"]["value"].clone()
    }

    /// The value of an expression while the page may be changing: `Null` when the page was
    /// navigating away at that moment (Chromium: "Inspected target navigated or closed"), to be
    /// asked again.
    async fn poll(&mut self, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true});
        match self.try_call("Runtime.evaluate", params).await {
            Ok(result) if result.get("exceptionDetails").is_none() => result["result"]["value"].clone(),
            Ok(_) => Value::Null,
            Err(error) if error.to_string().contains("navigated") || error.to_string().contains("context") => {
                Value::Null
            }
            Err(error) => panic!("Runtime.evaluate {expression}: {error}"),
        }
    }

    /// Waits until the page at `path` has loaded (its path, or its path and query when `path`
    /// has one; ending in `*`: any path it begins).
    pub async fn wait_for(&mut self, path: &str) {
        let at = if path.contains('?') { "location.pathname + location.search" } else { "location.pathname" };
        let wanted = |now: &Value| match path.strip_suffix('*') {
            Some(prefix) => now.as_str().is_some_and(|n| n.starts_with(prefix)),
            None => now == path,
        };
        for _ in 0..400 {
            let state = self.poll(&format!("[document.readyState, {at}]")).await;
            if state[0] == "complete" && wanted(&state[1]) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let at = self.eval("location.href").await;
        panic!("{path} did not load; the browser is at {at}");
    }

    /// Opens `url` and waits until the page at `expect` (a path) has loaded.
    pub async fn open(&mut self, url: &str, expect: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for(expect).await;
    }

    /// Sets the window to a size: a laptop (1280 × 900) or a phone (390 × 844, touch, scaled).
    pub async fn resize(&mut self, width: u32, height: u32, mobile: bool) {
        let scale = if mobile { 2 } else { 1 };
        let params = json!({"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile});
        self.call("Emulation.setDeviceMetricsOverride", params).await;
    }

    /// A PNG of the whole page, saved under `target/tmp/dashboard-screenshots/NAME.png`.
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        self.screenshot_in("dashboard-screenshots", name).await
    }

    /// A PNG of the whole page, saved under `target/tmp/FOLDER/NAME.png`.
    pub async fn screenshot_in(&mut self, folder: &str, name: &str) -> PathBuf {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true})).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }
}
