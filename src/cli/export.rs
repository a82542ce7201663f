//! `mergesearch export RUN --trial ID --out DIR`: write a trial's merged model, its plan as JSON,
//! and the same merge as a mergekit config where mergekit has the method and the plan fits it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};

use super::{progress_bar, tensor_bar};
use crate::checkpoint::ModelSet;
use crate::device::DeviceSpec;
use crate::merge::{MergePlan, Method, ParamValue, StreamOptions, merge_streaming};
use crate::record::{JOURNAL_FILE, RUN_FILE, RunInfo, read_journal, read_json};
use crate::space::{Models, Space};

/// Writes trial `id` of the run in `run` to `out`.
pub fn export(
    run: &Path,
    id: u64,
    out: &Path,
    device: DeviceSpec,
    overwrite: bool,
) -> anyhow::Result<()> {
    let info: RunInfo = read_json(&run.join(RUN_FILE))?;
    let trials = read_journal(run)?;
    let trial = trials.iter().find(|t| t.id == id).with_context(|| {
        format!(
            "{} has no trial {id} (it has {} trials; `mergesearch best {}` lists the best)",
            run.display(),
            trials.len(),
            run.display()
        )
    })?;
    let resolved: toml::Value = serde_json::from_value(info.space.clone())
        .context("run.json: the recorded space does not parse")?;
    let space = Space::from_resolved(&info.space_file, resolved, &progress_bar("zoo", "steps"))?;
    let decoded = space
        .decode(&trial.point)
        .with_context(|| format!("{}: trial {id}", run.join(JOURNAL_FILE).display()))?;
    let (Some(models), Some(plan)) = (&space.models, decoded.plan) else {
        bail!(
            "the space of {} has no models: trial {id} is a set of parameters, not a merge: {}",
            run.display(),
            serde_json::Value::Object(trial.params.clone())
        );
    };
    let set = ModelSet::open(&models.base, &models.experts)?;
    let options = StreamOptions {
        dtype: None,
        max_shard_bytes: crate::checkpoint::DEFAULT_MAX_SHARD_BYTES,
        overwrite,
    };
    let device = device.open()?;
    let bar = tensor_bar("exporting");
    let written = crate::with_backend!(device, |B, device| merge_streaming::<B>(
        &set,
        &models.granularity,
        &plan,
        out,
        &options,
        &device,
        &bar
    ))?;
    bar.finish_and_clear();
    let plan_path = written.join("mergesearch-plan.json");
    std::fs::write(&plan_path, serde_json::to_string_pretty(&plan)?)
        .with_context(|| format!("cannot write {}", plan_path.display()))?;
    match mergekit_yaml(&plan, models) {
        Ok(yaml) => {
            let path = written.join("mergekit.yml");
            std::fs::write(&path, yaml)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "wrote {} (model, mergesearch-plan.json, mergekit.yml)",
                written.display()
            );
        }
        Err(why) => eprintln!(
            "wrote {} (model, mergesearch-plan.json; no mergekit.yml: {why})",
            written.display()
        ),
    }
    Ok(())
}

/// The plan as a mergekit YAML config, or why it cannot be one.
fn mergekit_yaml(plan: &MergePlan, models: &Models) -> Result<String, String> {
    if matches!(plan.method, Method::Consensus | Method::Lines) {
        return Err(format!("mergekit has no {} method", plan.method));
    }
    let value = |v: &ParamValue| -> Result<String, String> {
        match v {
            ParamValue::Number(x) => Ok(x.to_string()),
            ParamValue::Flag(b) => Ok(b.to_string()),
            ParamValue::PerGroup(_) => Err("the plan has per-group values, which mergekit would read as a gradient interpolated over layers, not as one value per group".to_string()),
        }
    };
    let mut yaml = format!(
        "# Written by mergesearch export.\nmerge_method: {}\nbase_model: {}\n",
        plan.method,
        quote(&models.base)
    );
    if !plan.shared.is_empty() {
        yaml.push_str("parameters:\n");
        for (name, v) in &plan.shared {
            let _ = writeln!(yaml, "  {name}: {}", value(v)?);
        }
    }
    yaml.push_str("models:\n");
    for (path, params) in models.experts.iter().zip(&plan.experts) {
        let _ = writeln!(yaml, "  - model: {}", quote(path));
        if !params.is_empty() {
            yaml.push_str("    parameters:\n");
            for (name, v) in params {
                let _ = writeln!(yaml, "      {name}: {}", value(v)?);
            }
        }
    }
    Ok(yaml)
}

fn quote(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).expect("strings serialize")
}
