//! The egress proxy: the one way from a sandbox to the internet (issue 21).
//!
//! An HTTP/1.1 forward proxy ([`proxy`]): `CONNECT host:port` opens a tunnel
//! (TLS is not intercepted: the decision sees the CONNECT host and port only, not
//! the SNI, the URL or anything inside), absolute-form `http://` requests are
//! forwarded one upstream connection each. Every request carries the workspace
//! token (`Proxy-Authorization: Basic base64(jarvis:<token>)`), and each
//! connection is decided by [`policy`] (the plan's allow-list, the workspace's
//! approvals, and the CIDR deny-list that always wins, checked on the resolved
//! addresses the proxy then connects to) and written to `egress_connections`
//! ([`audit`]).
//!
//! It listens on `JARVIS_EGRESS_LISTEN` (TCP, for pods) and, with the local
//! backend, on `egress.sock` next to the gateway socket; the sandbox points
//! `HTTPS_PROXY`/`HTTP_PROXY` at it (`sandbox::egress_forward`).
//!
//! A host outside the lists is asked about in the user's browser ([`ask`]): the
//! connection waits (`JARVIS_EGRESS_APPROVAL_TIMEOUT`) for allow once / always /
//! deny, and is refused when nobody answers or no browser is open. The plan's
//! bytes per month ([`budget`]) refuse new connections once spent and close the
//! one that crosses them; its bytes per second ([`bandwidth`]) pace all of a
//! workspace's connections together.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use sqlx::PgPool;

use crate::{config::Config, metrics::Metrics, plans::Plans};

/// The browser's approval prompt for hosts outside the lists.
pub mod ask;
/// Connections audited and the workspace's approvals.
pub mod audit;
/// The plan's bytes per second, shared by a workspace's connections.
pub mod bandwidth;
/// The plan's bytes per month, counted per workspace.
pub mod budget;
/// Bytes counted on the upstream side, and the idle watch.
pub mod meter;
/// The decision: allow-lists, approvals, the deny-list.
pub mod policy;
/// The HTTP/1.1 proxy: CONNECT tunnels and forwarded plain requests.
pub mod proxy;
/// Name resolution (the system's, or a map in tests).
pub mod resolve;
/// The cap on connections at once per workspace.
pub mod slots;
/// The server name of a tunnel's TLS ClientHello.
pub mod sni;

/// The proxy's limits and deny-list.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Ranges never reached (`JARVIS_EGRESS_DENY`).
    pub deny: policy::DenyList,
    /// How long resolving and connecting upstream may take.
    pub connect_timeout: Duration,
    /// A connection with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// Connections one workspace may have open at once.
    pub max_connections: u32,
}

impl Settings {
    /// The settings of the configuration (`JARVIS_EGRESS_*`).
    pub fn from_config(config: &Config) -> Result<Self, policy::CidrError> {
        Ok(Self {
            deny: policy::DenyList::parse(&config.egress_deny)?,
            connect_timeout: config.egress_connect_timeout,
            idle_timeout: config.egress_idle_timeout,
            max_connections: config.egress_max_connections,
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            deny: policy::DenyList::default(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: 64,
        }
    }
}

/// Everything the proxy needs, shared by its listeners.
pub struct Egress {
    db: PgPool,
    plans: Arc<Plans>,
    metrics: Arc<Metrics>,
    settings: Settings,
    resolver: Arc<dyn resolve::Resolve>,
    slots: slots::Slots,
    /// Who asks the user about hosts outside the lists; without one they are refused.
    asker: OnceLock<Arc<ask::Asker>>,
    /// Bytes this month per workspace.
    budgets: budget::Budgets,
    /// Bytes per second per workspace.
    bandwidths: bandwidth::Bandwidths,
    /// The proxy's own TCP addresses: a target among them is a loop.
    own: Mutex<Vec<SocketAddr>>,
}

impl Egress {
    /// The proxy over `db` with these plans, metrics, settings and resolver.
    pub fn new(
        db: PgPool,
        plans: Arc<Plans>,
        metrics: Arc<Metrics>,
        settings: Settings,
        resolver: Arc<dyn resolve::Resolve>,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            plans,
            metrics,
            settings,
            resolver,
            slots: slots::Slots::default(),
            asker: OnceLock::new(),
            budgets: budget::Budgets::default(),
            bandwidths: bandwidth::Bandwidths::default(),
            own: Mutex::default(),
        })
    }

    /// Asks users through `asker` about hosts outside the lists (set once; until
    /// then, and without it, such hosts are refused at once).
    pub fn set_asker(&self, asker: Arc<ask::Asker>) {
        let _ = self.asker.set(asker);
    }

    /// Whether `addr` is one of the proxy's own listeners (a wildcard listener
    /// counts for loopback and unspecified addresses on its port).
    fn is_own(&self, addr: SocketAddr) -> bool {
        let own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        own.iter().any(|o| {
            o.port() == addr.port()
                && (o.ip() == addr.ip()
                    || (o.ip().is_unspecified()
                        && (addr.ip().is_loopback() || addr.ip().is_unspecified())))
        })
    }

    fn add_own(&self, addr: SocketAddr) {
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(addr);
    }
}
