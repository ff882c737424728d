//! Name resolution, behind a trait so tests can map their own names.
//!
//! The proxy resolves a name once, checks every answer against the deny-list and
//! connects only to the addresses it checked ([`super::policy`]).

use std::{collections::HashMap, io, net::IpAddr};

use futures::future::BoxFuture;

/// Resolves a host name to its addresses.
pub trait Resolve: Send + Sync {
    /// Every address `host` (a normalized name, never an IP literal) resolves to.
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The system's resolver (`getaddrinfo` through tokio).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, 0)).await?;
            let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            ips.dedup();
            Ok(ips)
        })
    }
}

/// A fixed table of names (tests); any other name does not resolve.
#[derive(Default)]
pub struct StaticResolver(HashMap<String, Vec<IpAddr>>);

impl StaticResolver {
    /// Adds `host` → `addrs` (the name is compared lower case, without a trailing dot).
    #[must_use]
    pub fn with(mut self, host: &str, addrs: &[IpAddr]) -> Self {
        let host = super::policy::normalize_host(host).unwrap_or_else(|| host.to_string());
        self.0.insert(host, addrs.to_vec());
        self
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let found = self.0.get(host).cloned();
        Box::pin(async move {
            found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown test host"))
        })
    }
}
