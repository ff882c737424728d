//! Which namespaces one operator manages: its release's own (the default), the
//! ones its configuration names, or every namespace only when asked for.

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
            let valid = name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-')
                && !name.ends_with('-');
            if !valid {
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
}
