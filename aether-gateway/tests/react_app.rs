//! The React example (`examples/web-react`) as a front-end developer runs
//! it: built with the npm registry's tools (esbuild bundles React and the
//! `aether-bridge` package from its path), served by a host of its own,
//! two tabs in headless Chromium on the gateway program over NATS, beside a
//! Rust replica. Clicks and todos sync between the tabs; concurrent clicks
//! in both all count; with the gateway killed, a reload renders from the
//! cache and edits made offline merge once it is back. The app rendered on
//! a server (Node, as Next.js renders) hydrates over a warm cache with no
//! mismatch.
//!
//! Needs Debian's `chromium` and `npm`; without them the test says so and
//! passes.

mod support;

use std::{net::SocketAddr, path::PathBuf, process::Command, time::Duration};

use axum::{Router, http::header, routing::get};
use serde_json::{Value, json};
use support::cdp::Browser;

const TOKEN: &str = "a-token-of-the-react-test-77";

fn example_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/web-react"
    ))
}

/// Builds the example (`npm ci`, `npm run build`) unless its bundle is newer
/// than its sources and the client's; false if npm is not there. One test
/// process at a time (a file lock): two `npm ci` in one folder break each
/// other.
fn build_example() -> bool {
    let lock = std::fs::File::create(std::env::temp_dir().join("aether-web-react-build.lock"))
        .expect("the build lock");
    lock.lock().expect("the build lock taken");
    let dir = example_dir();
    let web = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/web"));
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let bundle = [dir.join("dist/app.js"), dir.join("dist/server.mjs")]
        .into_iter()
        .map(modified)
        .min()
        .flatten();
    let modules = std::fs::read_dir(web.join("aether"))
        .expect("the client's modules")
        .map(|entry| entry.expect("a module").path());
    let sources = [
        dir.join("src/main.jsx"),
        dir.join("src/app.jsx"),
        dir.join("src/server.jsx"),
        dir.join("package.json"),
        dir.join("package-lock.json"),
        web.join("aether.js"),
        web.join("react.js"),
    ]
    .into_iter()
    .chain(modules);
    if bundle.is_some_and(|b| {
        sources
            .into_iter()
            .all(|s| modified(s).is_some_and(|s| s <= b))
    }) {
        return true;
    }
    let npm = |args: &[&str]| {
        Command::new("npm")
            .args(args)
            .current_dir(&dir)
            .status()
            .map(|s| s.success())
    };
    match npm(&["ci", "--no-audit", "--no-fund", "--silent"]) {
        Err(_) => {
            eprintln!("skipped: no npm here (install Node.js 18 or newer)");
            return false;
        }
        Ok(ok) => assert!(ok, "npm ci in examples/web-react failed"),
    }
    assert!(
        npm(&["run", "build", "--silent"]).unwrap(),
        "npm run build in examples/web-react failed"
    );
    true
}

