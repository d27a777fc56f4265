//! A hundred provision sagas at once on one token limited to 250 requests a minute (time
//! scaled 60×, so a minute lasts a second): all complete, the client's limiter keeps the
//! simulator from refusing requests, and waits poll no more than twice beyond the minimum.

use std::time::Duration;

use berth_tests::cloud::crowd::{describe, provision_crowd, scale_config, scaled_sim};
use berth_tests::dosim::DoSim;
use berth_tests::{TestCoordinator, TestDb};

const SCALE: f64 = 60.0;
const SAGAS: usize = 100;

#[tokio::test]
async fn a_hundred_provisions_share_a_rate_limited_token() {
    for db in TestDb::each().await {
        let sim = DoSim::start(scaled_sim(SCALE)).await.unwrap();
        let c = TestCoordinator::start_with_digitalocean_and(&db, &sim, |config| {
            scale_config(config, SCALE, SAGAS);
        })
        .await;
        let report = provision_crowd(&c, &sim, SAGAS, Duration::from_secs(120)).await;
        let text = describe(&report);
        eprintln!("{:?}:\n{text}", db.kind);
        assert_eq!(report.completed, SAGAS, "{text}");
        assert_eq!(sim.droplets().len(), SAGAS);
        assert!(sim.droplets().iter().all(|d| d.public_ipv4.is_some()));
        assert_eq!(
            report.calls["droplets_create"], SAGAS,
            "one create per saga: {text}"
        );
        // The client stays under the limit: a refusal at most at the edge of a window.
        assert!(report.refused <= 2, "{text}");
        assert!(
            report.mean_polls() <= (report.min_polls + 2) as f64,
            "waits poll at most twice beyond the minimum on average: {text}"
        );
        sim.assert_no_violations();
    }
}
