//! Reconfiguration over TCP (§7): three replicas grow to five (two joiners)
//! and shrink to three (two retire) while a client keeps writing; the
//! client, which knows only the first three addresses, follows the epochs
//! from the `StartEpoch` notices.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{init_tracing, wait_until, Executed, Recorder};
use vr_core::{ClientConfig, Config, Status};
use vr_mio::{start_replica_with_listener, Client, ReplicaOptions};

#[test]
fn grow_to_five_then_shrink_while_a_client_writes() {
    init_tracing();
    let config = Config::new(21, 3);
    let (addresses, replicas, executed) = start_members(&config, 5);

    // The writer knows only the first three replicas.
    let mut writer = Client::connect(
        addresses[..3].to_vec(),
        ClientConfig::new(&config, 7001),
        config.cluster,
    )
    .unwrap();
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
                let result = writer.submit(op.clone()).expect("retries forever");
                assert_eq!(result, op);
                acknowledged.lock().unwrap().push(op);
                k += 1;
            }
            writer
        })
    };
    wait_until(Duration::from_secs(3), "writes in epoch 0", || {
        acknowledged.lock().unwrap().len() >= 5
    });

    let mut admin = Client::connect(
        addresses[..3].to_vec(),
        ClientConfig::new(&config, 7002),
        config.cluster,
    )
    .unwrap();
    assert_eq!(
        admin
            .reconfigure(
                vec![
                    vr_core::MemberId(0),
                    vr_core::MemberId(1),
                    vr_core::MemberId(2),
                    vr_core::MemberId(3),
                    vr_core::MemberId(4)
                ],
                addresses.clone()
            )
            .unwrap(),
        1
    );
    wait_until(Duration::from_secs(5), "the joiners in epoch 1", || {
        replicas[3..].iter().all(|r| {
            let node = r.stats().node;
            node.epoch == 1 && node.status == Some(Status::Normal)
        })
    });
    // The admin learns epoch 1 from its next request's StartEpoch notice: a
    // reconfiguration must name the current epoch.
    assert_eq!(admin.submit(b"admin".to_vec()).unwrap(), b"admin");
    assert_eq!(admin.epoch(), 1);
    let kept = vec![addresses[0], addresses[1], addresses[3]];
    assert_eq!(
        admin
            .reconfigure(
                vec![
                    vr_core::MemberId(0),
                    vr_core::MemberId(1),
                    vr_core::MemberId(3)
                ],
                kept
            )
            .unwrap(),
        2
    );

    stop.store(true, Ordering::Relaxed);
    let writer = worker.join().expect("the writer finishes");
    assert_eq!(writer.epoch(), 2, "the writer followed both epochs");
    assert_eq!(
        writer.members(),
        vec![
            vr_core::MemberId(0),
            vr_core::MemberId(1),
            vr_core::MemberId(3)
        ]
    );

    let acknowledged = acknowledged.lock().unwrap().clone();
    for member in [0usize, 1, 3] {
        let log = &executed[member];
        wait_until(Duration::from_secs(3), "every acknowledged write", || {
            let log = log.lock().unwrap();
            acknowledged.iter().all(|op| log.contains(op))
        });
    }
    assert_eq!(
        replicas[3].stats().node.epoch,
        2,
        "joiner 3 is a member of epoch 2"
    );
    for retired in [2usize, 4] {
        let stats = replicas[retired].stats().node;
        assert_eq!(
            (stats.epoch, stats.status),
            (2, Some(Status::Retired)),
            "member {retired} retired when epoch 2 began"
        );
    }
    for replica in replicas {
        replica.stop();
    }
}

/// A client that knows only the first three addresses follows a
/// reconfiguration whose first primary is a member it has never heard of:
/// it can reach it only at the address the `StartEpoch` notice carried.
#[test]
fn a_client_reaches_a_new_primary_at_the_address_the_notice_carried() {
    init_tracing();
    let config = Config::new(22, 3);
    let (addresses, replicas, executed) = start_members(&config, 4);
    let mut client = Client::connect(
        addresses[..3].to_vec(),
        ClientConfig::new(&config, 7003),
        config.cluster,
    )
    .unwrap();
    assert_eq!(
        client.submit(b"before".to_vec()).unwrap(),
        b"before".to_vec()
    );
    // Member 3 first: the primary of view 0 in epoch 1.
    let at = vec![addresses[3], addresses[0], addresses[1]];
    assert_eq!(
        client
            .reconfigure(
                vec![
                    vr_core::MemberId(3),
                    vr_core::MemberId(0),
                    vr_core::MemberId(1)
                ],
                at
            )
            .unwrap(),
        1
    );
    // Replica 2 retired: the client's request goes to a retired replica or
    // a member of epoch 1, either of which tells it of the new epoch.
    assert_eq!(client.submit(b"after".to_vec()).unwrap(), b"after".to_vec());
    assert_eq!(
        (client.epoch(), client.members()),
        (
            1,
            vec![
                vr_core::MemberId(3),
                vr_core::MemberId(0),
                vr_core::MemberId(1)
            ]
        )
    );
    // Only the primary answers a write, and member 3 led epoch 1 throughout.
    let primary = replicas[3].stats().node;
    assert_eq!(
        (primary.epoch, primary.view, primary.status),
        (1, 0, Some(Status::Normal))
    );
    assert!(executed[3].lock().unwrap().contains(&b"after".to_vec()));
    for replica in replicas {
        replica.stop();
    }
}

/// Starts `total` replicas on loopback: the first three, of `config`, know
/// one another; the others join (`ReplicaOptions::join`) and know everyone.
/// Returns the addresses, the handles and what each executed.
fn start_members(
    config: &vr_core::Config,
    total: usize,
) -> (Vec<SocketAddr>, Vec<vr_mio::ReplicaHandle>, Vec<Executed>) {
    let listeners: Vec<_> = (0..total)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addresses: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut replicas = Vec::new();
    let mut executed = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let known = if i < 3 {
            &addresses[..3]
        } else {
            &addresses[..]
        };
        let mut options =
            ReplicaOptions::new(config.clone(), known.to_vec(), vr_core::MemberId(i as u8));
        options.join = i >= 3;
        let log = Executed::default();
        replicas
            .push(start_replica_with_listener(options, listener, Recorder(log.clone())).unwrap());
        executed.push(log);
    }
    (addresses, replicas, executed)
}
