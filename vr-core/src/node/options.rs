//! What an adapter is told to run.

use alloc::vec::Vec;

use super::links::LinkLimits;
use crate::message::{MemberId, ReplicaIndex};

/// How a runtime adapter runs one replica: the same options for every
/// adapter (`vr-tokio`, `vr-mio`, `vr-glommio`), so that switching runtimes
/// changes one import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaOptions {
    /// The cluster's configuration, the same on every replica.
    pub config: crate::Config,
    /// Member `i` listens on `addresses[i]` (without reconfiguration,
    /// replica `i`): as many as `config.replica_count`, or, for a joining
    /// replica, at least up to its own member id. Members added later by a
    /// reconfiguration that carries addresses are learned from it
    /// (the node does; see [`super::NodeEvent::AddressLearned`]).
    pub addresses: Vec<core::net::SocketAddr>,
    /// This replica's member id: its index in the first configuration, or
    /// the id a reconfiguration gives it when `join` is set.
    pub replica: MemberId,
    /// A new replica that joins a running cluster when a reconfiguration
    /// adds it (§7, [`crate::Replica::join`]); `replica` is then its
    /// member id and `config` gives only the cluster id and tunables.
    pub join: bool,
    /// Bound on each connection's queue of unsent frames, in bytes. Frames
    /// beyond it are dropped and counted (the protocol retransmits what
    /// matters); an empty queue takes one frame of any size.
    pub peer_queue_bytes_max: usize,
    /// First wait before reconnecting to a peer after a failure.
    pub reconnect_backoff_min: core::time::Duration,
    /// The wait doubles after each failure up to this. An accepted
    /// connection cuts every wait short (to `reconnect_backoff_min` after
    /// the failure): a peer that restarted connects first, as soon as it
    /// has something to say.
    pub reconnect_backoff_max: core::time::Duration,
    /// How long a connect may take before the node gives up on it (and
    /// backs off as after any failure).
    pub connect_timeout: core::time::Duration,
    /// Clients whose replies the node can route at a time.
    pub client_routes_max: usize,
    /// Inbound connections (peers and clients) open at a time; more are
    /// accepted and closed at once.
    pub client_connections_max: usize,
    /// `None`: the replica is a member of a new cluster and starts in view 0
    /// ([`crate::Replica::new`]). `Some(nonce)`: it restarts without its
    /// state and recovers it from the others ([`crate::Replica::recover`];
    /// the nonce must be fresh on every start, e.g. from the OS's random
    /// source). A process that may be restarting after a crash must use
    /// `Some`; when every replica starts that way they form the cluster.
    pub recovery_nonce: Option<u64>,
}

impl ReplicaOptions {
    /// Options for replica `replica` with defaults for a LAN: queues of four
    /// maximal frames, reconnects after 10 ms growing to 1 s, 4096 client
    /// routes and 1024 inbound connections.
    pub fn new(
        config: crate::Config,
        addresses: Vec<core::net::SocketAddr>,
        replica: MemberId,
    ) -> Self {
        let peer_queue_bytes_max = 4 * config.message_size_max as usize;
        ReplicaOptions {
            config,
            addresses,
            replica,
            peer_queue_bytes_max,
            reconnect_backoff_min: core::time::Duration::from_millis(10),
            reconnect_backoff_max: core::time::Duration::from_secs(1),
            connect_timeout: core::time::Duration::from_secs(2),
            client_routes_max: 4096,
            client_connections_max: 1024,
            recovery_nonce: None,
            join: false,
        }
    }

    /// The replica these options describe, starting at `now`: new, or
    /// recovering when `recovery_nonce` is set.
    pub fn build_replica<S: crate::Service>(
        &self,
        service: S,
        now: crate::Instant,
    ) -> Result<crate::Replica<S>, crate::ConfigError> {
        if self.join {
            let nonce = self.recovery_nonce.unwrap_or(0);
            return crate::Replica::join(self.config.clone(), self.replica, service, now, nonce);
        }
        let index = self.first_index();
        match self.recovery_nonce {
            None => crate::Replica::new(self.config.clone(), index, service, now),
            Some(nonce) => crate::Replica::recover(self.config.clone(), index, service, now, nonce),
        }
    }

    /// Checks what no adapter can run with, and says why.
    pub fn validate(&self) -> Result<(), &'static str> {
        self.config
            .validate()
            .map_err(|_| "invalid cluster configuration")?;
        if self.join {
            if usize::from(self.replica.0) >= self.addresses.len() {
                return Err("a joining replica needs its own address");
            }
        } else {
            if self.addresses.len() != usize::from(self.config.replica_count) {
                return Err("one address per replica is needed");
            }
            if self.replica.0 >= self.config.replica_count {
                return Err("replica index out of range");
            }
        }
        if self.reconnect_backoff_min.is_zero()
            || self.reconnect_backoff_min > self.reconnect_backoff_max
        {
            return Err("reconnect backoff must satisfy 0 < min <= max");
        }
        if self.client_routes_max == 0 || self.client_connections_max == 0 {
            return Err("client_routes_max and client_connections_max must be positive");
        }
        if self.connect_timeout.is_zero() {
            return Err("connect_timeout must be positive");
        }
        Ok(())
    }

    /// In the first configuration a member's id is its index.
    fn first_index(&self) -> ReplicaIndex {
        ReplicaIndex(self.replica.0)
    }

    /// The member → address book the options start with: member `i` at
    /// `addresses[i]`.
    pub fn address_book(&self) -> impl Iterator<Item = (MemberId, core::net::SocketAddr)> + '_ {
        (self.addresses.iter().enumerate())
            .filter_map(|(i, a)| Some((MemberId(u8::try_from(i).ok()?), *a)))
    }

    pub(crate) fn link_limits(&self) -> LinkLimits {
        LinkLimits {
            queue_bytes_max: self.peer_queue_bytes_max,
            backoff_min_ns: duration_ns(self.reconnect_backoff_min),
            backoff_max_ns: duration_ns(self.reconnect_backoff_max),
            connect_timeout_ns: duration_ns(self.connect_timeout),
            inbound_max: self.client_connections_max,
        }
    }
}

/// Nanoseconds, saturating (an absurd option means "never").
pub(crate) fn duration_ns(duration: core::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
