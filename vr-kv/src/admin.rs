//! The administrator's side of reconfiguration (§7): `vr-kv reconfigure`.
//!
//! Members are named by their position in a *registry*: the list of every
//! VR address the cluster has had, in member-id order (the `--cluster` list
//! a node was started with, extended by the members each reconfiguration
//! added). A reconfiguration to a list of addresses keeps the ids of the
//! addresses already in the registry and gives new addresses the next ids.
//!
//! The request goes through `vr-mio`'s blocking client. It is sent for the
//! epoch the client believes current; a replica of a newer epoch answers
//! with the new members, and the client sends the same request again for
//! that epoch (`Client::handle_start_epoch`), so an administrator need not
//! know the current epoch. One request, retried: it runs at most once.

use std::net::SocketAddr;
use std::time::Duration;

use vr_core::{ClientConfig, Config, MemberId};

/// What a completed reconfiguration did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconfigured {
    /// The new epoch-number.
    pub epoch: u32,
    /// The new members' ids, in index order.
    pub members: Vec<MemberId>,
    /// The registry with the new members appended: start the next
    /// reconfiguration (and new nodes) with it as `--cluster`.
    pub registry: Vec<SocketAddr>,
}

/// The member ids of `target` in `registry`, appending new addresses.
pub fn assign_members(
    registry: &[SocketAddr],
    target: &[SocketAddr],
) -> Result<(Vec<MemberId>, Vec<SocketAddr>), String> {
    let mut registry = registry.to_vec();
    let mut members = Vec::with_capacity(target.len());
    for address in target {
        let id = match registry.iter().position(|a| a == address) {
            Some(id) => id,
            None => {
                registry.push(*address);
                registry.len() - 1
            }
        };
        let id = u8::try_from(id)
            .map(MemberId)
            .map_err(|_| "at most 256 members ever".to_owned())?;
        if members.contains(&id) {
            return Err(format!("{address} is listed twice"));
        }
        members.push(id);
    }
    if members.is_empty() {
        return Err("the new configuration is empty".to_owned());
    }
    Ok((members, registry))
}

/// Moves the cluster `cluster` (whose members ever are `registry`, by id)
/// to the members at `target`, waiting at most `timeout`.
pub fn reconfigure(
    cluster: u64,
    registry: &[SocketAddr],
    target: &[SocketAddr],
    timeout: Duration,
) -> Result<Reconfigured, String> {
    let (members, registry) = assign_members(registry, target)?;
    let addresses: Vec<SocketAddr> = members.iter().map(|&m| registry[usize::from(m)]).collect();
    let count = u8::try_from(registry.len()).map_err(|_| "at most 255 members ever")?;
    let config = Config::new(cluster, count);
    let mut client_config = ClientConfig::new(&config, admin_client_id());
    // One request, resent until `timeout`: the client table runs it at most
    // once, and the client follows newer epochs (the request with them).
    let attempt = Duration::from_millis(300);
    client_config.request_timeout_ns = attempt.as_nanos() as u64;
    client_config.request_attempts_max = u32::try_from(timeout.as_millis() / attempt.as_millis())
        .unwrap_or(u32::MAX)
        .max(1);
    let mut client = vr_mio::Client::connect(registry.clone(), client_config, cluster)
        .map_err(|e| format!("cannot start a client: {e}"))?;
    let epoch = client
        .reconfigure(members.clone(), addresses)
        .map_err(|e| match e {
            vr_mio::ClientError::Request(vr_core::ClientError::TimedOut) => {
                "no answer in time; the reconfiguration may still happen".to_owned()
            }
            other => other.to_string(),
        })?;
    Ok(Reconfigured {
        epoch,
        members,
        registry,
    })
}

/// A random client id: the administrator's requests must not look like
/// another client's.
fn admin_client_id() -> u128 {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // Fall back on the clock: distinct enough for an administrator.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos());
        return nanos | 1 << 127;
    }
    u128::from_le_bytes(bytes)
}
