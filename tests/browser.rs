//! A real browser drives the examples: Debian's headless Chromium, through
//! its ChromeDriver (WebDriver, spoken by `fantoccini`), against the real
//! example binaries on 127.0.0.1. Three behaviours only mean something in a
//! browser:
//!
//! 1. `websocket_rooms`' page at `/`: `full` and `reader` log in through the
//!    page's form in two browser sessions and join one room; `full`'s message
//!    shows on `reader`'s page, `reader`'s is refused on the page and never
//!    shows on `full`'s. The page is saved to `target/browser/chat_rooms.png`.
//! 2. A static page on a second origin (`password_flow`'s `ALLOWED_ORIGIN`)
//!    logs in with `fetch`, calls `/users/me` with the bearer token, and once
//!    the token is past half its life reads the renewed one from the response
//!    header and uses it; the same page against a server that sends the
//!    header without exposing it through CORS reads `null`.
//! 3. A page on a foreign origin, in a browser holding `websocket_rooms`'
//!    session cookie, opens a WebSocket to it (refused) and posts a classic
//!    auto-submitting form to `/logout` (refused; still logged in).
//!
//! They are `#[ignore]`d, so a plain `cargo test` reports them as ignored
//! rather than as passed without having run; `.ci/run` runs them with
//! `cargo test --all-features --test browser -- --ignored`. Run that way
//! without Chromium and ChromeDriver they skip with one line on stderr; with
//! `CI=true` they fail instead.
#![cfg(feature = "axum")]

mod common;

use std::future::Future;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Once, mpsc};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, Method};
use axum::response::Html;
use axum::routing::{get, post};
use common::example::ExampleServer;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tower_auth::axum::token_endpoint;
use tower_auth::{
    AuthLayer, Authenticated, Authenticator, Key, MemoryUserStore, PasswordHasher, Scopes,
    SimpleUser, SlidingExpiry,
};
use tower_http::cors::CorsLayer;

/// The examples' `JWT_SECRET` (and the contrast server's).
const SECRET: &str = "a test secret that is longer than thirty-two bytes";
/// Access-token lifetime for scenario 2: renewal is due from its 5th second
/// on (past half-life), which leaves 3 seconds before it expires.
const SHORT_LIFETIME_SECS: u64 = 8;
/// How long a page condition may take to come true.
const PATIENCE: Duration = Duration::from_secs(10);
/// Chromium's flags: headless, and no traffic of its own (no update checks,
/// no sync, no QUIC probes). Even so it still looks up a few Google host
/// names (seen with `strace -e connect`), so its resolver answers "not
/// found" for every name: nothing but 127.0.0.1 is ever reached.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
];

// ---------------------------------------------------------------------------
// The browser: found, started, driven
// ---------------------------------------------------------------------------

/// The installed browser: `chromium` and `chromedriver`.
struct Programs {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// `name` in `/usr/bin` (Debian's packages) or else on `PATH`.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/bin"))
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The browser, or `None` (after one line on stderr, once per run) when it
/// is not installed. With `CI=true` a missing browser is a failure.
fn programs() -> Option<Programs> {
    if let (Some(chromium), Some(chromedriver)) =
        (find_program("chromium"), find_program("chromedriver"))
    {
        return Some(Programs {
            chromium,
            chromedriver,
        });
    }
    let missing = "chromium/chromedriver not found; apt-get install chromium chromium-driver";
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true runs the browser tests, but {missing}"
    );
    static SKIP: Once = Once::new();
    SKIP.call_once(|| {
        // Straight to stderr: the test harness captures `eprintln!`.
        let _ = writeln!(std::io::stderr(), "skipping browser tests: {missing}");
    });
    None
}

