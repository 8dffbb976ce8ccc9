//! Reconfiguration over TCP (§7): members added and replaced with their
//! addresses, and clients that follow the new epoch from the `StartEpoch`
//! notices.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vr_core::Status;

use crate::harness::{lock, shared, test_config, wait_until, within, Cluster};
use crate::Runtime;

/// Three replicas grow to five (two joiners) and shrink to three (two
/// retire) while a client keeps writing (§7.1); the client, which knows
/// only the first three addresses, follows both epochs (§7.2), and every
/// member of the last epoch holds every acknowledged write.
pub fn grow_to_five_then_shrink_while_a_client_writes<R: Runtime>() {
    let _shared = shared();
    let cluster = Cluster::<R>::start_with(test_config(21, 3), 5, |_| {});
    let addresses = cluster.addresses.clone();

    // The writer knows only the first three replicas.
    let mut writer = cluster.client(7001);
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Until told to stop, and then a few more: those start after
            // the last reconfiguration, so the writer must follow it.
            let mut k = 0u32;
            let mut after_stop = 0;
            while after_stop < 3 || k < 10 {
                if stop.load(Ordering::Relaxed) {
                    after_stop += 1;
                }
                let op = format!("op {k}").into_bytes();
                assert_eq!(writer.submit(&op), Ok(op.clone()), "retries forever");
                lock(&acknowledged).push(op);
                k += 1;
            }
            writer.epoch()
        })
    };
    wait_until(Duration::from_secs(5), "writes in epoch 0", || {
        lock(&acknowledged).len() >= 5
    });

    let mut admin = cluster.client(7002);
    assert_eq!(
        admin.reconfigure(members(&[0, 1, 2, 3, 4]), addresses.clone()),
        Ok(1),
        "grows"
    );
    wait_until(
        Duration::from_secs(5),
        "the joiners caught up in epoch 1",
        || {
            (3..5).all(|i| {
                let node = cluster.stats(i).node;
                node.epoch == 1 && node.status == Some(Status::Normal)
            })
        },
    );
    // The admin learns epoch 1 from its next request's StartEpoch notice: a
    // reconfiguration must name the current epoch.
    assert_eq!(admin.submit(b"admin"), Ok(b"admin".to_vec()));
    assert_eq!(admin.epoch().0, 1);
    let kept = vec![addresses[0], addresses[1], addresses[3]];
    assert_eq!(
        admin.reconfigure(members(&[0, 1, 3]), kept),
        Ok(2),
        "shrinks"
    );

    stop.store(true, Ordering::Relaxed);
    let writer_epoch = within(
        Duration::from_secs(10),
        "the writer finishes",
        move || match worker.join() {
            Ok(epoch) => epoch,
            Err(panic) => std::panic::resume_unwind(panic),
        },
    );
    assert_eq!(
        writer_epoch,
        (2, members(&[0, 1, 3])),
        "the writer followed both epochs"
    );

    let acknowledged = lock(&acknowledged).clone();
    for member in [0usize, 1, 3] {
        wait_until(
            Duration::from_secs(5),
            &format!("member {member} holds every acknowledged write"),
            || {
                let log = cluster.executed(member);
                acknowledged.iter().all(|op| log.contains(op))
            },
        );
    }
    assert_eq!(
        cluster.stats(3).node.epoch,
        2,
        "joiner 3 is a member of epoch 2"
    );
    for retired in [2usize, 4] {
        let node = cluster.stats(retired).node;
        assert_eq!(
            (node.epoch, node.status),
            (2, Some(Status::Retired)),
            "member {retired} retired when epoch 2 began"
        );
    }
}

/// A client that knows only the first three addresses follows a
/// reconfiguration whose first primary is a member it has never heard of:
/// it can reach it only at the address the `StartEpoch` notice carried
/// (§7.2).
pub fn a_client_reaches_a_new_primary_at_the_address_the_notice_carried<R: Runtime>() {
    let _shared = shared();
    let cluster = Cluster::<R>::start_with(test_config(22, 3), 4, |_| {});
    let addresses = &cluster.addresses;
    let mut client = cluster.client(7003);
    assert_eq!(client.submit(b"before"), Ok(b"before".to_vec()));
    // Member 3 first: the primary of view 0 in epoch 1.
    let at = vec![addresses[3], addresses[0], addresses[1]];
    assert_eq!(client.reconfigure(members(&[3, 0, 1]), at), Ok(1));
    // Replica 2 retired: the client's request goes to a retired replica or
    // a member of epoch 1, either of which tells it of the new epoch.
    assert_eq!(client.submit(b"after"), Ok(b"after".to_vec()));
    assert_eq!(client.epoch(), (1, members(&[3, 0, 1])));
    // Only the primary answers a write, and member 3 led epoch 1 throughout.
    let primary = cluster.stats(3).node;
    assert_eq!(
        (primary.epoch, primary.view, primary.status),
        (1, 0, Some(Status::Normal))
    );
    assert!(cluster.executed(3).contains(&b"after".to_vec()));
}

/// Member ids from their numbers.
fn members(ids: &[u8]) -> Vec<vr_core::MemberId> {
    ids.iter().map(|&m| vr_core::MemberId(m)).collect()
}
