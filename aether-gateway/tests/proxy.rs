//! The gateway behind a reverse proxy under a path, as most sites serve
//! it: Debian's nginx terminates TLS at `https://127.0.0.1:<port>/aether/`
//! and passes what is under it to the gateway, with the WebSocket upgrade
//! headers. The dashboard's links, the pages, their scripts and the bridge
//! address they open follow the path; writes go both ways through it.
//!
//! Needs Debian's `nginx` (nginx-light) and `chromium`; without them the
//! test says so and passes.

mod support;

use std::{path::Path, process::Stdio, time::Duration};

use aether_gateway::GatewayConfig;
use serde_json::json;
use support::{cdp::Browser, config};

const TOKEN: &str = "a-token-of-the-proxy-test-1234";
const NGINX: &str = "/usr/sbin/nginx";

/// nginx's settings: TLS on `port`, `/aether/` passed to `gateway`.
fn nginx_conf(dir: &Path, port: u16, gateway: std::net::SocketAddr) -> String {
    let d = dir.display();
    format!(
        "daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{}}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' close;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        location /aether/ {{
            proxy_pass http://{gateway}/;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_read_timeout 1h;
        }}
    }}
}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_behind_a_proxy_under_a_path_follow_it() {
    if !Path::new(NGINX).exists() {
        eprintln!(
            "note: {NGINX} is not installed, so no proxy was run (Debian: apt-get install -y nginx-light)"
        );
        return;
    }
    let Some(browser) = Browser::launch().await else {
        return;
    };
    browser
        .call(
            "Security.setIgnoreCertificateErrors",
            json!({"ignore": true}),
            None,
        )
        .await;
    let port = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().port()
    };
    let public = format!("https://127.0.0.1:{port}/aether/");
    let (_aether, gateway, service) = support::board(
        TOKEN,
        GatewayConfig {
            public_url: Some(public.clone()),
            ..config()
        },
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir.path(), port, gateway.addr())).unwrap();
    let mut nginx = tokio::process::Command::new(NGINX)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("nginx starts");
    support::eventually("nginx listens", Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(drop)
    })
    .await;

    // The dashboard, through the proxy: its links are under the path.
    let dashboard = browser.open(&public).await;
    dashboard
        .wait_for(
            "the dashboard's board link",
            "document.getElementById('board-link') !== null",
            10,
        )
        .await;
    let link = dashboard
        .eval("document.getElementById('board-link').href")
        .await;
    assert_eq!(link, json!(format!("{public}board")));

    // The board, through the proxy: live over wss:// under the path.
    let page = browser.open(&format!("{public}board#token={TOKEN}")).await;
    page.wait_for(
        "the board is live through the proxy",
        "board.client.status === 'live'",
        20,
    )
    .await;
    assert_eq!(
        page.eval("board.client.url").await,
        json!(format!("wss://127.0.0.1:{port}/aether/bridge/board"))
    );
    page.eval("board.client.set('item/proxied', {text: 'through nginx', done: false}); true")
        .await;
    support::eventually(
        "the service has the page's write",
        Duration::from_secs(10),
        || {
            let got = service.get("item/proxied").is_some();
            async move { got.then_some(()) }
        },
    )
    .await;
    service
        .set_json(
            "item/served",
            &json!({"text": "from the service", "done": false}),
        )
        .await
        .unwrap();
    page.wait_for(
        "the page has the service's write",
        "board.client.get('item/served')?.text === 'from the service'",
        10,
    )
    .await;
    nginx.start_kill().unwrap();
    nginx.wait().await.unwrap();
}