/// A ChromeDriver on a free port of 127.0.0.1; killed when dropped.
struct ChromeDriver {
    child: Child,
    chromium: PathBuf,
    /// `http://127.0.0.1:PORT`.
    url: String,
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChromeDriver {
    /// Starts `chromedriver --port=0` and waits until it answers.
    async fn start(programs: &Programs) -> ChromeDriver {
        let mut child = Command::new(&programs.chromedriver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let stdout = child.stdout.take().expect("piped stdout");
        // Own the child before anything can panic, so it is always killed.
        let mut driver = ChromeDriver {
            child,
            chromium: programs.chromium.clone(),
            url: String::new(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            // "ChromeDriver was started successfully on port 41059."
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(port) = line
                    .split_once("started successfully on port ")
                    .map(|(_, rest)| rest.trim_end_matches('.').to_owned())
                {
                    let _ = tx.send(port);
                    break;
                }
            }
            // Keep draining, so chromedriver never writes into a closed pipe.
            lines.for_each(drop);
        });
        let port = tokio::task::spawn_blocking(move || rx.recv_timeout(PATIENCE))
            .await
            .expect("the reader thread")
            .expect("chromedriver prints its port");
        driver.url = format!("http://127.0.0.1:{port}");
        let status = format!("{}/status", driver.url);
        eventually("chromedriver to answer", || async {
            let response = reqwest_client().get(&status).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        driver
    }

    /// A new browser session: a fresh Chromium with its own profile.
    async fn browser(&self) -> Browser {
        // In `target/tmp`: after a failed test Chromium may still be writing
        // to it when it is removed, and what remains is left there, not in
        // the system's temporary directory.
        let profile = tempfile::Builder::new()
            .prefix("chromium-profile-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("a temporary profile directory");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|&f| f.to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut capabilities = fantoccini::wd::Capabilities::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": self.chromium, "args": args }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("chromedriver starts a Chromium session");
        client
            .set_window_size(900, 760)
            .await
            .expect("a window size");
        Browser {
            client,
            _profile: profile,
        }
    }
}

/// One browser session, with its profile directory (removed when dropped).
/// [`Browser::close`] ends the session; a failing test leaves that to
/// [`ChromeDriver`]'s drop.
struct Browser {
    client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|err| panic!("open {url}: {err}"));
    }

    /// Runs `script` in the page (a returned promise is awaited).
    async fn run(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|err| panic!("script {script:?}: {err}"))
    }

    /// Replaces the text of the input matched by `css`.
    async fn fill(&self, css: &str, text: &str) {
        let input = self.client.find(Locator::Css(css)).await.expect(css);
        input.clear().await.expect("clear");
        input.send_keys(text).await.expect("type");
    }

    async fn click(&self, css: &str) {
        let button = self.client.find(Locator::Css(css)).await.expect(css);
        button.click().await.expect("click");
    }

    /// The page's visible text.
    async fn body_text(&self) -> String {
        let text = self.run("return document.body.innerText", vec![]).await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// The HTTP status of the page's own response.
    async fn response_status(&self) -> u64 {
        let status = self
            .run(
                "return performance.getEntriesByType('navigation')[0].responseStatus",
                vec![],
            )
            .await;
        status.as_u64().expect("a status code")
    }

    async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("create the directory");
        std::fs::write(path, png).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
    }

    async fn close(self) {
        self.client.close().await.expect("the session ends");
    }
}

/// Polls `probe` until it returns `Some` (every 100 ms, for [`PATIENCE`]).
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// `target/`, wherever `CARGO_TARGET_DIR` put it.
fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().expect("target/tmp is in target/").to_owned()
}

// ---------------------------------------------------------------------------
// websocket_rooms' own page
// ---------------------------------------------------------------------------

/// The lines of the page's message log, oldest first.
async fn chat_log(browser: &Browser) -> Vec<String> {
    let lines = browser
        .run(
            "return [...document.querySelectorAll('#log li')].map(li => li.textContent).reverse()",
            vec![],
        )
        .await;
    serde_json::from_value(lines).expect("a list of lines")
}

