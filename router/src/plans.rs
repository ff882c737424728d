//! The plans users are on (`users.tier`) and what each allows, read from
//! configuration once at start-up.
//!
//! Defaults (used for every plan or field the configuration leaves out):
//!
//! | tier         | price / month | model (billing on) | requests / minute | tokens / calendar month (UTC) | concurrent turns | voice | storage   |
//! |--------------|---------------|--------------------|-------------------|-------------------------------|------------------|-------|-----------|
//! | `free`       | US$0          | no                 | 20                | 1,000,000                     | 1                | on    | 1 GiB     |
//! | `pro`        | US$20         | yes                | 60                | 20,000,000                    | 2                | on    | 50 GiB    |
//! | `enterprise` | on request    | yes                | 600               | unlimited                     | 8                | on    | unlimited |
//!
//! `price_cents` is what the plan costs a month in US cents, as the landing page
//! and sign-up show it (`GET /api/plans`); `null` is "on request". What a
//! subscriber pays is the Stripe price's amount: keep the two the same.
//!
//! `model` says whether the plan may call the model while billing is on (with
//! billing off every account may, within its quota and rate); a paid plan also
//! needs its subscription active.
//!
//! Every plan also bounds what one model call may ask for (the gateway's request
//! policy, `http::gateway::policy`): `models`, the model ids it may name (an entry
//! ending in `*` is a prefix; default [`DEFAULT_MODELS`], the models the pinned Claude
//! Code CLI asks for); `max_tokens`, the largest `max_tokens` of one call (default
//! [`DEFAULT_MAX_TOKENS`], what the CLI sends); `server_tools`, whether calls may
//! carry server tools (`web_search_*`, `web_fetch_*`, `code_execution_*`, …) and
//! `mcp_servers`, which make the model provider reach the network for the user and
//! bill per use (default off on every plan).
//!
//! `JARVIS_PLANS` overrides them: inline JSON, or the path of a JSON file, e.g.
//! `{"pro": {"monthly_tokens": 5000000, "stripe_price": "price_123"}}`
//! (`monthly_tokens: null` and `storage_bytes: null` are unlimited). The Stripe
//! price of the paid plans can also come from `STRIPE_PRICE_PRO` and
//! `STRIPE_PRICE_ENTERPRISE`, which win over the file. A price maps back to its tier when a subscription changes; `free`
//! has no price and works with no Stripe at all.
//!
//! `egress_allow` lists the hosts the plan's sandboxes may reach through the egress
//! proxy (`crate::egress`; default [`DEFAULT_EGRESS_ALLOW`]: the Python and Node
//! package registries and GitHub). `egress_bytes_per_month` bounds the bytes the
//! plan's sandboxes move through it each calendar month (UTC), both ways counted
//! (default: 10 GiB on `free`, 100 GiB on `pro`, unlimited on `enterprise`;
//! `null` is unlimited): past it, the connection open is closed and new ones are
//! refused (`crate::egress::budget`). `egress_bandwidth_bytes_per_second` is what
//! all of a workspace's connections through it move per second together, both
//! ways counted (default: 2 MiB/s on `free`, 20 MiB/s on `pro`, unlimited on
//! `enterprise`; `null` is unlimited; per router replica, `crate::egress::bandwidth`).
//!
//! Tokens are input (cache reads and writes included) plus output, as recorded in
//! the `usage` table. Enforcing them is `limits`' job, not this module's.

use std::{fmt, path::Path};

use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// The models every plan may call unless configured otherwise: what the pinned
/// Claude Code CLI asks for (its default, and the `opus`, `sonnet` and `haiku`
/// aliases of `JARVIS_MODEL`) and the current 4.x ids.
pub const DEFAULT_MODELS: &[&str] = &[
    "claude-opus-5-5",
    "claude-sonnet-5-5",
    "claude-haiku-5-5",
    "claude-opus-4-5",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
];

/// The default cap on one call's `max_tokens`: what the pinned CLI sends.
pub const DEFAULT_MAX_TOKENS: u32 = 128_000;

/// A plan tier, as stored in `users.tier`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The default plan.
    Free,
    /// The paid plan.
    Pro,
    /// Negotiated contracts.
    Enterprise,
}

impl Tier {
    /// Every tier, cheapest first.
    pub const ALL: [Self; 3] = [Self::Free, Self::Pro, Self::Enterprise];

    /// The tier named `name` (`free`, `pro`, `enterprise`); unknown names are `free`,
    /// so a bad row never grants more than the least.
    pub fn parse(name: &str) -> Self {
        Self::from_name(name).unwrap_or(Self::Free)
    }

