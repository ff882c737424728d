//! The decision for one connection: may this workspace reach `host:port`?
//!
//! Three inputs, in this order:
//!
//! 1. the workspace's own approvals (`egress_approvals`): a `deny` that matches
//!    refuses, an `allow` that matches admits;
//! 2. the plan's allow-list (`Plan::egress_allow`): `host`, `*.domain` or
//!    `host:port` patterns;
//! 3. nothing matched: refused (`not_allowed`).
//!
//! Whatever those say, the deny-list of CIDRs ([`DenyList`], `JARVIS_EGRESS_DENY`)
//! wins: it is checked on every address the host resolves to (and on IP literals),
//! and the proxy connects only to an address it checked, so a DNS answer that
//! changes between the check and the connect (rebinding) cannot slip through.
//!
//! A pattern without a port admits ports 80 and 443 only; `host:port` admits
//! that one port. `*.domain` matches every name below `domain` but not `domain`
//! itself (list both when both are wanted). Names compare case-insensitively and
//! without a trailing dot; IPv6 literals are written in brackets (`[2001:db8::1]:443`).
//! A workspace's `deny` without a port refuses every port.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// The ports a pattern without one admits.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// The default of `JARVIS_EGRESS_DENY`: private, loopback, link-local (the
/// 169.254.169.254 metadata address included), "this network", CGNAT, and the
/// IPv4-mapped IPv6 form of all of them (mapped addresses are also checked against
/// the IPv4 entries: see [`DenyList::blocks`]).
pub const DEFAULT_DENY: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,127.0.0.0/8,\
169.254.0.0/16,0.0.0.0/8,100.64.0.0/10,fc00::/7,::1/128,fe80::/10,::/128,\
::ffff:0:0/96";

/// Why a connection was refused (the `reason` of the audit row and of the
/// `X-Jarvis-Egress` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No approval and no pattern of the plan names the host and port.
    NotAllowed,
    /// The workspace denied this host.
    DeniedByWorkspace,
    /// The host is, or resolves to, an address of the deny-list.
    BlockedAddress,
    /// The target is the proxy itself, or the request already went through it.
    ProxyLoop,
    /// The workspace has as many connections open as its cap allows.
    TooManyConnections,
    /// Not a request a forward proxy serves (no absolute URI, `https://` without CONNECT…).
    BadRequest,
    /// The name did not resolve.
    Unresolvable,
    /// No checked address answered in time.
    ConnectFailed,
    /// The router could not read the workspace's plan or approvals (the database).
    Unavailable,
    /// Not on the lists, and the user did not approve it when asked in the
    /// browser (no answer in time, or no browser open).
    NotApproved,
    /// The workspace moved its plan's bytes for this month.
    ByteLimit,
    /// The TLS server name inside the tunnel is not the host it was opened for.
    SniMismatch,
    /// The tunnel began with a TLS handshake whose server name could not be read.
    SniUnreadable,
}

