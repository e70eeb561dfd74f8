//! A Redis Cluster that speaks only TLS (ports 7300–7305, its own CA,
//! started and stopped here): the store connects through `rediss://`
//! seeds, and its groups go on connections of its own to each master that
//! speak TLS too and check the masters' certificate, as the Cluster
//! client's do. If those failed, every command would go on its own
//! through the client, which the test would see.

use std::time::Duration;

use axum_typed_session::RedisStore;
use conformance_tests::{
    Client, OwnCluster,
    counter::{Visit, app},
};
use http::StatusCode;

const CLUSTER: OwnCluster = OwnCluster {
    base: 7300,
    tls: true,
    password: None,
};
const CLIENTS: usize = 16;
const VISITS: i64 = 20;

#[test]
fn a_tls_cluster_is_served_in_groups() {
    if !CLUSTER.start_for("a_tls_cluster_is_served_in_groups") {
        return;
    }
    // The client trusts the test's CA through rustls-native-certs, which
    // reads SSL_CERT_FILE.
    // SAFETY: the only test of this binary sets it before it starts a
    // thread of its own, and nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("SSL_CERT_FILE", CLUSTER.ca_file()) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let stats = runtime.block_on(async {
        let plain = RedisStore::<Visit>::builder()
            .timeout(Duration::from_millis(500))
            .connect_cluster(
                (CLUSTER.base..CLUSTER.base + 3).map(|port| format!("redis://127.0.0.1:{port}")),
            )
            .await;
        assert!(plain.is_err(), "a plain-text client is refused");
        let store = RedisStore::<Visit>::connect_cluster(CLUSTER.nodes())
            .await
            .expect("connect over TLS");
        let app = app(store.clone());
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let app = app.clone();
                tokio::spawn(async move {
                    let mut client = Client::new(app, "session");
                    for visit in 1..=VISITS {
                        let reply = client.get("/visit").await;
                        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
                        assert_eq!(reply.body, visit.to_string());
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
        store.pipeline_stats()
    });
    let _ = CLUSTER.run("stop");
    eprintln!("TLS Cluster: {stats:?}");
    assert!(
        stats.grouped >= CLIENTS as u64 * (2 * VISITS as u64 - 1),
        "every load and write went in a group: {stats:?}"
    );
    assert_eq!(
        stats.alone, 1,
        "only the slot map went on its own: {stats:?}"
    );
}
