//! Overhead of Gaussian-process Bayesian optimization: the time of a tell (the hyperparameter
//! fit: L-BFGS on the log marginal likelihood from the previous fit, and random restarts when
//! they are due) and of an ask of one point (log-EI maximization), from 100, 300 and 500
//! observations in 48 dimensions, single-threaded, on a smooth synthetic objective with a little
//! noise.
//!
//! "cold tell" tells all `n` observations at once (the first fit, from the priors' means and
//! random starts). Then, as a study with batches of one does, each trial is asked, evaluated and
//! told ("warm tell": the refit from the previous fit), for `restart_growth · n` trials: the
//! window holds exactly one tell with the random restarts, so its mean is what a study pays per
//! trial at that size; the slowest trial of the window is shown too.
//!
//! `cargo bench --bench gp` (release; under `cargo test` it only runs a tiny smoke check).
//! Environment: `MERGESEARCH_BENCH_GP_DIM` (default 48), `MERGESEARCH_BENCH_GP_SIZES`
//! (comma-separated, default `100,300,500`).

use rand::Rng as _;
use rand_distr::StandardNormal;
use std::time::Instant;

use mergesearch::optim::{GaussianProcessBo, GpOptions, Optimizer, Told};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A smooth function of every coordinate, with a few strong ones, plus noise.
fn objective(p: &[f64], noise: f64) -> f64 {
    let smooth: f64 = p
        .iter()
        .enumerate()
        .map(|(l, v)| {
            let w = if l < 4 { 4.0 } else { 0.2 };
            w * ((v - 0.3 - 0.05 * (l % 7) as f64).powi(2) + 0.1 * (5.0 * v).sin())
        })
        .sum();
    smooth + noise
}

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: then only a small smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let dim: usize = if smoke {
        4
    } else {
        env_or("MERGESEARCH_BENCH_GP_DIM", 48)
    };
    let sizes: Vec<usize> = if smoke {
        vec![12, 24]
    } else {
        std::env::var("MERGESEARCH_BENCH_GP_SIZES")
            .ok()
            .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![100, 300, 500])
    };
    let options = GpOptions::default();
    println!(
        "GP-BO, {dim} dimensions, batch 1, restarts {} (when the observations grew by {}), \
         L-BFGS iterations {} (hyperparameters), {} candidates, {} refined",
        options.restarts,
        options.restart_growth,
        options.max_iters,
        options.candidates,
        options.refine
    );
    println!(
        "{:>12} {:>14} {:>9} {:>15} {:>10} {:>19} {:>17}",
        "observations",
        "cold tell (s)",
        "trials",
        "warm tell (s)",
        "ask (s)",
        "warm tell+ask (s)",
        "slowest trial (s)"
    );
    for &n in &sizes {
        let mut rng = mergesearch::rng::Rng::new(n as u64);
        let mut bo = GaussianProcessBo::new(dim, 1, 7, options.clone()).expect("optimizer");
        let sample = |rng: &mut mergesearch::rng::Rng| {
            let p: Vec<f64> = (0..dim).map(|_| rng.random::<f64>()).collect();
            let v = objective(&p, 0.05 * rng.sample::<f64, _>(StandardNormal));
            Told::scalar(p, Some(v))
        };
        let told: Vec<Told> = (0..n).map(|_| sample(&mut rng)).collect();
        let t = Instant::now();
        bo.tell(&told);
        let cold = t.elapsed().as_secs_f64();
        // Use up the initial design so that every timed ask is a model-based proposal.
        for _ in 0..bo.initial() {
            bo.ask();
        }
        let trials = ((n as f64 * options.restart_growth).ceil() as usize).max(1);
        let (mut tells, mut asks, mut slowest) = (0.0, 0.0, 0.0f64);
        for _ in 0..trials {
            let t = Instant::now();
            let point = bo.ask();
            let ask = t.elapsed().as_secs_f64();
            assert_eq!(point.len(), 1);
            let noise = 0.05 * rng.sample::<f64, _>(StandardNormal);
            let value = objective(&point[0], noise);
            let t = Instant::now();
            bo.tell(&[Told::scalar(point[0].clone(), Some(value))]);
            let tell = t.elapsed().as_secs_f64();
            tells += tell;
            asks += ask;
            slowest = slowest.max(tell + ask);
        }
        let k = trials as f64;
        println!(
            "{:>12} {:>14.3} {:>9} {:>15.3} {:>10.3} {:>19.3} {:>17.3}",
            n,
            cold,
            trials,
            tells / k,
            asks / k,
            (tells + asks) / k,
            slowest
        );
    }
}
