//! A primary stopped mid-workload: the survivors change view and keep every
//! acknowledged operation, executed once (§4.1, §4.2).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, init_tracing, test_config, Cluster};
use vr_core::Status;

const CLIENTS: u128 = 4;
const OPS_PER_CLIENT: usize = 40;

#[tokio::test]
async fn acknowledged_ops_survive_the_primary_stopping() {
    init_tracing();
    let mut cluster = Cluster::start(test_config(11, 3));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let progress = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for c in 0..CLIENTS {
        let mut client = cluster.client(1000 + c).await;
        let acknowledged = acknowledged.clone();
        let progress = progress.clone();
        workers.push(tokio::spawn(async move {
            for k in 0..OPS_PER_CLIENT {
                let op = format!("client {c} op {k}").into_bytes();
                // request_attempts_max is 0: the client retries until it
                // gets an answer; the test's timeout bounds the wait.
                let result = client.submit(op.clone()).await.expect("retries forever");
                assert_eq!(result, op, "the service echoes the operation");
                acknowledged.lock().unwrap().push(op);
                progress.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let total = CLIENTS as usize * OPS_PER_CLIENT;
    assert!(
        eventually(Duration::from_secs(5), || progress.load(Ordering::Relaxed)
            >= total / 4)
        .await,
        "the workload makes progress in view 0"
    );
    let before = cluster.replica(0).stats();
    assert_eq!(
        (before.node.view, before.node.status),
        (0, Some(Status::Normal))
    );
    assert!(before.node.commit_number > 0);
    cluster.replicas[0].take().unwrap().stop();

    let workload = async {
        for worker in workers {
            worker.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), workload)
        .await
        .expect("the workload finishes after the view change");
    assert_eq!(acknowledged.lock().unwrap().len(), total);

    for i in 1..3 {
        let in_new_view = eventually(Duration::from_secs(2), || {
            let stats = cluster.replica(i).stats();
            stats.node.view >= 1 && stats.node.status == Some(Status::Normal)
        })
        .await;
        assert!(
            in_new_view,
            "replica {i} is in normal status in a later view"
        );
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    for i in 1..3 {
        let holds_all = eventually(Duration::from_secs(2), || {
            let executed = cluster.executed(i);
            acknowledged.iter().all(|op| executed.contains(op))
        })
        .await;
        assert!(holds_all, "replica {i} executed every acknowledged op");
    }
    for i in 0..3 {
        let mut executed = cluster.executed(i);
        let len = executed.len();
        executed.sort();
        executed.dedup();
        assert_eq!(executed.len(), len, "replica {i} executed an op twice");
    }
    // Agreement: the survivors executed the same sequence (one may lag).
    let (a, b) = (cluster.executed(1), cluster.executed(2));
    let common = a.len().min(b.len());
    assert_eq!(
        a[..common],
        b[..common],
        "survivors executed in the same order"
    );

    let stats = cluster.replica(1).stats();
    assert!(stats.node.frames_in > 0 && stats.connections_accepted > 0);
    assert!(
        stats
            .inbound
            .iter()
            .any(|c| c.frames_in > 0 && c.bytes_in > 0),
        "traffic is counted per connection"
    );
    assert_eq!(stats.connections_closed_bad_input, 0);
}