    /// The tier named exactly `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The limits of one plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The Stripe price that subscribes to it; `None` cannot be bought.
    pub stripe_price: Option<String>,
    /// What it costs a month in US cents, as shown to people; `None` is on request.
    pub price_cents: Option<u64>,
    /// Whether the plan's users may call the model while billing is on (with
    /// billing off everyone may). Off for `free` by default: with billing on,
    /// calling the model takes a paid plan unless the operator opens it.
    pub model: bool,
    /// Model requests (`POST /v1/messages`) per user per minute.
    pub requests_per_minute: u32,
    /// Tokens per user per calendar month (UTC); `None` is unlimited.
    pub monthly_tokens: Option<u64>,
    /// Turns a user may have running at once (the browser WebSocket refuses
    /// more with `too_many_turns`).
    pub max_concurrent_turns: u32,
    /// Whether spoken answers (the `speak` tool) are on (configuration and
    /// `/api/usage` only so far: the `speak` tool does not check it yet).
    pub voice: bool,
    /// Bytes a user may keep stored — uploads, the agent's files, audio, its state
    /// archive and documents (`crate::quota`); what does not fit is refused or not
    /// stored. `None` is unlimited.
    pub storage_bytes: Option<u64>,
    /// Model ids a call may name; an entry ending in `*` matches by prefix.
    pub models: Vec<String>,
    /// Largest `max_tokens` of one call.
    pub max_tokens: u32,
    /// Whether calls may carry server tools and `mcp_servers` (network egress by
    /// the model provider, billed per use).
    pub server_tools: bool,
    /// Hosts the workspace's sandbox may reach through the egress proxy
    /// (`crate::egress::policy`: `host`, `*.domain` or `host:port`); default
    /// [`DEFAULT_EGRESS_ALLOW`].
    pub egress_allow: Vec<String>,
    /// Bytes the sandbox may move through the egress proxy per calendar month
    /// (UTC), both ways; `None` is unlimited.
    pub egress_bytes_per_month: Option<u64>,
    /// Bytes per second all of a workspace's egress connections move together,
    /// both ways (per router replica); `None` is unlimited.
    pub egress_bandwidth_bytes_per_second: Option<u64>,
}

impl Plan {
    /// Whether this plan may call `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models
            .iter()
            .any(|entry| match entry.strip_suffix('*') {
                Some(prefix) => model.starts_with(prefix),
                None => model == entry,
            })
    }
}

/// A plan as the configuration writes it: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanOverride {
    stripe_price: Option<String>,
    #[serde(default, deserialize_with = "present")]
    price_cents: Option<Option<u64>>,
    model: Option<bool>,
    requests_per_minute: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    monthly_tokens: Option<Option<u64>>,
    max_concurrent_turns: Option<u32>,
    voice: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    storage_bytes: Option<Option<u64>>,
    models: Option<Vec<String>>,
    max_tokens: Option<u32>,
    server_tools: Option<bool>,
    egress_allow: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    egress_bytes_per_month: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    egress_bandwidth_bytes_per_second: Option<Option<u64>>,
}

/// Tells `"monthly_tokens": null` (unlimited) from a missing field (the default);
/// the same for `storage_bytes`, `price_cents`, `egress_bytes_per_month` and
/// `egress_bandwidth_bytes_per_second`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// Could not read the plans.
#[derive(Debug, thiserror::Error)]
pub enum PlansError {
    /// The file named by `JARVIS_PLANS` could not be read.
    #[error("cannot read the plans file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The JSON is not a plans table.
    #[error("JARVIS_PLANS is not a valid plans table: {0}")]
    Parse(#[from] serde_json::Error),
    /// Two plans share a Stripe price, so a subscription could not be mapped back.
    #[error("the plans {0} and {1} have the same Stripe price")]
    DuplicatePrice(Tier, Tier),
    /// A bandwidth of 0 would let nothing through (`null` is unlimited).
    #[error("the {0} plan's egress_bandwidth_bytes_per_second is 0 (use null for unlimited)")]
    ZeroBandwidth(Tier),
}

/// Every plan, by tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plans {
    free: Plan,
    pro: Plan,
    enterprise: Plan,
}

