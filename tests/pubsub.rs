//! Smoke: publish/subscribe in process and across two nodes.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use colony::{Context, Error, Event, Subscriber};
use colony_tests::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Tick {
    n: u64,
}
impl Event for Tick {}

struct Sink(Arc<AtomicU64>);
impl Subscriber<Tick> for Sink {
    async fn handle(&mut self, _ev: Tick, _ctx: &Context) -> Result<(), Error> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let b = node_builder(&ca, "b")
        .seeds([a.addr().to_string()])
        .start()
        .await
        .unwrap();
    let local = Arc::new(AtomicU64::new(0));
    let remote = Arc::new(AtomicU64::new(0));
    let l = local.clone();
    a.service("la")
        .subscribe::<Tick>("t.*")
        .spawn(move || Sink(l.clone()))
        .await
        .unwrap();
    let r = remote.clone();
    b.service("rb")
        .subscribe::<Tick>("t.>")
        .at_least_once()
        .spawn(move || Sink(r.clone()))
        .await
        .unwrap();
    converge(&a, "b's subscription", |reg| reg.instances("rb").len() == 1).await;
    let t0 = std::time::Instant::now();
    for n in 0..10_000 {
        let p = a.client().publish("t.x", Tick { n }).await.unwrap();
        assert_eq!(p.nodes, 2);
    }
    a.client().flush(Duration::from_secs(10)).await.unwrap();
    wait_until(
        || local.load(Ordering::Relaxed) == 10_000 && remote.load(Ordering::Relaxed) == 10_000,
        "all delivered",
    )
    .await;
    eprintln!("10k in {:?}", t0.elapsed());
    let p = a
        .client()
        .publish("nobody.here", Tick { n: 0 })
        .await
        .unwrap();
    assert_eq!(p.nodes, 0);
    let e = a
        .client()
        .publish("bad subject", Tick { n: 0 })
        .await
        .unwrap_err();
    eprintln!("{e}");
    eprintln!("{:?}", a.health().broker);
    eprintln!("{:?}", b.health().services[0].subscriptions);
}