/// Waits until the page's log has `line`.
async fn wait_for_line(browser: &Browser, who: &str, line: &str) {
    eventually(&format!("{line:?} on {who}'s page"), || async {
        chat_log(browser)
            .await
            .iter()
            .any(|l| l == line)
            .then_some(())
    })
    .await;
}

/// Opens the page and logs `user` in with its form (the response sets the
/// session cookie).
async fn log_in_on_page(browser: &Browser, base: &str, user: &str) {
    browser.goto(&format!("{base}/")).await;
    browser.fill("#login input[name=username]", user).await;
    browser
        .fill("#login input[name=password]", &format!("{user}-pass"))
        .await;
    browser.click("#login button:not([type])").await;
    eventually(&format!("{user} to be logged in"), || async {
        let who = browser.client.find(Locator::Id("who")).await.ok()?;
        (who.text().await.ok()? == "logged in").then_some(())
    })
    .await;
}

/// Joins `room` with the page's form: a WebSocket authenticated by the
/// session cookie.
async fn join_on_page(browser: &Browser, who: &str, room: &str) {
    browser.fill("#room", room).await;
    browser.click("#join button").await;
    wait_for_line(browser, who, &format!("joined {room}")).await;
}

async fn send_on_page(browser: &Browser, text: &str) {
    browser.fill("#text", text).await;
    browser.click("#send button").await;
}

/// Scenario 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver; run with --ignored, as .ci/run does"]
async fn a_writer_and_a_reader_chat_through_the_page() {
    let Some(programs) = programs() else { return };
    let server = ExampleServer::start("websocket_rooms", Some(SECRET), &[]);
    let driver = ChromeDriver::start(&programs).await;
    let (full, reader) = tokio::join!(driver.browser(), driver.browser());

    log_in_on_page(&full, &server.base, "full").await;
    log_in_on_page(&reader, &server.base, "reader").await;
    join_on_page(&full, "full", "browser-chat").await;
    join_on_page(&reader, "reader", "browser-chat").await;

    send_on_page(&full, "hello from full").await;
    wait_for_line(&reader, "reader", "full: hello from full").await;
    wait_for_line(&full, "full", "full: hello from full").await;

    send_on_page(&reader, "reader was here").await;
    wait_for_line(
        &reader,
        "reader",
        "refused: you may read this room but not write to it",
    )
    .await;
    // The server answered the reader's message before `full` sends this one,
    // and one room's messages reach everyone in one order: once it shows on
    // `full`'s page, a broadcast of the reader's message would be there too.
    send_on_page(&full, "only writers are heard").await;
    wait_for_line(&full, "full", "full: only writers are heard").await;
    wait_for_line(&reader, "reader", "full: only writers are heard").await;
    for (who, page) in [("full", &full), ("reader", &reader)] {
        let log = chat_log(page).await;
        assert!(
            !log.iter().any(|line| line.contains("reader was here")),
            "the reader's message reached {who}'s page: {log:?}"
        );
    }
    assert_eq!(
        chat_log(&reader).await,
        [
            "joined browser-chat",
            "full: hello from full",
            "refused: you may read this room but not write to it",
            "full: only writers are heard",
        ]
    );

    reader
        .screenshot(&target_dir().join("browser/chat_rooms.png"))
        .await;
    full.close().await;
    reader.close().await;
}

// ---------------------------------------------------------------------------
// A page on a second origin, reading the renewed token
// ---------------------------------------------------------------------------