impl Default for Plans {
    fn default() -> Self {
        Self {
            free: Plan {
                stripe_price: None,
                price_cents: Some(0),
                model: false,
                requests_per_minute: 20,
                monthly_tokens: Some(1_000_000),
                max_concurrent_turns: 1,
                voice: true,
                storage_bytes: Some(GIB),
                models: default_models(),
                max_tokens: DEFAULT_MAX_TOKENS,
                server_tools: false,
                egress_allow: default_egress_allow(),
                egress_bytes_per_month: Some(10 * GIB),
                egress_bandwidth_bytes_per_second: Some(2 * MIB),
            },
            pro: Plan {
                stripe_price: None,
                price_cents: Some(2_000),
                model: true,
                requests_per_minute: 60,
                monthly_tokens: Some(20_000_000),
                max_concurrent_turns: 2,
                voice: true,
                storage_bytes: Some(50 * GIB),
                models: default_models(),
                max_tokens: DEFAULT_MAX_TOKENS,
                server_tools: false,
                egress_allow: default_egress_allow(),
                egress_bytes_per_month: Some(100 * GIB),
                egress_bandwidth_bytes_per_second: Some(20 * MIB),
            },
            enterprise: Plan {
                stripe_price: None,
                price_cents: None,
                model: true,
                requests_per_minute: 600,
                monthly_tokens: None,
                max_concurrent_turns: 8,
                voice: true,
                storage_bytes: None,
                models: default_models(),
                max_tokens: DEFAULT_MAX_TOKENS,
                server_tools: false,
                egress_allow: default_egress_allow(),
                egress_bytes_per_month: None,
                egress_bandwidth_bytes_per_second: None,
            },
        }
    }
}

/// The hosts every plan's sandboxes may reach unless configured otherwise: the
/// package registries of Python (pip) and Node (npm), and GitHub for `git clone`,
/// `pip install git+https://…` and release downloads. Not `*.github.com` nor
/// `raw.githubusercontent.com` (arbitrary content hosting); `npmjs.org`'s other
/// names are websites, not the registry.
pub const DEFAULT_EGRESS_ALLOW: &[&str] = &[
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "github.com",
    "codeload.github.com",
    "objects.githubusercontent.com",
    "release-assets.githubusercontent.com",
];

fn default_egress_allow() -> Vec<String> {
    DEFAULT_EGRESS_ALLOW
        .iter()
        .map(|h| (*h).to_string())
        .collect()
}

fn default_models() -> Vec<String> {
    DEFAULT_MODELS.iter().map(|m| (*m).to_string()).collect()
}

impl Plans {
    /// The plans of `JARVIS_PLANS` (inline JSON, or a file path) over the
    /// defaults, with the prices of `STRIPE_PRICE_PRO` / `STRIPE_PRICE_ENTERPRISE`.
    pub fn load(
        source: Option<&str>,
        price_pro: Option<&str>,
        price_enterprise: Option<&str>,
    ) -> Result<Self, PlansError> {
        let mut plans = match source.map(str::trim).filter(|s| !s.is_empty()) {
            None => Self::default(),
            Some(json) if json.starts_with('{') => Self::from_json(json)?,
            Some(path) => {
                let text = std::fs::read_to_string(Path::new(path)).map_err(|source| {
                    PlansError::Read {
                        path: path.to_string(),
                        source,
                    }
                })?;
                Self::from_json(&text)?
            }
        };
        if let Some(price) = price_pro {
            plans.pro.stripe_price = Some(price.to_string());
        }
        if let Some(price) = price_enterprise {
            plans.enterprise.stripe_price = Some(price.to_string());
        }
        plans.check()?;
        Ok(plans)
    }

