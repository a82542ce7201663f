//! `mergesearch sweep SPACE --grid key=v1,v2 ...`: one run per combination of settings, each in
//! its own directory (resumed when it is there already), summarized in one table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::study::{RunArgs, run};
use crate::device::DeviceSpec;
use crate::record::{RUN_FILE, Status};
use crate::study::RunSummary;

/// One setting swept: a space key (or `optimizer`) and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// `budget.batch`, `seed`, `optimizer`, ...
    pub key: String,
    /// The values, as written.
    pub values: Vec<String>,
}

/// Parses `key=v1,v2,...`.
pub fn parse_axis(text: &str) -> Result<Axis, String> {
    let (key, values) = text
        .split_once('=')
        .ok_or_else(|| format!("--grid {text:?}: expected key=value1,value2,..."))?;
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
    if key.trim().is_empty() || values.iter().any(String::is_empty) {
        return Err(format!(
            "--grid {text:?}: a key and non-empty values are needed"
        ));
    }
    Ok(Axis {
        key: key.trim().to_string(),
        values,
    })
}

/// Every combination of the axes' values, the first axis varying slowest.
pub fn combinations(axes: &[Axis]) -> Vec<Vec<(String, String)>> {
    axes.iter().fold(vec![Vec::new()], |done, axis| {
        done.iter()
            .flat_map(|prefix| {
                axis.values.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push((axis.key.clone(), v.clone()));
                    next
                })
            })
            .collect()
    })
}

/// One finished run of a grid.
pub struct GridRun {
    /// The combination, `key=value` joined by commas.
    pub name: String,
    /// The combination's settings.
    pub settings: Vec<(String, String)>,
    /// The run directory.
    pub dir: PathBuf,
    /// What the run left.
    pub summary: RunSummary,
}

/// Runs (or resumes) every combination of the axes, each in its own directory under `out`.
/// `optimizer` is the optimizer of combinations that do not set one; `budget` overrides the
/// space's number of trials.
pub fn run_grid(
    space: &Path,
    axes: &[Axis],
    optimizer: &str,
    out: &Path,
    device: DeviceSpec,
    workers: Option<usize>,
    budget: Option<usize>,
) -> anyhow::Result<Vec<GridRun>> {
    if axes.is_empty() {
        bail!("give at least one --grid key=value1,value2,...");
    }
    let mut runs = Vec::new();
    for combination in combinations(axes) {
        let name: Vec<String> = combination
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let name = name.join(",");
        let dir: PathBuf = out.join(name.replace(['/', ' '], "_"));
        let mut args = RunArgs {
            space: space.to_path_buf(),
            optimizer: optimizer.to_string(),
            budget,
            seed: None,
            set: Vec::new(),
            out: Some(dir.clone()),
            resume: dir.join(RUN_FILE).exists(),
            device,
            workers,
            gpus: None,
            scratch: None,
            worker_processes: false,
            launcher: None,
            ray: None,
            ray_python: "python3".into(),
            max_failures: None,
            init_from: None,
        };
        for (key, value) in &combination {
            match key.as_str() {
                "optimizer" => args.optimizer = value.clone(),
                _ => args.set.push(format!("{key}={value}")),
            }
        }
        eprintln!("{name}");
        let summary = run(&args).with_context(|| format!("run {name}"))?;
        runs.push(GridRun {
            name,
            settings: combination,
            dir,
            summary,
        });
    }
    Ok(runs)
}

/// Runs every combination and prints (and writes `sweep.md` in `out`) the summary.
pub fn sweep(
    space: &Path,
    axes: &[Axis],
    optimizer: &str,
    out: &Path,
    device: DeviceSpec,
    workers: Option<usize>,
) -> anyhow::Result<()> {
    let mut table = String::from(
        "| run | trials | failed | best scalar | best trial | seconds |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for grid_run in run_grid(space, axes, optimizer, out, device, workers, None)? {
        let summary = &grid_run.summary;
        let failed = summary
            .trials
            .iter()
            .filter(|t| t.status == Status::Failed)
            .count();
        let (best, id) = summary
            .best()
            .map_or(("—".to_string(), "—".to_string()), |b| {
                (
                    format!("{:.4}", b.scalar.unwrap_or(f64::NAN)),
                    b.id.to_string(),
                )
            });
        let _ = writeln!(
            table,
            "| {} | {} | {failed} | {best} | {id} | {:.0} |",
            grid_run.name,
            summary.trials.len(),
            summary.seconds
        );
    }
    print!("{table}");
    let path = out.join("sweep.md");
    std::fs::write(&path, &table).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_parse_and_combine_first_axis_slowest() {
        let a = parse_axis("optimizer=random,cmaes").unwrap();
        let b = parse_axis("seed=1, 2").unwrap();
        let all = combinations(&[a, b]);
        assert_eq!(all.len(), 4);
        assert_eq!(
            all[1],
            vec![
                ("optimizer".into(), "random".into()),
                ("seed".into(), "2".into())
            ]
        );
        assert!(parse_axis("seed").is_err());
        assert!(parse_axis("seed=1,,2").is_err());
    }
}
