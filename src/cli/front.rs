//! `mergesearch front RUN`: print a run's Pareto front over its objectives and draw it, one SVG
//! per pair of objectives.

use std::path::Path;

use anyhow::{Context, bail};

use crate::eval::Direction;
use crate::pareto::front_indices;
use crate::record::{
    PlotAxis, RUN_FILE, RunInfo, front, objective_points, read_journal, read_json, scatter_svg,
};

/// Prints the front of the run in `dir` and writes its plots there.
pub fn show_front(dir: &Path) -> anyhow::Result<()> {
    let info: RunInfo = read_json(&dir.join(RUN_FILE))?;
    if info.objectives.is_empty() {
        bail!(
            "{}: run.json records no objectives (a run from an older mergesearch)",
            dir.display()
        );
    }
    let trials = read_journal(dir)?;
    let (on_front, _) = front(&trials, &info.objectives);
    if on_front.is_empty() {
        bail!("{} holds no successful trial yet", dir.display());
    }
    let names: Vec<&str> = info.objectives.iter().map(|o| o.name.as_str()).collect();
    println!(
        "front of {}: {} of {} trials, objectives {names:?}",
        dir.display(),
        on_front.len(),
        trials.len()
    );
    let mut rows = on_front.clone();
    rows.sort_by(|a, b| {
        b.scalar
            .partial_cmp(&a.scalar)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for t in rows {
        let values: Vec<String> = names
            .iter()
            .map(|n| format!("{n}={:.4}", t.scores[*n].value))
            .collect();
        println!(
            "trial {:>4}  scalar {:.4}  {}",
            t.id,
            t.scalar.unwrap_or(f64::NAN),
            values.join("  ")
        );
    }
    if names.len() < 2 {
        println!("(one objective: the front is the best trial; nothing to plot)");
        return Ok(());
    }
    let (scored, _) = objective_points(&trials, &info.objectives);
    for i in 0..names.len() {
        for j in i + 1..names.len() {
            let pair = [info.objectives[i].clone(), info.objectives[j].clone()];
            let (_, maximized) = objective_points(&trials, &pair);
            let on_pair_front = front_indices(&maximized).unwrap_or_default();
            let points: Vec<(f64, f64)> = scored
                .iter()
                .map(|t| (t.scores[names[i]].value, t.scores[names[j]].value))
                .collect();
            let axis = |k: usize| PlotAxis {
                name: names[k].to_string(),
                maximize: info.objectives[k].direction == Direction::Maximize,
            };
            let title = format!(
                "{} trials, front of {} in these two objectives",
                points.len(),
                on_pair_front.len()
            );
            let svg = scatter_svg(&title, &axis(i), &axis(j), &points, &on_pair_front);
            let file = dir.join(format!(
                "front-{}-{}.svg",
                sanitize(names[i]),
                sanitize(names[j])
            ));
            std::fs::write(&file, svg)
                .with_context(|| format!("cannot write {}", file.display()))?;
            println!("plot: {}", file.display());
        }
    }
    Ok(())
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