    /// The defaults with the overrides of a JSON table (`{"pro": {…}, …}`).
    pub fn from_json(json: &str) -> Result<Self, PlansError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            #[serde(default)]
            free: PlanOverride,
            #[serde(default)]
            pro: PlanOverride,
            #[serde(default)]
            enterprise: PlanOverride,
        }
        let table: Table = serde_json::from_str(json)?;
        let mut plans = Self::default();
        for (tier, o) in [
            (Tier::Free, table.free),
            (Tier::Pro, table.pro),
            (Tier::Enterprise, table.enterprise),
        ] {
            let plan = plans.get_mut(tier);
            plan.stripe_price = o.stripe_price.or(plan.stripe_price.take());
            plan.price_cents = o.price_cents.unwrap_or(plan.price_cents);
            plan.model = o.model.unwrap_or(plan.model);
            plan.requests_per_minute = o.requests_per_minute.unwrap_or(plan.requests_per_minute);
            plan.monthly_tokens = o.monthly_tokens.unwrap_or(plan.monthly_tokens);
            plan.max_concurrent_turns = o.max_concurrent_turns.unwrap_or(plan.max_concurrent_turns);
            plan.voice = o.voice.unwrap_or(plan.voice);
            plan.storage_bytes = o.storage_bytes.unwrap_or(plan.storage_bytes);
            if let Some(models) = o.models {
                plan.models = models;
            }
            plan.max_tokens = o.max_tokens.unwrap_or(plan.max_tokens);
            plan.server_tools = o.server_tools.unwrap_or(plan.server_tools);
            if let Some(hosts) = o.egress_allow {
                plan.egress_allow = hosts;
            }
            plan.egress_bytes_per_month = o
                .egress_bytes_per_month
                .unwrap_or(plan.egress_bytes_per_month);
            plan.egress_bandwidth_bytes_per_second = o
                .egress_bandwidth_bytes_per_second
                .unwrap_or(plan.egress_bandwidth_bytes_per_second);
        }
        plans.check()?;
        Ok(plans)
    }

    fn check(&self) -> Result<(), PlansError> {
        if let Some(tier) = Tier::ALL
            .into_iter()
            .find(|t| self.get(*t).egress_bandwidth_bytes_per_second == Some(0))
        {
            return Err(PlansError::ZeroBandwidth(tier));
        }
        for (i, a) in Tier::ALL.into_iter().enumerate() {
            for b in Tier::ALL.into_iter().skip(i + 1) {
                if let (Some(x), Some(y)) = (&self.get(a).stripe_price, &self.get(b).stripe_price)
                    && x == y
                {
                    return Err(PlansError::DuplicatePrice(a, b));
                }
            }
        }
        Ok(())
    }

    /// What `tier` allows.
    pub fn get(&self, tier: Tier) -> &Plan {
        match tier {
            Tier::Free => &self.free,
            Tier::Pro => &self.pro,
            Tier::Enterprise => &self.enterprise,
        }
    }

    fn get_mut(&mut self, tier: Tier) -> &mut Plan {
        match tier {
            Tier::Free => &mut self.free,
            Tier::Pro => &mut self.pro,
            Tier::Enterprise => &mut self.enterprise,
        }
    }

    /// The tier a Stripe price subscribes to.
    pub fn tier_of_price(&self, price: &str) -> Option<Tier> {
        Tier::ALL
            .into_iter()
            .find(|t| self.get(*t).stripe_price.as_deref() == Some(price))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_tiers_allow_more_by_default() {
        let plans = Plans::default();
        let [free, pro, ent] = Tier::ALL.map(|t| plans.get(t).clone());
        assert!(free.requests_per_minute < pro.requests_per_minute);
        assert!(pro.requests_per_minute < ent.requests_per_minute);
        assert!(free.monthly_tokens < pro.monthly_tokens);
        assert_eq!(ent.monthly_tokens, None);
        assert!(free.max_concurrent_turns <= pro.max_concurrent_turns);
        assert!(free.storage_bytes < pro.storage_bytes);
        assert_eq!(ent.storage_bytes, None);
    }

    #[test]
    fn the_free_plan_calls_the_model_only_when_the_table_opens_it() {
        let plans = Plans::default();
        assert!(!plans.get(Tier::Free).model);
        assert!(plans.get(Tier::Pro).model && plans.get(Tier::Enterprise).model);
        let open = Plans::from_json(r#"{"free": {"model": true}}"#).expect("valid");
        assert!(open.get(Tier::Free).model);
        assert_eq!(open.get(Tier::Free).monthly_tokens, Some(1_000_000));
        assert!(Plans::from_json(r#"{"free": {"model": "yes"}}"#).is_err());
    }

    #[test]
    fn unknown_tier_names_get_the_free_plan() {
        assert_eq!(Tier::parse("pro"), Tier::Pro);
        assert_eq!(Tier::parse("platinum"), Tier::Free);
        assert_eq!(Tier::from_name("platinum"), None);
        assert_eq!(Tier::parse("enterprise").to_string(), "enterprise");
    }

    #[test]
    fn configuration_overrides_only_what_it_names() {
        let plans = Plans::load(
            Some(
                r#"{"pro": {"monthly_tokens": 500, "stripe_price": "price_file"},
                     "enterprise": {"monthly_tokens": 9, "storage_bytes": 7},
                     "free": {"monthly_tokens": null}}"#,
            ),
            None,
            Some("price_ent"),
        )
        .expect("valid");
        assert_eq!(plans.get(Tier::Pro).monthly_tokens, Some(500));
        assert_eq!(plans.get(Tier::Pro).requests_per_minute, 60);
        assert_eq!(plans.get(Tier::Free).monthly_tokens, None);
        assert_eq!(plans.get(Tier::Enterprise).monthly_tokens, Some(9));
        assert_eq!(plans.get(Tier::Enterprise).storage_bytes, Some(7));
        assert_eq!(plans.get(Tier::Pro).price_cents, Some(2_000));
        assert_eq!(plans.get(Tier::Enterprise).price_cents, None);
        let priced =
            Plans::from_json(r#"{"pro": {"price_cents": 1234}, "free": {"price_cents": null}}"#)
                .expect("valid");
        assert_eq!(priced.get(Tier::Pro).price_cents, Some(1234));
        assert_eq!(priced.get(Tier::Free).price_cents, None);
        assert_eq!(plans.get(Tier::Free).storage_bytes, Some(GIB));
        assert_eq!(plans.tier_of_price("price_file"), Some(Tier::Pro));
        assert_eq!(plans.tier_of_price("price_ent"), Some(Tier::Enterprise));
        assert_eq!(plans.tier_of_price("price_other"), None);

        let env_wins = Plans::load(
            Some(r#"{"pro": {"stripe_price": "price_file"}}"#),
            Some("price_env"),
            None,
        )
        .expect("valid");
        assert_eq!(env_wins.tier_of_price("price_env"), Some(Tier::Pro));
    }

    #[test]
    fn model_lists_match_exactly_or_by_prefix() {
        let plans = Plans::from_json(
            r#"{"pro": {"models": ["claude-haiku-*", "claude-sonnet-5-5"], "max_tokens": 8000,
                        "server_tools": true}}"#,
        )
        .expect("valid");
        let pro = plans.get(Tier::Pro);
        assert!(pro.allows_model("claude-haiku-5-5"));
        assert!(pro.allows_model("claude-sonnet-5-5"));
        assert!(!pro.allows_model("claude-sonnet-5-5-20270101"));
        assert!(!pro.allows_model("claude-opus-5-5"));
        assert_eq!((pro.max_tokens, pro.server_tools), (8000, true));
        let free = plans.get(Tier::Free);
        assert!(
            free.allows_model("claude-opus-5-5"),
            "the CLI's default model"
        );
        assert!(!free.allows_model("claude-opus-5-5x"));
        assert_eq!(free.max_tokens, DEFAULT_MAX_TOKENS);
        assert!(!free.server_tools, "server tools are off by default");
    }

    #[test]
    fn egress_bandwidth_defaults_per_tier_and_null_is_unlimited() {
        let plans = Plans::default();
        let rate = |p: &Plans, t| p.get(t).egress_bandwidth_bytes_per_second;
        assert_eq!(rate(&plans, Tier::Free), Some(2 * MIB));
        assert!(rate(&plans, Tier::Free) < rate(&plans, Tier::Pro));
        assert_eq!(rate(&plans, Tier::Enterprise), None);
        let set = Plans::from_json(
            r#"{"free": {"egress_bandwidth_bytes_per_second": 1000},
                "pro": {"egress_bandwidth_bytes_per_second": null}}"#,
        )
        .expect("valid");
        assert_eq!(rate(&set, Tier::Free), Some(1000));
        assert_eq!(rate(&set, Tier::Pro), None);
        assert!(matches!(
            Plans::from_json(r#"{"pro": {"egress_bandwidth_bytes_per_second": 0}}"#),
            Err(PlansError::ZeroBandwidth(Tier::Pro))
        ));
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(Plans::from_json(r#"{"gold": {}}"#).is_err());
        assert!(Plans::from_json(r#"{"pro": {"tokens": 1}}"#).is_err());
        assert!(matches!(
            Plans::load(None, Some("price_x"), Some("price_x")),
            Err(PlansError::DuplicatePrice(Tier::Pro, Tier::Enterprise))
        ));
        assert!(matches!(
            Plans::load(Some("/nonexistent/plans.json"), None, None),
            Err(PlansError::Read { .. })
        ));
    }

    #[test]
    fn egress_allow_defaults_to_the_registries_and_can_be_replaced() {
        let plans =
            Plans::from_json(r#"{"pro": {"egress_allow": ["*.example.com"]}}"#).expect("plans");
        assert!(
            plans
                .get(Tier::Free)
                .egress_allow
                .iter()
                .any(|h| h == "pypi.org")
        );
        assert_eq!(
            plans.get(Tier::Pro).egress_allow,
            vec!["*.example.com".to_string()]
        );
        for host in DEFAULT_EGRESS_ALLOW {
            assert!(
                crate::egress::policy::Pattern::parse(host).is_ok(),
                "{host}"
            );
        }
    }
}
