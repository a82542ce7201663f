//! Benchmark subsets: a few items with weights whose weighted score estimates the whole split's
//! score, so that a search spends a fraction of the evaluation cost per candidate.
//!
//! * `random`: items drawn uniformly without replacement, equal weights.
//! * `stratified`: the same number of items from each class (as near as the size allows), each
//!   class weighted by its share of the split.
//! * `anchors`: the tinyBenchmarks / MERGE^3 idea. Each item is described by how a panel of
//!   reference models answers it (here: the probability each gives the true label); the items
//!   are clustered into `size` clusters by k-means, the item nearest each centre is the anchor,
//!   and its weight is its cluster's share of the split. Items that the panel answers alike
//!   behave alike for merges of the panel's models too, so one stands for many.

use rand::Rng as _;
use rand::seq::SliceRandom as _;
use serde::{Deserialize, Serialize};

use crate::rng::{Rng, derive_seed};

/// How subset items are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Uniformly at random.
    Random,
    /// Equal numbers per class.
    Stratified,
    /// Representative items chosen from a panel of models' answers, with weights.
    Anchors,
}

impl Strategy {
    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Random => "random",
            Strategy::Stratified => "stratified",
            Strategy::Anchors => "anchors",
        }
    }
}

/// A subset as declared in a config: `size` items per task, drawn with `seed` by `strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsetSpec {
    /// Items per task (the whole split when it has fewer).
    pub size: usize,
    /// Seed of the draw.
    #[serde(default)]
    pub seed: u64,
    /// How the items are chosen.
    #[serde(default = "default_strategy")]
    pub strategy: Strategy,
}

fn default_strategy() -> Strategy {
    Strategy::Stratified
}

/// Chosen items of one split and the weight of each (the weights sum to 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subset {
    /// Item indices, ascending.
    pub items: Vec<usize>,
    /// Weight of each item.
    pub weights: Vec<f64>,
}

impl Subset {
    /// Every one of `n` items, equally weighted.
    pub fn all(n: usize) -> Subset {
        Subset {
            items: (0..n).collect(),
            weights: vec![1.0 / n.max(1) as f64; n],
        }
    }

    /// `size` of `n` items uniformly at random.
    pub fn random(n: usize, size: usize, rng: &mut Rng) -> Subset {
        if size >= n {
            return Subset::all(n);
        }
        let mut items = sample_without_replacement(n, size, rng);
        items.sort_unstable();
        Subset {
            weights: vec![1.0 / size as f64; size],
            items,
        }
    }

    /// `size` items with the classes as evenly represented as the split allows, each class's
    /// items weighted so that the class keeps its share of the split.
    ///
    /// When `size` is not a multiple of the number of classes, the extra items go to classes in
    /// an order drawn from `rng`; a class with too few items gives its remainder to the others.
    pub fn stratified(labels: &[u32], size: usize, rng: &mut Rng) -> Subset {
        let n = labels.len();
        if size >= n {
            return Subset::all(n);
        }
        let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); classes];
        for (i, &label) in labels.iter().enumerate() {
            members[label as usize].push(i);
        }
        let quota = class_quotas(&members, size, rng);
        let mut items = Vec::with_capacity(size);
        let mut weights = Vec::with_capacity(size);
        for (class, take) in members.iter().zip(quota) {
            if take == 0 {
                continue;
            }
            let share = class.len() as f64 / n as f64;
            for pick in sample_without_replacement(class.len(), take, rng) {
                items.push(class[pick]);
                weights.push(share / take as f64);
            }
        }
        sorted(items, weights)
    }

    /// `size` anchors among the items described by `features` (one row per item: how each
    /// reference model answers it), weighted by the share of items each stands for.
    pub fn anchors(features: &[Vec<f32>], size: usize, rng: &mut Rng) -> Subset {
        let n = features.len();
        if size >= n {
            return Subset::all(n);
        }
        let centres = kmeans(features, size, rng);
        let assignment: Vec<usize> = features.iter().map(|f| nearest(f, &centres).0).collect();
        let mut items = Vec::with_capacity(size);
        let mut weights = Vec::with_capacity(size);
        for (c, centre) in centres.iter().enumerate() {
            let members: Vec<usize> = (0..n).filter(|&i| assignment[i] == c).collect();
            let Some(&anchor) = members.iter().min_by(|&&a, &&b| {
                distance(&features[a], centre).total_cmp(&distance(&features[b], centre))
            }) else {
                continue;
            };
            items.push(anchor);
            weights.push(members.len() as f64 / n as f64);
        }
        sorted(items, weights)
    }

    /// Draws the subset `spec` describes for one task: `labels` of its items (for
    /// `stratified`) and `features` (for `anchors`, computed only when asked for).
    pub fn draw(
        spec: &SubsetSpec,
        task: &str,
        labels: &[u32],
        features: impl FnOnce() -> Vec<Vec<f32>>,
    ) -> Subset {
        let mut rng = Rng::new(derive_seed(spec.seed, &format!("subset/{task}"), 0));
        match spec.strategy {
            Strategy::Random => Subset::random(labels.len(), spec.size, &mut rng),
            Strategy::Stratified => Subset::stratified(labels, spec.size, &mut rng),
            Strategy::Anchors => Subset::anchors(&features(), spec.size, &mut rng),
        }
    }

    /// Items in the subset.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the subset holds no item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The weighted mean of per-item `values` (given for the subset's items, in order), and its
    /// standard error as a weighted sample mean: `sqrt(m / (m - 1) * sum w_i^2 (x_i - mean)^2)`
    /// for `m` items (`None` for fewer than two).
    pub fn estimate(&self, values: &[f64]) -> (f64, Option<f64>) {
        assert_eq!(values.len(), self.len(), "one value per subset item");
        let mean: f64 = self.weights.iter().zip(values).map(|(w, x)| w * x).sum();
        let m = values.len();
        if m < 2 {
            return (mean, None);
        }
        let spread: f64 = self
            .weights
            .iter()
            .zip(values)
            .map(|(w, x)| (w * (x - mean)).powi(2))
            .sum();
        (mean, Some((spread * m as f64 / (m - 1) as f64).sqrt()))
    }
}

