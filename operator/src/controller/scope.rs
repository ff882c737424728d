//! Which namespaces one operator manages: its release's own (the default), the
//! ones its configuration names, or every namespace only when asked for; and
//! which of them hold its warm pool.

use std::fmt;

/// The namespaces whose workspaces an operator reconciles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (`WATCH_NAMESPACE=*`): needs cluster-wide rights.
    All,
    /// These namespaces only (never empty).
    Namespaces(Vec<String>),
}

impl Scope {
    /// `WATCH_NAMESPACE`: `*` for all, else a comma-separated list; blank means
    /// `own` (the operator's own namespace).
    pub fn parse(text: &str, own: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Self::All);
        }
        let mut namespaces: Vec<String> = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return Err("`*` (every namespace) cannot be combined with names".into());
            }
            if !is_namespace_name(name) {
                return Err(format!("{name:?} is not a namespace name"));
            }
            if !namespaces.iter().any(|n| n == name) {
                namespaces.push(name.to_owned());
            }
        }
        if namespaces.is_empty() {
            namespaces.push(own.to_owned());
        }
        Ok(Self::Namespaces(namespaces))
    }

    /// The namespaces whose warm pool of `warm_pool` pods the operator keeps:
    /// `named` (`--warm-pool-namespace`), else the watched namespaces. Refused:
    /// a pool with `*` and none named (no namespace to keep it in), and a named
    /// one outside the watched namespaces (its claimed pods would never be
    /// adopted). Empty when `warm_pool` is 0.
    pub fn pool_namespaces(
        &self,
        named: &[String],
        warm_pool: usize,
    ) -> Result<Vec<String>, String> {
        let mut pools: Vec<String> = Vec::new();
        for name in named.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            if !is_namespace_name(name) {
                return Err(format!("{name:?} is not a namespace name"));
            }
            if let Self::Namespaces(watched) = self
                && !watched.iter().any(|w| w == name)
            {
                return Err(format!(
                    "namespace {name} is not watched (WATCH_NAMESPACE={self}): the operator \
                     would never adopt the pool pods claimed there"
                ));
            }
            if !pools.iter().any(|p| p == name) {
                pools.push(name.to_owned());
            }
        }
        if warm_pool == 0 {
            return Ok(Vec::new());
        }
        match self {
            Self::All if pools.is_empty() => Err(format!(
                "a warm pool of {warm_pool} with WATCH_NAMESPACE=* needs the namespaces to keep \
                 it in: set JARVIS_WARM_POOL_NAMESPACES (--warm-pool-namespace) to the routers' \
                 JARVIS_KUBE_NAMESPACE, or JARVIS_WARM_POOL=0"
            )),
            Self::Namespaces(watched) if pools.is_empty() => Ok(watched.clone()),
            _ => Ok(pools),
        }
    }
}

/// A namespace's name: a DNS label (RFC 1123).
fn is_namespace_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Namespaces(names) => f.write_str(&names.join(",")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_is_the_own_namespace_and_star_is_all() {
        assert_eq!(
            Scope::parse("", "jarvis"),
            Ok(Scope::Namespaces(vec!["jarvis".into()]))
        );
        assert_eq!(Scope::parse(" * ", "jarvis"), Ok(Scope::All));
        assert_eq!(
            Scope::parse("team-a, team-b,team-a", "jarvis"),
            Ok(Scope::Namespaces(vec!["team-a".into(), "team-b".into()]))
        );
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(Scope::parse("Team", "jarvis").is_err());
        assert!(Scope::parse("a,*", "jarvis").is_err());
        assert!(Scope::parse("-a", "jarvis").is_err());
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    #[test]
    fn the_pool_is_kept_in_the_watched_namespaces_unless_named() {
        let watched = Scope::parse("team-a,team-b", "jarvis").expect("scope");
        assert_eq!(
            watched.pool_namespaces(&[], 2),
            Ok(names(&["team-a", "team-b"]))
        );
        assert_eq!(
            watched.pool_namespaces(&names(&["team-b", " team-b"]), 2),
            Ok(names(&["team-b"]))
        );
        assert_eq!(
            Scope::All.pool_namespaces(&names(&["jarvis", ""]), 2),
            Ok(names(&["jarvis"]))
        );
        assert_eq!(watched.pool_namespaces(&[], 0), Ok(Vec::new()));
        assert_eq!(Scope::All.pool_namespaces(&[], 0), Ok(Vec::new()));
    }

    #[test]
    fn a_pool_with_nowhere_to_go_or_outside_the_watched_namespaces_is_refused() {
        let error = Scope::All
            .pool_namespaces(&[], 2)
            .expect_err("no pool namespace");
        assert!(error.contains("JARVIS_WARM_POOL_NAMESPACES"), "{error}");
        let watched = Scope::parse("team-a", "jarvis").expect("scope");
        let error = watched
            .pool_namespaces(&names(&["team-b"]), 2)
            .expect_err("team-b is not watched");
        assert!(error.contains("team-b is not watched"), "{error}");
        assert!(Scope::All.pool_namespaces(&names(&["*"]), 2).is_err());
        assert!(Scope::All.pool_namespaces(&names(&["Team"]), 2).is_err());
    }
}