impl Reason {
    /// The stable name stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAllowed => "not_allowed",
            Self::DeniedByWorkspace => "denied_by_workspace",
            Self::BlockedAddress => "blocked_address",
            Self::ProxyLoop => "proxy_loop",
            Self::TooManyConnections => "too_many_connections",
            Self::BadRequest => "bad_request",
            Self::Unresolvable => "unresolvable",
            Self::ConnectFailed => "connect_failed",
            Self::Unavailable => "unavailable",
            Self::NotApproved => "not_approved",
            Self::ByteLimit => "byte_limit",
            Self::SniMismatch => "sni_mismatch",
            Self::SniUnreadable => "sni_unreadable",
        }
    }

    /// A sentence the agent can repeat to the user.
    pub fn explain(self) -> &'static str {
        match self {
            Self::NotAllowed => {
                "this host is not on the workspace's allow-list (the plan's package registries, or hosts the user approved)"
            }
            Self::DeniedByWorkspace => "the user denied network access to this host",
            Self::BlockedAddress => {
                "the host is or resolves to a private, loopback, link-local or metadata address, which sandboxes may never reach"
            }
            Self::ProxyLoop => {
                "the request targets the proxy itself or has already passed through it"
            }
            Self::TooManyConnections => {
                "the workspace has too many network connections open at once"
            }
            Self::BadRequest => {
                "not a request this proxy serves: use CONNECT for https and an absolute http:// URI otherwise"
            }
            Self::Unresolvable => "the host name does not resolve",
            Self::ConnectFailed => "the host did not accept a connection in time",
            Self::Unavailable => {
                "the router could not read the workspace's network policy; try again"
            }
            Self::NotApproved => {
                "this host is not on the workspace's allow-list and the user did not approve it when asked in the browser"
            }
            Self::ByteLimit => {
                "the workspace has used its plan's network transfer for this month (egress_bytes_per_month)"
            }
            Self::SniMismatch => {
                "the TLS server name inside the tunnel is not the host it was opened for"
            }
            Self::SniUnreadable => {
                "the TLS ClientHello inside the tunnel could not be read to check its server name"
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What admitted a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// A pattern of the plan's allow-list.
    Plan,
    /// The workspace's own approval.
    Approval,
    /// The user's "allow once" in the browser.
    Once,
}

impl Admitted {
    /// The `reason` stored for an allowed connection.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Approval => "approved",
            Self::Once => "approved_once",
        }
    }
}

/// A pattern that is not `host`, `*.domain` or `host:port`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an egress pattern (host, *.domain or host:port): {0:?}")]
pub struct PatternError(pub String);

/// A name (or IP literal) as compared: lower case, no trailing dot, no brackets.
/// `None` for an empty or malformed name.
pub fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let valid = !host.is_empty()
        && !host.starts_with('.')
        && !host.contains("..")
        && (host.parse::<IpAddr>().is_ok()
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'));
    valid.then_some(host)
}

/// `host[:port]` split, IPv6 literals in brackets (a bare IPv6 literal has no port).
fn split_port(text: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    if text.parse::<Ipv6Addr>().is_ok() {
        return Some((text, None));
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((text, None)),
    }
}

/// One allow-list (or approval) entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// The name, or the domain below which a wildcard matches.
    host: String,
    /// `*.host`: names below `host`, not `host` itself.
    wildcard: bool,
    /// The one port admitted; `None`: [`DEFAULT_PORTS`].
    port: Option<u16>,
}