/// The page on the second origin: keeps one token per API, and swaps it for
/// `x-refreshed-token` whenever a response carries one (the README's line).
const TOKEN_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>token page</title></head>
<body>
<h1>A page on another origin</h1>
<ul id="log"></ul>
<script>
const tokens = {};
const show = (text) => {
  const li = document.createElement("li");
  li.textContent = text;
  document.getElementById("log").append(li);
};
async function logIn(api) {
  const response = await fetch(`${api}/token`, {
    method: "POST",
    body: new URLSearchParams({ username: "johndoe", password: "secret", scope: "me" }),
  });
  const body = await response.json();
  tokens[api] = body.access_token;
  show(`${api} login: ${response.status}`);
  return { status: response.status, expires_in: body.expires_in, token: body.access_token };
}
async function readMe(api) {
  const sent = tokens[api];
  const response = await fetch(`${api}/users/me`, { headers: { Authorization: `Bearer ${sent}` } });
  const renewed = response.headers.get("x-refreshed-token");
  tokens[api] = renewed ?? tokens[api];
  const body = await response.json();
  show(`${api} /users/me: ${response.status} ${body.username}${renewed ? " (renewed token)" : ""}`);
  return { status: response.status, username: body.username, sent, renewed };
}
</script>
</body>
</html>
"#;

/// What the page's `readMe` saw.
#[derive(Debug, serde::Deserialize)]
struct ReadMe {
    status: u16,
    username: Option<String>,
    sent: String,
    renewed: Option<String>,
}

async fn log_in_from_page(page: &Browser, api: &str) -> String {
    let login = page
        .run("return logIn(arguments[0])", vec![json!(api)])
        .await;
    assert_eq!(login["status"], 200, "{api}: {login}");
    assert_eq!(login["expires_in"], SHORT_LIFETIME_SECS, "{api}: {login}");
    login["token"].as_str().expect("a token").to_owned()
}

async fn read_me_from_page(page: &Browser, api: &str) -> ReadMe {
    let seen = page
        .run("return readMe(arguments[0])", vec![json!(api)])
        .await;
    let seen: ReadMe = serde_json::from_value(seen).expect("readMe's answer");
    assert_eq!(seen.status, 200, "{api}: {seen:?}");
    assert_eq!(seen.username.as_deref(), Some("johndoe"), "{api}: {seen:?}");
    seen
}

/// A codec for tokens signed with [`SECRET`].
fn codec(lifetime_secs: u64) -> tower_auth::TokenCodec {
    common::codec_builder(Key::hs256(SECRET.as_bytes()).expect("a 32-byte secret"))
        .access_lifetime(Duration::from_secs(lifetime_secs))
        .build()
        .expect("a codec")
}

