//! Kubernetes resource quantities (`500m`, `2Gi`, `1e3`): the grammar the apiserver's
//! `resource.ParseQuantity` accepts, as a checker for the operator's own validation
//! and as the OpenAPI pattern the CRD schema carries. k8s-openapi's `Quantity` is an
//! unchecked string, so without this a bad value only shows when a Pod apply fails.
//!
//! The grammar (from `k8s.io/apimachinery/pkg/api/resource`):
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <signedNumber>    ::= <number> | <sign><number>
//! <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
//! <decimalExponent> ::= "e" <sign?><digits> | "E" <sign?><digits>
//! ```

/// The grammar above as an OpenAPI (RE2-compatible) pattern, for the CRD schema.
pub const QUANTITY_PATTERN: &str =
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$";

/// Why a text is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Empty text.
    #[error("a quantity must not be empty")]
    Empty,
    /// No digits where the number should be.
    #[error("a quantity must start with a number")]
    NoNumber,
    /// What follows the number is no known suffix.
    #[error("unknown suffix {0:?} (use Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or e<exponent>)")]
    BadSuffix(String),
}

/// Check `text` against the quantity grammar.
pub fn check(text: &str) -> Result<(), QuantityError> {
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    let rest = text.strip_prefix(['+', '-']).unwrap_or(text);
    let integer = rest.bytes().take_while(u8::is_ascii_digit).count();
    let mut rest = &rest[integer..];
    let mut fraction = 0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        fraction = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        rest = &after_dot[fraction..];
    }
    if integer + fraction == 0 {
        return Err(QuantityError::NoNumber);
    }
    if is_suffix(rest) {
        Ok(())
    } else {
        Err(QuantityError::BadSuffix(rest.to_owned()))
    }
}

/// Whether `text` is a quantity (see [`check`]).
pub fn is_valid(text: &str) -> bool {
    check(text).is_ok()
}

fn is_suffix(suffix: &str) -> bool {
    const SI: [&str; 16] = [
        "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    if SI.contains(&suffix) {
        return true;
    }
    let Some(exponent) = suffix.strip_prefix(['e', 'E']) else {
        return false;
    };
    let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A clap value parser for quantity options: refuses a bad default at startup.
pub fn parse_arg(text: &str) -> Result<String, String> {
    check(text)
        .map(|()| text.to_owned())
        .map_err(|e| format!("{text:?} is not a Kubernetes quantity: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[&str] = &[
        "0",
        "1",
        "2",
        "+1",
        "-1",
        "1.5",
        "1.",
        ".5",
        "500m",
        "100n",
        "3u",
        "2k",
        "1M",
        "1G",
        "1T",
        "1P",
        "1E",
        "512Ki",
        "256Mi",
        "2Gi",
        "1Ti",
        "1Pi",
        "1Ei",
        "1e3",
        "1E3",
        "1e-3",
        "1E+3",
        "0.5Gi",
        "123456789",
    ];

    const BAD: &[&str] = &[
        "", "lots", "Gi", "1GB", "1gi", "1 Gi", " 1Gi", "1Gi ", "1.2.3", ".", "+", "-Mi", "1e",
        "1e+", "1e1.5", "1K", "1mi", "1Gii", "1KiB", "0x10", "1,5",
    ];

    #[test]
    fn kubernetes_quantities_are_accepted() {
        for text in GOOD {
            assert_eq!(check(text), Ok(()), "{text:?} is a quantity");
        }
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for text in BAD {
            assert!(check(text).is_err(), "{text:?} is not a quantity");
        }
        assert_eq!(check("lots"), Err(QuantityError::NoNumber));
        assert_eq!(check("1GB"), Err(QuantityError::BadSuffix("GB".to_owned())));
    }

    /// The schema pattern and the checker agree on every sample.
    #[test]
    fn schema_pattern_matches_the_checker() {
        let schema = serde_json::json!({ "type": "string", "pattern": QUANTITY_PATTERN });
        let validator = jsonschema::validator_for(&schema).expect("pattern compiles");
        for text in GOOD.iter().chain(BAD) {
            assert_eq!(
                validator.is_valid(&serde_json::json!(text)),
                is_valid(text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn config_parser_names_the_bad_value() {
        assert_eq!(parse_arg("1Gi"), Ok("1Gi".to_owned()));
        let error = parse_arg("lots").expect_err("refused");
        assert!(
            error.contains("\"lots\" is not a Kubernetes quantity"),
            "{error}"
        );
    }
}