impl Pattern {
    /// Parses `host`, `*.domain`, `host:port` or `*.domain:port`.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let bad = || PatternError(text.to_string());
        let (host, port) = split_port(text.trim()).ok_or_else(bad)?;
        if port == Some(0) {
            return Err(bad());
        }
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(domain) => (domain, true),
            None => (host, false),
        };
        let host = normalize_host(host).ok_or_else(bad)?;
        if wildcard && host.parse::<IpAddr>().is_ok() {
            return Err(bad());
        }
        Ok(Self {
            host,
            wildcard,
            port,
        })
    }

    fn matches_host(&self, host: &str) -> bool {
        if self.wildcard {
            host.strip_suffix(self.host.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.'))
        } else {
            host == self.host
        }
    }

    /// Whether the pattern admits `host` (normalized) on `port`.
    pub fn admits(&self, host: &str, port: u16) -> bool {
        self.matches_host(host)
            && match self.port {
                Some(p) => p == port,
                None => DEFAULT_PORTS.contains(&port),
            }
    }

    /// Whether the pattern names `host` on `port`, any port when it names none
    /// (how a workspace's `deny` matches).
    pub fn covers(&self, host: &str, port: u16) -> bool {
        self.matches_host(host) && self.port.is_none_or(|p| p == port)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// A workspace's own decision about a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    /// What it is about.
    pub pattern: Pattern,
    /// `true`: allow always; `false`: deny.
    pub allow: bool,
}

/// The decision on the name alone (the addresses are checked after resolving:
/// [`DenyList::check`]). `host` must be normalized ([`normalize_host`]).
pub fn decide(
    host: &str,
    port: u16,
    plan_allow: &[Pattern],
    approvals: &[Approval],
) -> Result<Admitted, Reason> {
    if approvals
        .iter()
        .any(|a| !a.allow && a.pattern.covers(host, port))
    {
        return Err(Reason::DeniedByWorkspace);
    }
    if approvals
        .iter()
        .any(|a| a.allow && a.pattern.admits(host, port))
    {
        return Ok(Admitted::Approval);
    }
    if plan_allow.iter().any(|p| p.admits(host, port)) {
        return Ok(Admitted::Plan);
    }
    Err(Reason::NotAllowed)
}

/// An address range (`10.0.0.0/8`, `fe80::/10`, or a single address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

/// A CIDR that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a CIDR range: {0:?}")]
pub struct CidrError(pub String);

impl Cidr {
    /// Parses `addr/len` or a bare address (its own /32 or /128).
    pub fn parse(text: &str) -> Result<Self, CidrError> {
        let bad = || CidrError(text.to_string());
        let text = text.trim();
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len.parse::<u8>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        if len > max {
            return Err(bad());
        }
        Ok(Self { addr, len })
    }

    /// Whether `ip` is in the range (an IPv4 range never holds an IPv6 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn prefix_eq(a: u128, b: u128, len: u8, bits: u8) -> bool {
            if len == 0 {
                return true;
            }
            let shift = u32::from(bits - len);
            (a >> shift) == (b >> shift)
        }
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                self.len,
                32,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.len, 128)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The ranges no connection may reach, whatever the allow-lists say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenyList(Vec<Cidr>);

