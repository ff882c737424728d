//! The plans users are on (`users.tier`) and what each allows at the model gateway.
//!
//! This is the one place the limits are written down; issue 7 will make them
//! configurable. The table (also in the gateway's docs):
//!
//! | tier         | requests / minute | tokens / calendar month (UTC) |
//! |--------------|-------------------|-------------------------------|
//! | `free`       | 20                | 1,000,000                     |
//! | `pro`        | 60                | 20,000,000                    |
//! | `enterprise` | 600               | unlimited                     |
//!
//! Tokens are input (cache reads and writes included) plus output, as recorded in
//! the `usage` table. Enforcing them is `limits`' job, not this module's.

use std::fmt;

/// A plan tier, as stored in `users.tier`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The default plan.
    Free,
    /// The paid plan.
    Pro,
    /// Negotiated contracts.
    Enterprise,
}

impl Tier {
    /// The tier named `name` (`free`, `pro`, `enterprise`); unknown names are `free`,
    /// so a bad row never grants more than the least.
    pub fn parse(name: &str) -> Self {
        match name {
            "pro" => Self::Pro,
            "enterprise" => Self::Enterprise,
            _ => Self::Free,
        }
    }

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
        }
    }

    /// What this tier allows.
    pub fn plan(self) -> Plan {
        match self {
            Self::Free => Plan {
                requests_per_minute: 20,
                monthly_tokens: Some(1_000_000),
            },
            Self::Pro => Plan {
                requests_per_minute: 60,
                monthly_tokens: Some(20_000_000),
            },
            Self::Enterprise => Plan {
                requests_per_minute: 600,
                monthly_tokens: None,
            },
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The limits of one plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Model requests (`POST /v1/messages`) per user per minute.
    pub requests_per_minute: u32,
    /// Tokens per user per calendar month (UTC); `None` is unlimited.
    pub monthly_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_tiers_allow_more() {
        let [free, pro, ent] = [Tier::Free, Tier::Pro, Tier::Enterprise].map(Tier::plan);
        assert!(free.requests_per_minute < pro.requests_per_minute);
        assert!(pro.requests_per_minute < ent.requests_per_minute);
        assert!(free.monthly_tokens < pro.monthly_tokens);
        assert_eq!(ent.monthly_tokens, None);
    }

    #[test]
    fn unknown_tier_names_get_the_free_plan() {
        assert_eq!(Tier::parse("pro"), Tier::Pro);
        assert_eq!(Tier::parse("platinum"), Tier::Free);
        assert_eq!(Tier::parse("enterprise").to_string(), "enterprise");
    }
}