/// Items per class: `size / classes` each, the remainder one by one to classes in a random
/// order, and whatever a small class cannot give passed on to classes that still have items.
fn class_quotas(members: &[Vec<usize>], size: usize, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.shuffle(rng);
    let mut quota = vec![0usize; members.len()];
    let mut left = size;
    while left > 0 {
        let open: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&c| quota[c] < members[c].len())
            .collect();
        if open.is_empty() {
            break;
        }
        let each = (left / open.len()).max(1);
        for c in open {
            let take = each.min(members[c].len() - quota[c]).min(left);
            quota[c] += take;
            left -= take;
            if left == 0 {
                break;
            }
        }
    }
    quota
}

fn sorted(items: Vec<usize>, weights: Vec<f64>) -> Subset {
    let mut pairs: Vec<(usize, f64)> = items.into_iter().zip(weights).collect();
    pairs.sort_unstable_by_key(|&(i, _)| i);
    let (items, weights) = pairs.into_iter().unzip();
    Subset { items, weights }
}

/// `k` distinct indices below `n` in random order (a partial Fisher–Yates shuffle).
fn sample_without_replacement(n: usize, k: usize, rng: &mut Rng) -> Vec<usize> {
    let mut pool: Vec<usize> = (0..n).collect();
    for i in 0..k.min(n) {
        let j = i + rng.random_range(0..n - i);
        pool.swap(i, j);
    }
    pool.truncate(k.min(n));
    pool
}

fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum()
}

fn nearest(point: &[f32], centres: &[Vec<f32>]) -> (usize, f64) {
    centres
        .iter()
        .enumerate()
        .map(|(c, centre)| (c, distance(point, centre)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("at least one centre")
}

/// Lloyd's k-means from a k-means++ start: `k` centres of `points`.
fn kmeans(points: &[Vec<f32>], k: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    const ITERATIONS: usize = 25;
    let mut centres = vec![points[rng.random_range(0..points.len())].clone()];
    let mut closest: Vec<f64> = points.iter().map(|p| distance(p, &centres[0])).collect();
    while centres.len() < k {
        let total: f64 = closest.iter().sum();
        let next = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            closest
                .iter()
                .position(|&d| {
                    target -= d;
                    target < 0.0
                })
                .unwrap_or(points.len() - 1)
        } else {
            rng.random_range(0..points.len())
        };
        centres.push(points[next].clone());
        for (d, p) in closest.iter_mut().zip(points) {
            *d = d.min(distance(p, &centres[centres.len() - 1]));
        }
    }
    let dims = points[0].len();
    for _ in 0..ITERATIONS {
        let mut sums = vec![vec![0f64; dims]; k];
        let mut counts = vec![0usize; k];
        for p in points {
            let c = nearest(p, &centres).0;
            counts[c] += 1;
            for (s, &x) in sums[c].iter_mut().zip(p) {
                *s += f64::from(x);
            }
        }
        let mut moved = false;
        for c in 0..k {
            if counts[c] == 0 {
                continue;
            }
            let updated: Vec<f32> = sums[c]
                .iter()
                .map(|s| (s / counts[c] as f64) as f32)
                .collect();
            moved |= updated != centres[c];
            centres[c] = updated;
        }
        if !moved {
            break;
        }
    }
    centres
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_spread_the_remainder_and_skip_exhausted_classes() {
        let members = vec![vec![0, 1, 2, 3, 4], vec![5], vec![6, 7, 8, 9]];
        let quota = class_quotas(&members, 7, &mut Rng::new(1));
        assert_eq!(quota.iter().sum::<usize>(), 7);
        assert_eq!(quota[1], 1);
        assert!(quota[0] >= 3 && quota[2] >= 3, "{quota:?}");
    }

    #[test]
    fn kmeans_finds_well_separated_clusters() {
        let mut points = Vec::new();
        for centre in [0.0f32, 10.0, 20.0] {
            for j in 0..5 {
                points.push(vec![centre + j as f32 * 0.1]);
            }
        }
        let mut centres = kmeans(&points, 3, &mut Rng::new(2));
        centres.sort_by(|a, b| a[0].total_cmp(&b[0]));
        for (c, expected) in centres.iter().zip([0.2f32, 10.2, 20.2]) {
            assert!((c[0] - expected).abs() < 1e-4, "{centres:?}");
        }
    }
}