/// Waits until every token is past half its life: renewal is then due.
async fn past_half_life(tokens: &[&str]) {
    let codec = codec(SHORT_LIFETIME_SECS);
    let due = tokens
        .iter()
        .map(|token| {
            let claims = codec.verify::<()>(token).expect("a valid token");
            // Due once less time remains than has passed: 2 * now > iat + exp.
            (claims.iat.expect("iat") + claims.exp) / 2 + 1
        })
        .max()
        .expect("a token");
    while common::now() < due {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The contrast: the same users, token lifetime and sliding expiry as
/// `password_flow`, and a CORS layer that lets `origin` in but does not
/// expose `x-refreshed-token`.
async fn server_without_exposed_header(origin: &str) -> String {
    async fn read_me(me: Authenticated<SimpleUser>) -> axum::Json<Value> {
        axum::Json(json!({ "username": me.user.username }))
    }
    let passwords = PasswordHasher::new();
    let users = MemoryUserStore::new();
    let hash = passwords.hash("secret").await.expect("a hash");
    users.insert(SimpleUser::new("johndoe", hash).with_scopes(Scopes::parse("me items").unwrap()));
    let auth = Authenticator::builder(users, codec(SHORT_LIFETIME_SECS))
        .passwords(passwords)
        .sliding_expiry(SlidingExpiry::new(Duration::from_secs(8 * 3600)))
        .build()
        .expect("an authenticator");
    let cors = CorsLayer::new()
        .allow_origin(HeaderValue::from_str(origin).expect("an origin"))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([AUTHORIZATION, CONTENT_TYPE]);
    common::serve(
        Router::new()
            .route("/token", post(token_endpoint::<SimpleUser, ()>))
            .route("/users/me", get(read_me))
            .layer(AuthLayer::optional(auth.clone()))
            .layer(cors)
            .with_state(auth),
    )
    .await
}

/// Scenario 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver; run with --ignored, as .ci/run does"]
async fn a_page_on_another_origin_reads_the_renewed_token_only_when_cors_exposes_it() {
    let Some(programs) = programs() else { return };
    let page_origin =
        common::serve(Router::new().route("/", get(|| async { Html(TOKEN_PAGE) }))).await;
    let lifetime = SHORT_LIFETIME_SECS.to_string();
    let exposed = ExampleServer::start(
        "password_flow",
        Some(SECRET),
        &[
            ("ALLOWED_ORIGIN", &page_origin),
            ("TOKEN_LIFETIME_SECS", &lifetime),
        ],
    );
    let hidden = server_without_exposed_header(&page_origin).await;
    let driver = ChromeDriver::start(&programs).await;
    let page = driver.browser().await;
    page.goto(&format!("{page_origin}/")).await;

    let apis = [exposed.base.as_str(), hidden.as_str()];
    let mut logins = Vec::new();
    for api in apis {
        logins.push(log_in_from_page(&page, api).await);
    }
    for api in apis {
        let fresh = read_me_from_page(&page, api).await;
        assert_eq!(fresh.renewed, None, "{api}: a fresh token is not renewed");
    }

    // The deliberate wait: until both tokens are past half their life.
    past_half_life(&logins.iter().map(String::as_str).collect::<Vec<_>>()).await;

    // password_flow exposes the header: the page reads the renewed token...
    let aged = read_me_from_page(&page, &exposed.base).await;
    let renewed = aged
        .renewed
        .expect("the page reads x-refreshed-token from password_flow");
    assert_ne!(renewed, aged.sent);
    let codec = codec(SHORT_LIFETIME_SECS);
    let (old, new) = (
        codec.verify::<()>(&aged.sent).unwrap(),
        codec.verify::<()>(&renewed).unwrap(),
    );
    assert!(new.exp > old.exp, "the renewed token lives longer");
    assert_eq!(new.auth_time, old.auth_time, "same login");
    // ...and its next call carries it, successfully.
    let next = read_me_from_page(&page, &exposed.base).await;
    assert_eq!(next.sent, renewed, "the page uses the renewed token");

    // The contrast server sends the header too, but the page cannot read it.
    let unexposed = read_me_from_page(&page, &hidden).await;
    assert_eq!(
        unexposed.renewed, None,
        "a header CORS does not expose is null for page scripts"
    );
    // Proof that it was sent: the same request with the same aged token,
    // outside the browser.
    for (api, exposes) in [(exposed.base.as_str(), true), (hidden.as_str(), false)] {
        let token = if exposes { &aged.sent } else { &unexposed.sent };
        let response = reqwest_client()
            .get(format!("{api}/users/me"))
            .header("origin", &page_origin)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{api}");
        let headers = response.headers();
        assert!(
            headers.get("x-refreshed-token").is_some(),
            "{api} sends x-refreshed-token"
        );
        assert_eq!(headers["access-control-allow-origin"], page_origin.as_str());
        assert_eq!(
            headers
                .get("access-control-expose-headers")
                .map(|v| v.to_str().unwrap()),
            exposes.then_some("x-refreshed-token"),
            "{api}"
        );
    }
    page.close().await;
}

// ---------------------------------------------------------------------------
// A foreign page using websocket_rooms' session cookie
// ---------------------------------------------------------------------------

/// Opens a WebSocket to `{target}` as soon as it loads and reports whether
/// it opened (the browser sends the session cookie: same site, other port).
const HIJACK_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>foreign page</title></head>
<body>
<p id="result">pending</p>
<script>
const result = document.getElementById("result");
const socket = new WebSocket("{target}");
socket.onopen = () => { result.textContent = "open"; socket.close(); };
socket.onclose = (event) => {
  if (result.textContent === "pending") result.textContent = `closed ${event.code}`;
};
</script>
</body>
</html>
"#;

/// The classic CSRF: a form that posts itself to `{target}` on load.
const CSRF_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>foreign page</title></head>
<body>
<form id="csrf" method="post" action="{target}"></form>
<script>document.getElementById("csrf").submit();</script>
</body>
</html>
"#;

/// Scenario 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver; run with --ignored, as .ci/run does"]
async fn a_foreign_page_cannot_use_the_session_cookie() {
    let Some(programs) = programs() else { return };
    let server = ExampleServer::start("websocket_rooms", Some(SECRET), &[]);
    let room = "guarded";
    let socket_url = format!(
        "ws://{}/ws/{room}",
        server.base.trim_start_matches("http://")
    );
    let hijack = HIJACK_PAGE.replace("{target}", &socket_url);
    let csrf = CSRF_PAGE.replace("{target}", &server.url("/logout"));
    let foreign = common::serve(
        Router::new()
            .route("/hijack", get(|| async { Html(hijack) }))
            .route("/csrf", get(|| async { Html(csrf) })),
    )
    .await;
    let driver = ChromeDriver::start(&programs).await;
    let browser = driver.browser().await;

    log_in_on_page(&browser, &server.base, "full").await;
    // Control: the app's own page opens that socket with the cookie.
    join_on_page(&browser, "full", room).await;

    browser.goto(&format!("{foreign}/hijack")).await;
    let result = eventually("the foreign page's socket to open or close", || async {
        let result = browser.client.find(Locator::Id("result")).await.ok()?;
        Some(result.text().await.ok()?).filter(|text| text != "pending")
    })
    .await;
    // A refused handshake is all a page learns: 1006, no status.
    assert_eq!(
        result, "closed 1006",
        "the foreign page's WebSocket must never open"
    );

    browser.goto(&format!("{foreign}/csrf")).await;
    let logout = server.url("/logout");
    // (A logout that went through would answer 204, which leaves the
    // browser on the foreign page.)
    eventually("the refused form post to land on /logout", || async {
        let url = browser.client.current_url().await.ok()?;
        (url.as_str() == logout).then_some(())
    })
    .await;
    let body = browser.body_text().await;
    assert_eq!(browser.response_status().await, 403, "{body}");
    assert!(body.contains("invalid_origin"), "{body}");
    assert!(
        body.contains("this origin may not use the session cookie"),
        "{body}"
    );

    // Still logged in: the cookie is still there and still good.
    browser.goto(&server.url("/me")).await;
    let me = browser.body_text().await;
    assert_eq!(browser.response_status().await, 200, "{me}");
    assert!(me.contains(r#""username":"full""#), "{me}");

    // Control: the app's own page logs out, and then the cookie is gone.
    browser.goto(&format!("{}/", server.base)).await;
    browser.click("#logout").await;
    eventually("the page to log out", || async {
        let who = browser.client.find(Locator::Id("who")).await.ok()?;
        (who.text().await.ok()? == "logged out").then_some(())
    })
    .await;
    browser.goto(&server.url("/me")).await;
    assert_eq!(browser.response_status().await, 401);
    browser.close().await;

    // The server saw the cookie on the foreign page's upgrade and refused it
    // for its Origin (without the cookie it would have been a silent 401),
    // then refused the foreign logout; the socket handler ran only for the
    // app's own page.
    let stderr = server.stop();
    let refusals: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("cookie request from a foreign origin refused"))
        .collect();
    assert_eq!(refusals.len(), 2, "the upgrade and the logout: {stderr}");
    assert!(
        refusals
            .iter()
            .all(|line| line.contains("origin_not_allowed")),
        "{stderr}"
    );
    assert_eq!(stderr.matches(" joined").count(), 1, "{stderr}");
}
