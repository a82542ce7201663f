//! Bit-exact serde for `f64` state.
//!
//! A resumed optimizer must ask exactly the points an uninterrupted one would, so its floating-
//! point state must survive JSON bit for bit, and JSON numbers do not promise that: `serde_json`
//! parses floats with a fast, not always correctly rounded, algorithm unless its
//! `float_roundtrip` feature is on, and it has no spelling for infinities or NaN at all. Here each
//! `f64` is written as a string in Rust's shortest round-trip form (`"0.1"`, `"1e-300"`, `"inf"`)
//! and read back with `str::parse`, which is correctly rounded.

use serde::{Deserialize, Deserializer, Serializer};

fn parse<E: serde::de::Error>(text: &str) -> Result<f64, E> {
    text.parse::<f64>()
        .map_err(|_| E::custom(format!("expected a float as a string, got {text:?}")))
}

/// `#[serde(with = "exact")]` for one `f64`.
pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{value:?}"))
}

/// `#[serde(with = "exact")]` for one `f64`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text)
}

/// `#[serde(with = "exact::vec")]` for a `Vec<f64>`.
pub mod vec {
    use super::*;
    use serde::ser::SerializeSeq;

    /// Writes each value as its shortest round-trip string.
    pub fn serialize<S: Serializer>(values: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(values.len()))?;
        for value in values {
            seq.serialize_element(&format!("{value:?}"))?;
        }
        seq.end()
    }

    /// Reads the strings back, bit for bit.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f64>, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        texts.iter().map(|text| parse::<D::Error>(text)).collect()
    }
}

#[cfg(test)]
mod tests {
    use rand::RngCore as _;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Both {
        #[serde(with = "super")]
        one: f64,
        #[serde(with = "super::vec")]
        many: Vec<f64>,
    }

    #[test]
    fn awkward_floats_survive_json_bit_for_bit() {
        let mut rng = crate::rng::Rng::new(5);
        let mut many: Vec<f64> = (0..2000)
            .map(|_| f64::from_bits(rng.next_u64()))
            .filter(|x| !x.is_nan())
            .collect();
        many.extend([
            0.1 + 0.2,
            -0.0,
            5e-324,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ]);
        let both = Both {
            one: 1.0 / 3.0,
            many,
        };
        let json = serde_json::to_string(&both).unwrap();
        let back: Both = serde_json::from_str(&json).unwrap();
        assert_eq!(back.one.to_bits(), both.one.to_bits());
        assert!(
            back.many
                .iter()
                .zip(&both.many)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        let nan: Both = serde_json::from_str(r#"{"one":"NaN","many":[]}"#).unwrap();
        assert!(nan.one.is_nan());
        let err = serde_json::from_str::<Both>(r#"{"one":"x","many":[]}"#).unwrap_err();
        assert!(err.to_string().contains("expected a float"), "{err}");
    }
}
