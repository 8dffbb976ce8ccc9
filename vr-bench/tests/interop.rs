//! One cluster, three runtimes: replica 0 runs on tokio, replica 1 on mio,
//! replica 2 on glommio, and a client of each adapter writes to it while the
//! primary (replica 0) is stopped. They share one wire protocol, so the view
//! change and every acknowledged operation go through whatever the mix.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vr_core::{ClientConfig, Config, Service};

type Executed = Arc<Mutex<Vec<Vec<u8>>>>;

/// Records every operation and echoes it back.
struct Recorder(Executed);

impl Service for Recorder {
    fn execute(&mut self, _op_number: u64, op: &[u8]) -> Vec<u8> {
        self.0.lock().unwrap().push(op.to_vec());
        op.to_vec()
    } // The state is the list of operations: one page each.
    fn page_count(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    fn read_page(&self, index: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.lock().unwrap()[index as usize]);
    }
    fn install_pages(&mut self, pages: &[&[u8]]) {
        *self.0.lock().unwrap() = pages.iter().map(|p| p.to_vec()).collect();
    }
}

const OPS_PER_CLIENT: usize = 60;
const ACKS_BEFORE_STOP: usize = 45;

fn op(runtime: &str, i: usize) -> Vec<u8> {
    format!("{runtime}-client-op-{i}").into_bytes()
}

#[test]
fn three_runtimes_one_cluster_survive_a_primary_stop() {
    let config = Config::new(21, 3);
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addresses: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let executed: Vec<Executed> = (0..3).map(|_| Executed::default()).collect();
    let mut listeners = listeners.into_iter();

    let tokio_replica = vr_tokio::start_replica_with_listener(
        vr_tokio::ReplicaOptions::new(config.clone(), addresses.clone(), vr_core::MemberId(0)),
        listeners.next().unwrap(),
        Recorder(executed[0].clone()),
    )
    .unwrap();
    let mio_replica = vr_mio::start_replica_with_listener(
        vr_mio::ReplicaOptions::new(config.clone(), addresses.clone(), vr_core::MemberId(1)),
        listeners.next().unwrap(),
        Recorder(executed[1].clone()),
    )
    .unwrap();
    let glommio_replica = vr_glommio::start_replica_with_listener(
        vr_glommio::ReplicaOptions::new(config.clone(), addresses.clone(), vr_core::MemberId(2)),
        listeners.next().unwrap(),
        Recorder(executed[2].clone()),
    )
    .unwrap();

    let (acks, acked) = mpsc::channel::<Vec<u8>>();
    let mut workers = Vec::new();
    {
        let (acks, addresses, config) = (acks.clone(), addresses.clone(), config.clone());
        workers.push(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client_config = ClientConfig::new(&config, 501);
                let mut client =
                    vr_tokio::Client::connect(addresses, client_config, config.cluster)
                        .await
                        .unwrap();
                for i in 0..OPS_PER_CLIENT {
                    let op = op("tokio", i);
                    assert_eq!(client.submit(op.clone()).await.unwrap(), op);
                    if acks.send(op).is_err() {
                        return;
                    }
                }
            });
        }));
    }
    {
        let (acks, addresses, config) = (acks.clone(), addresses.clone(), config.clone());
        workers.push(std::thread::spawn(move || {
            let mut client =
                vr_mio::Client::connect(addresses, ClientConfig::new(&config, 502), config.cluster)
                    .unwrap();
            for i in 0..OPS_PER_CLIENT {
                let op = op("mio", i);
                assert_eq!(client.submit(op.clone()).unwrap(), op);
                if acks.send(op).is_err() {
                    return;
                }
            }
        }));
    }
    {
        let (acks, addresses, config) = (acks.clone(), addresses.clone(), config.clone());
        workers.push(std::thread::spawn(move || {
            let mut client = vr_glommio::BlockingClient::connect(
                addresses,
                ClientConfig::new(&config, 503),
                config.cluster,
            )
            .unwrap();
            for i in 0..OPS_PER_CLIENT {
                let op = op("glommio", i);
                assert_eq!(client.submit(op.clone()).unwrap(), op);
                if acks.send(op).is_err() {
                    return;
                }
            }
        }));
    }
    drop(acks);

    let total = 3 * OPS_PER_CLIENT;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acknowledged = Vec::new();
    let mut tokio_replica = Some(tokio_replica);
    while acknowledged.len() < total {
        let left = deadline.saturating_duration_since(Instant::now());
        let op = acked
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("{} of {total} acknowledged: {e}", acknowledged.len()));
        acknowledged.push(op);
        if acknowledged.len() == ACKS_BEFORE_STOP {
            let primary = tokio_replica.take().unwrap();
            assert_eq!(
                primary.stats().view,
                0,
                "the tokio replica is the primary of view 0"
            );
            primary.stop();
        }
    }
    for worker in workers {
        worker.join().expect("client thread");
    }

    assert!(mio_replica.stats().view >= 1, "a view change happened");
    let wait_deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let done = [1, 2].iter().all(|&i| {
            let have: HashSet<Vec<u8>> = executed[i].lock().unwrap().iter().cloned().collect();
            acknowledged.iter().all(|op| have.contains(op))
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < wait_deadline,
            "survivors did not execute every acknowledged op"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for (i, log) in executed.iter().enumerate() {
        let log = log.lock().unwrap();
        let unique: HashSet<&Vec<u8>> = log.iter().collect();
        assert_eq!(unique.len(), log.len(), "replica {i} executed an op twice");
    }
    let (mio_log, glommio_log) = (
        executed[1].lock().unwrap().clone(),
        executed[2].lock().unwrap().clone(),
    );
    let common = mio_log.len().min(glommio_log.len());
    assert_eq!(
        mio_log[..common],
        glommio_log[..common],
        "survivors executed the same sequence"
    );
    mio_replica.stop();
    glommio_replica.stop();
}
