//! Random search: independent uniform points. It is the baseline every other optimizer has to
//! beat at equal budget, and with many parallel workers and few evaluations it is often not far
//! behind.

use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::{OptimError, Optimizer, Told, check_dim_batch};
use crate::rng::{Rng, derive_seed};

/// Uniform points in `[0, 1)^dim`, `batch` per ask; the values told are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomSearch {
    dim: usize,
    batch: usize,
    rng: Rng,
}

impl RandomSearch {
    /// A random search over `dim` coordinates asking `batch` points at a time, its stream drawn
    /// from `seed`.
    pub fn new(dim: usize, batch: usize, seed: u64) -> Result<RandomSearch, OptimError> {
        check_dim_batch(dim, batch)?;
        Ok(RandomSearch {
            dim,
            batch,
            rng: Rng::new(derive_seed(seed, "optim/random", 0)),
        })
    }

    /// The number of coordinates of each point.
    pub fn dim(&self) -> usize {
        self.dim
    }
}

impl Optimizer for RandomSearch {
    fn ask(&mut self) -> Vec<Vec<f64>> {
        (0..self.batch)
            .map(|_| (0..self.dim).map(|_| self.rng.random::<f64>()).collect())
            .collect()
    }

    fn tell(&mut self, _results: &[Told]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_batches_resume_after_json_and_reject_empty_shapes() {
        let mut a = RandomSearch::new(3, 4, 9).unwrap();
        let first = a.ask();
        assert_eq!(first.len(), 4);
        assert!(first.iter().all(|p| p.len() == 3));
        assert!(first.iter().flatten().all(|x| (0.0..1.0).contains(x)));
        let json = serde_json::to_string(&a).unwrap();
        let mut b: RandomSearch = serde_json::from_str(&json).unwrap();
        assert_eq!(a.ask(), b.ask());
        assert_ne!(first, RandomSearch::new(3, 4, 10).unwrap().ask());
        let mean = {
            let mut r = RandomSearch::new(1, 10_000, 1).unwrap();
            r.ask().iter().map(|p| p[0]).sum::<f64>() / 10_000.0
        };
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let err = RandomSearch::new(0, 4, 9).unwrap_err();
        assert!(err.to_string().contains("`dim`"), "{err}");
        assert!(
            RandomSearch::new(2, 0, 9)
                .unwrap_err()
                .to_string()
                .contains("`batch`")
        );
    }
}
