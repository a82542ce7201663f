//! One searched quantity's type, bounds and scale, and the map between its values and the unit
//! interval every optimizer works in.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a real parameter's range maps onto `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// Evenly.
    #[default]
    Linear,
    /// Evenly in the logarithm (the bounds must be positive).
    Log,
}

/// A parameter's type and range.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// A real number in `[low, high]`.
    Real {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
        /// Linear or log.
        scale: Scale,
    },
    /// An integer in `[low, high]`.
    Int {
        /// Lower bound.
        low: i64,
        /// Upper bound.
        high: i64,
    },
    /// One of a list of values.
    Categorical {
        /// The choices, in order.
        values: Vec<Value>,
    },
}

impl Domain {
    /// The value at `u` in `[0, 1]` (clamped): real values interpolate (in the log for log
    /// scale), integers and choices take equal-width cells.
    pub fn decode(&self, u: f64) -> Value {
        let u = u.clamp(0.0, 1.0);
        match self {
            Domain::Real { low, high, scale } => Value::from(match scale {
                Scale::Linear => low + u * (high - low),
                Scale::Log => (low.ln() + u * (high.ln() - low.ln())).exp(),
            }),
            Domain::Int { low, high } => {
                Value::from(low + cell(u, (high - low + 1) as usize) as i64)
            }
            Domain::Categorical { values } => values[cell(u, values.len())].clone(),
        }
    }

    /// The point in `[0, 1]` that decodes to `value` (a cell's centre for integers and choices),
    /// or why `value` is not in the domain.
    pub fn encode(&self, value: &Value) -> Result<f64, String> {
        match self {
            Domain::Real { low, high, scale } => {
                let v = value
                    .as_f64()
                    .ok_or_else(|| format!("expected a number, got {value}"))?;
                if !(*low..=*high).contains(&v) {
                    return Err(format!("{v} is outside [{low}, {high}]"));
                }
                Ok(if high == low {
                    0.5
                } else {
                    match scale {
                        Scale::Linear => (v - low) / (high - low),
                        Scale::Log => (v.ln() - low.ln()) / (high.ln() - low.ln()),
                    }
                })
            }
            Domain::Int { low, high } => {
                let v = value
                    .as_i64()
                    .ok_or_else(|| format!("expected an integer, got {value}"))?;
                if !(*low..=*high).contains(&v) {
                    return Err(format!("{v} is outside [{low}, {high}]"));
                }
                Ok(((v - low) as f64 + 0.5) / (high - low + 1) as f64)
            }
            Domain::Categorical { values } => {
                let i = values.iter().position(|c| c == value).ok_or_else(|| {
                    format!("{value} is not one of {}", Value::from(values.clone()))
                })?;
                Ok((i as f64 + 0.5) / values.len() as f64)
            }
        }
    }
}

/// The cell of `u` among `n` equal cells of `[0, 1]`.
fn cell(u: f64, n: usize) -> usize {
    ((u * n as f64) as usize).min(n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_inverts_encode_for_every_domain() {
        let real = Domain::Real {
            low: 1e-4,
            high: 1e-1,
            scale: Scale::Log,
        };
        let u = real.encode(&Value::from(1e-2)).unwrap();
        assert!((real.decode(u).as_f64().unwrap() - 1e-2).abs() < 1e-12);
        let int = Domain::Int { low: 2, high: 5 };
        for v in 2..=5 {
            assert_eq!(
                int.decode(int.encode(&Value::from(v)).unwrap()),
                Value::from(v)
            );
        }
        assert_eq!(int.decode(1.0), Value::from(5));
        let choice = Domain::Categorical {
            values: vec!["a".into(), "b".into(), "c".into()],
        };
        assert_eq!(choice.decode(0.0), Value::from("a"));
        assert_eq!(choice.decode(0.5), Value::from("b"));
        assert_eq!(choice.decode(1.0), Value::from("c"));
        assert!(
            choice
                .encode(&Value::from("d"))
                .unwrap_err()
                .contains("not one of")
        );
        assert!(
            int.encode(&Value::from(9))
                .unwrap_err()
                .contains("outside [2, 5]")
        );
    }
}
