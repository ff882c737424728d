//! What a model call costs, for `usage.cost_micros` (millionths of a US dollar).
//!
//! A small built-in table of Anthropic's list prices by model family, in US
//! dollars per million tokens:
//!
//! | family            | input | output | cache write (5 min) | cache read |
//! |-------------------|-------|--------|---------------------|------------|
//! | `opus`            | 5     | 25     | 6.25                | 0.50       |
//! | `sonnet`          | 3     | 15     | 3.75                | 0.30       |
//! | `haiku`           | 1     | 5      | 1.25                | 0.10       |
//! | anything else     | priced as `opus`, so an unknown model is never undercharged |
//!
//! Cache writes cost 1.25× and cache reads 0.1× the input price. Older
//! generations with other prices are not told apart. Costs round up to a micro-dollar.
//! A web search (a server tool, only on plans with `server_tools`) costs
//! [`WEB_SEARCH_MICROS`] on top of its tokens.

/// The fee of one web search: US$10 per thousand.
pub const WEB_SEARCH_MICROS: u64 = 10_000;

/// Token counts of one model call, as the API reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Uncached input tokens.
    pub input: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read: u64,
    /// Output tokens.
    pub output: u64,
}

impl Tokens {
    /// Every input token, cached or not (what `usage.input_tokens` records).
    pub fn all_input(&self) -> u64 {
        self.input
            .saturating_add(self.cache_write)
            .saturating_add(self.cache_read)
    }
}

/// Prices in nano-dollars per token (= US dollars per million tokens × 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Price {
    input: u64,
    output: u64,
}

/// Model family (a substring of the model id) → price. Checked in order.
const PRICES: &[(&str, Price)] = &[
    (
        "opus",
        Price {
            input: 5_000,
            output: 25_000,
        },
    ),
    (
        "sonnet",
        Price {
            input: 3_000,
            output: 15_000,
        },
    ),
    (
        "haiku",
        Price {
            input: 1_000,
            output: 5_000,
        },
    ),
];

fn price_of(model: &str) -> Price {
    PRICES
        .iter()
        .find(|(family, _)| model.contains(family))
        .map_or(PRICES[0].1, |(_, price)| *price)
}

/// The cost of `tokens` on `model`, in micro-dollars (rounded up).
pub fn cost_micros(model: &str, tokens: Tokens) -> u64 {
    let price = price_of(model);
    let nanos = u128::from(tokens.input) * u128::from(price.input)
        + u128::from(tokens.cache_write) * u128::from(price.input) * 5 / 4
        + u128::from(tokens.cache_read) * u128::from(price.input) / 10
        + u128::from(tokens.output) * u128::from(price.output);
    u64::try_from(nanos.div_ceil(1000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_tokens_cost_the_list_price() {
        let million = |input, output| Tokens {
            input,
            output,
            ..Tokens::default()
        };
        assert_eq!(
            cost_micros("claude-sonnet-4-5", million(1_000_000, 0)),
            3_000_000
        );
        assert_eq!(
            cost_micros("claude-haiku-4-5", million(0, 1_000_000)),
            5_000_000
        );
        assert_eq!(
            cost_micros("claude-opus-5-5", million(1_000_000, 1_000_000)),
            30_000_000
        );
    }

    #[test]
    fn cache_tokens_cost_their_fraction_of_input() {
        let t = Tokens {
            cache_write: 1_000_000,
            cache_read: 1_000_000,
            ..Tokens::default()
        };
        assert_eq!(cost_micros("claude-sonnet-4", t), 3_750_000 + 300_000);
        assert_eq!(t.all_input(), 2_000_000);
    }

    #[test]
    fn unknown_models_are_priced_as_the_dearest_and_costs_round_up() {
        let one = Tokens {
            input: 1,
            ..Tokens::default()
        };
        assert_eq!(cost_micros("mystery-model", one), 5);
        assert_eq!(cost_micros("claude-haiku", one), 1);
        assert_eq!(cost_micros("anything", Tokens::default()), 0);
    }
}