impl DenyList {
    /// Parses a comma-separated list (`JARVIS_EGRESS_DENY`); empty entries are skipped.
    pub fn parse(text: &str) -> Result<Self, CidrError> {
        text.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Cidr::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The range that blocks `ip`, if any. An IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`) is checked in both forms, so `10.0.0.0/8` blocks it too.
    pub fn blocks(&self, ip: IpAddr) -> Option<Cidr> {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.0
            .iter()
            .find(|c| c.contains(ip) || mapped.is_some_and(|m| c.contains(m)))
            .copied()
    }

    /// Refuses the whole set when any of `addrs` is blocked: a name with one
    /// private answer among public ones is refused, not connected to its public half.
    pub fn check(&self, addrs: &[IpAddr]) -> Result<(), (IpAddr, Cidr)> {
        match addrs
            .iter()
            .find_map(|ip| self.blocks(*ip).map(|c| (*ip, c)))
        {
            Some(hit) => Err(hit),
            None => Ok(()),
        }
    }
}

impl Default for DenyList {
    fn default() -> Self {
        // The constant parses (a unit test says so); an empty list never results.
        Self::parse(DEFAULT_DENY).unwrap_or_else(|_| {
            Self(vec![Cidr {
                addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                len: 0,
            }])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).expect("pattern")
    }

    fn allow(list: &[&str], host: &str, port: u16) -> Result<Admitted, Reason> {
        let list: Vec<Pattern> = list.iter().map(|s| p(s)).collect();
        decide(&normalize_host(host).expect("host"), port, &list, &[])
    }

    #[test]
    fn a_plain_host_admits_itself_on_80_and_443_only() {
        assert_eq!(allow(&["pypi.org"], "pypi.org", 443), Ok(Admitted::Plan));
        assert_eq!(allow(&["pypi.org"], "pypi.org", 80), Ok(Admitted::Plan));
        assert_eq!(
            allow(&["pypi.org"], "pypi.org", 22),
            Err(Reason::NotAllowed)
        );
        assert_eq!(
            allow(&["pypi.org"], "pypi.org", 8443),
            Err(Reason::NotAllowed)
        );
        assert_eq!(
            allow(&["pypi.org"], "evilpypi.org", 443),
            Err(Reason::NotAllowed)
        );
        assert_eq!(
            allow(&["pypi.org"], "pypi.org.evil.com", 443),
            Err(Reason::NotAllowed)
        );
        assert_eq!(
            allow(&["pypi.org"], "x.pypi.org", 443),
            Err(Reason::NotAllowed)
        );
    }

    #[test]
    fn a_port_in_the_pattern_admits_that_port_only() {
        assert_eq!(
            allow(&["git.example.com:22"], "git.example.com", 22),
            Ok(Admitted::Plan)
        );
        assert_eq!(
            allow(&["git.example.com:22"], "git.example.com", 443),
            Err(Reason::NotAllowed)
        );
        assert_eq!(
            allow(&["git.example.com:8443"], "git.example.com", 8443),
            Ok(Admitted::Plan)
        );
        assert!(Pattern::parse("host:0").is_err());
        assert!(Pattern::parse("host:70000").is_err());
        assert!(Pattern::parse("host:").is_err());
    }

    #[test]
    fn a_wildcard_matches_below_the_domain_not_the_domain() {
        let list = ["*.npmjs.org"];
        assert_eq!(allow(&list, "registry.npmjs.org", 443), Ok(Admitted::Plan));
        assert_eq!(allow(&list, "a.b.npmjs.org", 443), Ok(Admitted::Plan));
        assert_eq!(allow(&list, "npmjs.org", 443), Err(Reason::NotAllowed));
        assert_eq!(allow(&list, "evilnpmjs.org", 443), Err(Reason::NotAllowed));
        assert_eq!(allow(&list, "npmjs.org.evil", 443), Err(Reason::NotAllowed));
        assert_eq!(
            allow(&["*.npmjs.org", "npmjs.org"], "npmjs.org", 443),
            Ok(Admitted::Plan)
        );
        assert_eq!(
            allow(&["*.example.com:8080"], "a.example.com", 8080),
            Ok(Admitted::Plan)
        );
        assert_eq!(
            allow(&["*.example.com:8080"], "a.example.com", 443),
            Err(Reason::NotAllowed)
        );
        assert!(Pattern::parse("*.10.0.0.1").is_err());
    }

    #[test]
    fn names_compare_without_case_or_trailing_dot() {
        assert_eq!(allow(&["PyPI.org"], "pypi.ORG", 443), Ok(Admitted::Plan));
        assert_eq!(allow(&["pypi.org."], "pypi.org", 443), Ok(Admitted::Plan));
        assert_eq!(allow(&["pypi.org"], "pypi.org.", 443), Ok(Admitted::Plan));
        assert_eq!(
            allow(&["*.Example.COM"], "A.example.com.", 443),
            Ok(Admitted::Plan)
        );
        assert_eq!(normalize_host(""), None);
        assert_eq!(normalize_host("."), None);
        assert_eq!(normalize_host("a..b"), None);
        assert_eq!(normalize_host("a b"), None);
        assert_eq!(normalize_host("a/b"), None);
        assert_eq!(normalize_host("[::1]").as_deref(), Some("::1"));
    }

    #[test]
    fn ip_literals_and_ipv6_patterns() {
        assert_eq!(
            allow(&["93.184.215.14"], "93.184.215.14", 443),
            Ok(Admitted::Plan)
        );
        assert_eq!(
            allow(&["[2001:db8::1]:8443"], "[2001:db8::1]", 8443),
            Ok(Admitted::Plan)
        );
        assert_eq!(
            allow(&["2001:db8::1"], "2001:DB8::1", 443),
            Ok(Admitted::Plan)
        );
        assert_eq!(
            allow(&["2001:db8::1"], "2001:db8::1", 8443),
            Err(Reason::NotAllowed)
        );
        assert_eq!(p("[2001:db8::1]:8443").to_string(), "[2001:db8::1]:8443");
        assert_eq!(p("*.Example.com:81").to_string(), "*.example.com:81");
    }

    #[test]
    fn the_workspace_deny_wins_and_its_allow_adds() {
        let plan = vec![p("pypi.org")];
        let approvals = vec![
            Approval {
                pattern: p("pypi.org"),
                allow: false,
            },
            Approval {
                pattern: p("example.com"),
                allow: true,
            },
            Approval {
                pattern: p("ssh.example.com:22"),
                allow: false,
            },
        ];
        assert_eq!(
            decide("pypi.org", 443, &plan, &approvals),
            Err(Reason::DeniedByWorkspace)
        );
        // A deny without a port refuses every port.
        assert_eq!(
            decide("pypi.org", 8080, &plan, &approvals),
            Err(Reason::DeniedByWorkspace)
        );
        assert_eq!(
            decide("example.com", 443, &plan, &approvals),
            Ok(Admitted::Approval)
        );
        assert_eq!(
            decide("example.com", 22, &plan, &approvals),
            Err(Reason::NotAllowed)
        );
        assert_eq!(
            decide("ssh.example.com", 443, &plan, &approvals),
            Err(Reason::NotAllowed)
        );
        assert_eq!(
            decide("other.org", 443, &plan, &approvals),
            Err(Reason::NotAllowed)
        );
    }

    fn blocked(list: &DenyList, ip: &str) -> bool {
        list.blocks(ip.parse().expect("ip")).is_some()
    }

    #[test]
    fn the_default_deny_list_covers_private_loopback_link_local_and_metadata() {
        let deny = DenyList::default();
        assert_eq!(deny, DenyList::parse(DEFAULT_DENY).expect("default parses"));
        for ip in [
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::ffff:8.8.8.8",
        ] {
            assert!(blocked(&deny, ip), "{ip} must be blocked");
        }
        for ip in [
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.255.255",
            "11.0.0.1",
            "192.169.0.1",
            "2001:4860:4860::8888",
            "2606:4700::1111",
            "fec0::1",
        ] {
            assert!(!blocked(&deny, ip), "{ip} must not be blocked");
        }
    }

    #[test]
    fn mapped_addresses_are_checked_in_their_ipv4_form() {
        // Without the ::ffff:0:0/96 entry, an IPv4 range still blocks the mapped form.
        let deny = DenyList::parse("169.254.0.0/16").expect("list");
        assert!(blocked(&deny, "::ffff:169.254.169.254"));
        assert!(blocked(&deny, "::ffff:a9fe:a9fe"));
        assert!(!blocked(&deny, "::ffff:8.8.8.8"));
        // An IPv4 range does not match unrelated IPv6 addresses.
        assert!(!blocked(&deny, "a9fe:a9fe::"));
    }

    #[test]
    fn one_blocked_answer_refuses_the_name() {
        let deny = DenyList::default();
        let addrs: Vec<IpAddr> = vec![
            "8.8.8.8".parse().expect("ip"),
            "10.0.0.1".parse().expect("ip"),
        ];
        let (ip, cidr) = deny.check(&addrs).expect_err("blocked");
        assert_eq!(ip.to_string(), "10.0.0.1");
        assert_eq!(cidr.to_string(), "10.0.0.0/8");
        assert!(deny.check(&addrs[..1]).is_ok());
    }

    #[test]
    fn deny_lists_parse_and_narrow() {
        let narrow = DenyList::parse(" 10.0.0.0/8 , ,169.254.0.0/16").expect("list");
        assert!(!blocked(&narrow, "127.0.0.1"));
        assert!(blocked(&narrow, "10.1.1.1"));
        assert!(
            DenyList::parse("")
                .expect("empty")
                .check(&["127.0.0.1".parse().expect("ip")])
                .is_ok()
        );
        assert!(DenyList::parse("10.0.0.0/33").is_err());
        assert!(DenyList::parse("nonsense").is_err());
        assert!(blocked(
            &DenyList::parse("0.0.0.0/0").expect("all"),
            "8.8.8.8"
        ));
        assert!(blocked(
            &DenyList::parse("1.2.3.4").expect("one"),
            "1.2.3.4"
        ));
        assert!(!blocked(
            &DenyList::parse("1.2.3.4").expect("one"),
            "1.2.3.5"
        ));
    }
}
