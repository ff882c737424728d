//! Leader election over a `coordination.k8s.io/v1` Lease, so two operator replicas
//! never reconcile at once: only the holder runs the controller.
//!
//! The holder renews the lease every `renew_every`; a lease not renewed for
//! `lease_duration` is free to take. A replica that fails to renew before its lease
//! runs out stops its controller at once and [`run`] returns [`Error::LeaseLost`]
//! (the binary exits and Kubernetes restarts it as a candidate). Expiry is judged from
//! the lease's `renewTime` against this replica's clock, so clocks must roughly agree
//! (client-go instead times how long it has seen the same `renewTime`).

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
};
use tracing::{info, warn};

/// Name of the operator's lease.
pub const LEASE_NAME: &str = "jarvis-operator";

/// What can go wrong while electing a leader.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Talking to the apiserver about the lease failed.
    #[error("lease {name}: {source}")]
    Api {
        /// Lease name.
        name: String,
        /// The apiserver's error.
        #[source]
        source: kube::Error,
    },
    /// This replica held the lease and could not renew it in time.
    #[error("lost lease {0}; stopping")]
    LeaseLost(String),
}

/// Where the lease lives, who we are and how long a lease lasts.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Lease name, [`LEASE_NAME`] in production.
    pub name: String,
    /// Namespace of the lease (the operator's own, `POD_NAMESPACE`).
    pub namespace: String,
    /// This replica's identity (`POD_NAME`).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews, and a candidate retries.
    pub renew_every: Duration,
}

/// One replica's view of the lease.
pub struct Elector {
    api: Api<Lease>,
    settings: Settings,
}

impl Elector {
    /// An elector for `settings`, talking through `client`.
    pub fn new(client: Client, settings: Settings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    fn api_error(&self, source: kube::Error) -> Error {
        Error::Api {
            name: self.settings.name.clone(),
            source,
        }
    }

    /// Acquire or renew the lease once. `Ok(true)` when this replica holds it now.
    /// Losing a race (409) is `Ok(false)`, not an error.
    pub async fn try_acquire(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let me = self.settings.identity.clone();
        let duration_s = i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let current = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.api_error(e))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_duration_seconds: Some(duration_s),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(self.api_error(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let held_by_me = holder == me;
        let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
            let lasts = SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(duration_s),
            ));
            renewed.0 + lasts < now
        });
        if !held_by_me && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(me),
            acquire_time: if held_by_me {
                spec.acquire_time
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(duration_s),
            lease_transitions: Some(if held_by_me {
                transitions
            } else {
                transitions + 1
            }),
            ..spec
        });
        // The resourceVersion we read makes this a compare-and-swap.
        match self
            .api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(self.api_error(e)),
        }
    }

    /// Give the lease up (if held) so another replica takes over without waiting
    /// for it to expire.
    pub async fn release(&self) -> Result<(), Error> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(self.api_error(e)),
        }
    }
}

/// Wait until this replica holds the lease, then run `work` while renewing it.
/// Returns `work`'s result (releasing the lease) when it ends, or
/// [`Error::LeaseLost`] (with `work` dropped, so the controller stops) when renewal
/// fails for longer than the lease lasts.
pub async fn run<F, T>(elector: &Elector, work: F) -> Result<T, Error>
where
    F: Future<Output = T>,
{
    let settings = &elector.settings;
    loop {
        match elector.try_acquire().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => warn!(%error, "leader election: cannot read the lease; retrying"),
        }
        tokio::time::sleep(settings.renew_every).await;
    }
    info!(lease = %settings.name, identity = %settings.identity, "became the leader");
    let mut last_renewed = tokio::time::Instant::now();
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(settings.renew_every);
    ticker.tick().await;
    loop {
        tokio::select! {
            result = &mut work => {
                if let Err(error) = elector.release().await {
                    warn!(%error, "leader election: releasing the lease failed");
                }
                return Ok(result);
            }
            _ = ticker.tick() => match elector.try_acquire().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(lease = %settings.name, "another replica holds the lease now");
                    return Err(Error::LeaseLost(settings.name.clone()));
                }
                Err(error) => {
                    warn!(%error, "leader election: renewing the lease failed");
                    if last_renewed.elapsed() >= settings.lease_duration {
                        return Err(Error::LeaseLost(settings.name.clone()));
                    }
                }
            },
        }
    }
}