/// Serves the example's page and bundle on a loopback port, and at
/// `/ssr.html` the page with `rendered` (a server's HTML of the app) in it.
async fn app_host_with(rendered: &str) -> SocketAddr {
    let dir = example_dir();
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let ssr = html.replace(
        r#"<div id="root"></div>"#,
        &format!(r#"<div id="root">{rendered}</div>"#),
    );
    assert!(rendered.is_empty() || ssr != html, "the page has its root");
    let bundle = std::fs::read_to_string(dir.join("dist/app.js")).unwrap();
    let app = Router::new()
        .route(
            "/index.html",
            get(move || async move { axum::response::Html(html) }),
        )
        .route(
            "/ssr.html",
            get(move || async move { axum::response::Html(ssr) }),
        )
        .route(
            "/dist/app.js",
            get(move || async move { ([(header::CONTENT_TYPE, "text/javascript")], bundle) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn app_host() -> SocketAddr {
    app_host_with("").await
}

/// The app rendered by Node from the example's server bundle, as a
/// server-rendering framework would: the HTML, and how long Node took to
/// render it and exit.
fn server_render(port: u16) -> (String, Duration) {
    let script = format!(
        "const {{ render }} = await import('./dist/server.mjs');          process.stdout.write(render({{ url: 'ws://127.0.0.1:{port}/bridge/react-demo', token: '{TOKEN}' }}));"
    );
    let start = std::time::Instant::now();
    let out = Command::new("timeout")
        .args(["20", "node", "--input-type=module", "-e", &script])
        .current_dir(example_dir())
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "the server render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8(out.stdout).unwrap(), start.elapsed())
}

/// Waits (up to 15 s) until `check` holds.
async fn settle(what: &str, mut check: impl FnMut() -> bool) {
    support::eventually(what, Duration::from_secs(15), || {
        let ok = check();
        async move { ok.then_some(()) }
    })
    .await
}

const TOTAL: &str = "Number(document.getElementById('increment')?.dataset.total)";

/// Clicks the counter `n` times and adds a todo through the page's form.
fn clicks(n: u32) -> String {
    format!("for (let i = 0; i < {n}; i++) document.getElementById('increment').click(); true")
}

fn add_todo(text: &str) -> String {
    format!(
        "(() => {{ const input = document.getElementById('new-todo'); \
         const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set; \
         set.call(input, {text:?}); input.dispatchEvent(new Event('input', {{bubbles: true}})); \
         return new Promise((resolve) => setTimeout(() => {{ \
         input.form.requestSubmit(); resolve(true); }}, 50)); }})()"
    )
}

fn shows_todo(text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#todos li span')].some((s) => s.textContent === {text:?})"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_of_the_react_example_sync_and_work_offline() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    if !build_example() {
        return;
    }
    let bus = support::programs::BridgeBus::start("react-demo").await;
    let (service, port) = (&bus.service, bus.port);
    let mut gateway = bus.gateway(&["react-demo"], TOKEN).await;
    let app = app_host().await;
    let url = format!("http://{app}/index.html#token={TOKEN}&gateway=ws://127.0.0.1:{port}");
    let a = browser.open(&url).await;
    let b = browser.open(&url).await;
    for (name, page) in [("a", &a), ("b", &b)] {
        page.wait_for(
            &format!("tab {name} is live"),
            "document.getElementById('status')?.dataset.status === 'live'",
            20,
        )
        .await;
    }

    // A click and a todo in one tab show in the other.
    a.eval(&clicks(1)).await;
    b.wait_for("tab b counts a's click", &format!("{TOTAL} === 1"), 5)
        .await;
    a.eval(&add_todo("milk")).await;
    b.wait_for("tab b shows a's todo", &shows_todo("milk"), 5)
        .await;

    // Clicks in both tabs at once all count (a key per tab), and todos
    // added in both at once are both kept (a key per todo).
    let (five, seven) = (clicks(5), clicks(7));
    tokio::join!(a.eval(&five), b.eval(&seven));
    let (eggs, bread) = (add_todo("eggs"), add_todo("bread"));
    tokio::join!(a.eval(&eggs), b.eval(&bread));
    for (name, page) in [("a", &a), ("b", &b)] {
        page.wait_for(
            &format!("tab {name} counts every click"),
            &format!("{TOTAL} === 13"),
            5,
        )
        .await;
        page.wait_for(
            &format!("tab {name} has every todo"),
            "document.getElementById('todos').dataset.count === '3'",
            5,
        )
        .await;
    }
    settle("the service has the todos and the clicks", || {
        let entries = service.entries();
        let todos = entries
            .iter()
            .filter(|(k, _)| k.starts_with("todo/"))
            .count();
        let clicks: u64 = entries
            .iter()
            .filter(|(k, _)| k.starts_with("clicks/"))
            .filter_map(|(_, v)| serde_json::from_slice::<u64>(v).ok())
            .sum();
        todos == 3 && clicks == 13
    })
    .await;

    // kill -9 of the gateway; tab a reloads and renders from its cache.
    gateway.start_kill().unwrap();
    gateway.wait().await.unwrap();
    a.wait_for(
        "tab a sees the gateway gone",
        "document.getElementById('status')?.dataset.status === 'offline'",
        10,
    )
    .await;
    a.reload().await;
    a.wait_for(
        "the reloaded tab renders the map from its cache",
        &format!(
            "{TOTAL} === 13 && document.getElementById('todos').dataset.count === '3' \
             && document.getElementById('status').dataset.status !== 'live'"
        ),
        10,
    )
    .await;
    // Offline: a todo ticked, one added, two clicks; meanwhile a service
    // adds one.
    a.eval("document.querySelector('#todos li input[type=checkbox]').click(); true")
        .await;
    a.eval(&add_todo("offline butter")).await;
    a.eval(&clicks(2)).await;
    a.wait_for(
        "tab a shows its offline edits",
        &format!("{TOTAL} === 15"),
        5,
    )
    .await;
    service
        .set_json(
            "todo/zz-service",
            &json!({"text": "from the service", "done": false}),
        )
        .await
        .unwrap();

    // The gateway comes back on its port: both tabs reconnect by
    // themselves, the offline edits merge, everyone has everything.
    let mut gateway = bus.gateway(&["react-demo"], TOKEN).await;
    for (name, page) in [("a", &a), ("b", &b)] {
        page.wait_for(
            &format!("tab {name} is live again"),
            "document.getElementById('status')?.dataset.status === 'live'",
            30,
        )
        .await;
        page.wait_for(
            &format!("tab {name} has the offline edits and the service's todo"),
            &format!(
                "{TOTAL} === 15 && {} && {} \
                 && document.querySelectorAll('#todos li[data-done=\"true\"]').length === 1",
                shows_todo("offline butter"),
                shows_todo("from the service")
            ),
            15,
        )
        .await;
    }
    settle("the service has the offline edits", || {
        service.entries().iter().any(|(k, v)| {
            k.starts_with("todo/")
                && serde_json::from_slice::<Value>(v)
                    .is_ok_and(|t| t["text"] == json!("offline butter"))
        })
    })
    .await;
    gateway.start_kill().unwrap();
    let _ = gateway.wait().await;
    service.close().await;
}

/// A page rendered on a server (Node, the example's server bundle) and
/// hydrated in a browser whose cache holds the map: the server renders the
/// fallbacks and opens no connection (Node exits at once), the browser's first render matches the server's HTML
/// (no recoverable error), then the cache and the bridge take over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_rendered_page_hydrates_over_a_warm_cache() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    if !build_example() {
        return;
    }
    let bus = support::programs::BridgeBus::start("react-demo").await;
    let port = bus.port;
    let _gateway = bus.gateway(&["react-demo"], TOKEN).await;
    let (rendered, took) = server_render(port);
    assert!(
        took < Duration::from_secs(10),
        "Node rendered and exited in {took:?}"
    );
    assert!(
        rendered.contains(r#"data-status="connecting""#) && rendered.contains(r#"data-count="0""#),
        "the server renders the fallbacks: {rendered}"
    );
    let app = app_host_with(&rendered).await;
    let fragment = format!("#token={TOKEN}&gateway=ws://127.0.0.1:{port}");

    // A first visit fills the cache: two clicks and a todo.
    let first = browser
        .open(&format!("http://{app}/index.html{fragment}"))
        .await;
    first
        .wait_for(
            "the first visit is live",
            "document.getElementById('status')?.dataset.status === 'live'",
            20,
        )
        .await;
    first.eval(&clicks(2)).await;
    first.eval(&add_todo("milk")).await;
    first
        .wait_for("the first visit shows its edits", &shows_todo("milk"), 5)
        .await;
    first
        .eval("demo.client.waitForPendingWrites().then(() => true)")
        .await;

    // The returning visit, over the server's HTML: it hydrates without a
    // mismatch, then shows what the cache and the bridge hold.
    let back = browser
        .open(&format!("http://{app}/ssr.html{fragment}"))
        .await;
    back.wait_for(
        "the returning visit shows the map",
        &format!("{TOTAL} === 2 && {}", shows_todo("milk")),
        15,
    )
    .await;
    back.wait_for(
        "the returning visit is live",
        "document.getElementById('status')?.dataset.status === 'live'",
        20,
    )
    .await;
    let errors = back.eval("demo.recoverableErrors").await;
    assert_eq!(errors, json!([]), "hydration found no mismatch");
    // It is the server's HTML hydrated, not a page rendered anew.
    assert_eq!(back.eval("demo.hydrated").await, json!(true));
}
