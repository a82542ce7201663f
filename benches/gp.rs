//! Overhead of Gaussian-process Bayesian optimization: the time of a tell (the hyperparameter
//! fit: L-BFGS on the log marginal likelihood from the previous fit and random restarts) and of
//! an ask of one point (log-EI maximization), after 100, 300 and 500 observations in 48
//! dimensions, single-threaded, on a smooth synthetic objective with a little noise.
//!
//! "cold tell" tells all `n` observations at once (the first fit, from the priors' means and
//! random starts); "warm tell" then tells one more (the refit a study pays after each trial,
//! starting from the previous fit); "ask" proposes the next point.
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
        "GP-BO, {dim} dimensions, batch 1, restarts {}, L-BFGS iterations {} (hyperparameters), \
         {} candidates, {} refined",
        options.restarts, options.max_iters, options.candidates, options.refine
    );
    println!(
        "{:>12} {:>14} {:>14} {:>10} {:>16}",
        "observations", "cold tell (s)", "warm tell (s)", "ask (s)", "warm tell+ask (s)"
    );
    for &n in &sizes {
        let mut rng = mergesearch::rng::Rng::new(n as u64);
        let mut bo = GaussianProcessBo::new(dim, 1, 7, options.clone()).expect("optimizer");
        let told: Vec<Told> = (0..n)
            .map(|_| {
                let p: Vec<f64> = (0..dim).map(|_| rng.random::<f64>()).collect();
                let v = objective(&p, 0.05 * rng.sample::<f64, _>(StandardNormal));
                Told::scalar(p, Some(v))
            })
            .collect();
        let t = Instant::now();
        bo.tell(&told);
        let cold = t.elapsed().as_secs_f64();
        let extra: Vec<f64> = (0..dim).map(|_| rng.random::<f64>()).collect();
        let value = objective(&extra, 0.05 * rng.sample::<f64, _>(StandardNormal));
        let t = Instant::now();
        bo.tell(&[Told::scalar(extra, Some(value))]);
        let warm = t.elapsed().as_secs_f64();
        // Use up the initial design so that the timed ask is a model-based proposal.
        let mut design_left = bo.initial();
        while design_left > 0 {
            bo.ask();
            design_left -= 1;
        }
        let t = Instant::now();
        let point = bo.ask();
        let ask = t.elapsed().as_secs_f64();
        assert_eq!(point.len(), 1);
        println!(
            "{:>12} {:>14.3} {:>14.3} {:>10.3} {:>16.3}",
            n + 1,
            cold,
            warm,
            ask,
            warm + ask
        );
    }
}
