//! End to end: headless Chromium opens the live dashboard while waves flow,
//! and the page it renders shows them: the page received server-sent
//! events and drew them.
//!
//! Needs Debian's `chromium` (`apt-get install -y chromium`); without it
//! the test says so and passes.

mod support;

use std::{process::Stdio, time::Duration};

use aether_core::{Aether, Phase, Vibrator, Wave};
use support::{config, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_sees_waves_arrive_on_the_dashboard() {
    let profile = tempfile::tempdir().unwrap();
    let Some(mut chromium) = support::cdp::chromium(profile.path()) else {
        return;
    };
    let aether = Aether::default();
    let gateway = start(&aether, config()).await;
    let mut inventory = Vibrator::create("inventory", &aether).await.unwrap();
    inventory.resonate_on("orders.*").await.unwrap();
    let shop = Vibrator::create("shop", &aether).await.unwrap();
    let emitting = tokio::spawn(async move {
        for n in 0..3000u32 {
            let phase = if n % 2 == 0 {
                Phase::ASSERT
            } else {
                Phase::RETRACT
            };
            // Markup in a key is shown as text, never run.
            let wave = Wave::builder("orders.created")
                .correlation_key(format!("<i>order</i>-{}", n / 2))
                .phase(phase)
                .json(&n)
                .build()
                .unwrap();
            shop.emit(wave).await.unwrap();
            while inventory.try_receive().is_some() {}
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    // The page stops listening after 4 snapshots (`?snapshots=4`): a page
    // with an open stream never settles, and Chromium would not dump it.
    let url = format!("http://{}/?snapshots=4", gateway.addr());
    let run = chromium
        .args(["--virtual-time-budget=3000", "--dump-dom", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("chromium dumps the page within 60 s")
        .expect("chromium runs");
    emitting.abort();
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && !dom.is_empty(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let attribute = |name: &str| -> Option<String> {
        let start = dom.find(&format!("{name}=\""))? + name.len() + 2;
        Some(dom[start..start + dom[start..].find('"')?].to_string())
    };
    assert_eq!(attribute("data-snapshots").as_deref(), Some("4"), "{dom}");
    assert_eq!(attribute("data-stream").as_deref(), Some("closed"), "{dom}");
    let row = "<tr data-family=\"orders.created\" data-waves=\"";
    let start = dom
        .find(row)
        .unwrap_or_else(|| panic!("no orders row: {dom}"))
        + row.len();
    let waves: u64 = dom[start..start + dom[start..].find('"').unwrap()]
        .parse()
        .unwrap();
    assert!(waves > 0, "{dom}");
    // The resonance graph and the interference list were drawn too.
    assert!(dom.contains("<circle"), "no graph: {dom}");
    assert!(dom.contains("badge cancellation"), "no event: {dom}");
    // Each event with what it means and its waves, phases and sources.
    assert!(dom.contains("conflicting messages"), "no diagnosis: {dom}");
    assert!(
        dom.contains("<ol class=\"involved\"><li>+"),
        "no waves: {dom}"
    );
    assert!(
        dom.contains("shop · retract") || dom.contains("shop \u{b7} retract"),
        "{dom}"
    );
    assert!(
        dom.contains("&lt;i&gt;order&lt;/i&gt;"),
        "the key as text: {dom}"
    );
    assert!(
        !dom.contains("<i>order</i>"),
        "markup from the bus ran: {dom}"
    );
    gateway.stop().await.unwrap();
}
