//! `trials.parquet`: the journal compacted into one table, one row per trial, rewritten after
//! every batch, atomically (a synced staging file renamed over it: readers never see half a file).
//!
//! Columns: `id`, `generation`, `status`, `point` (list of the unit-cube coordinates), one
//! `param.<name>` per dimension (numbers, or text for choices), `score.<objective>` and
//! `stderr.<objective>` for every score any trial reported, `predicted.<objective>` for every
//! objective a surrogate predicted (model-based optimizers), `scalar`, `merge_seconds`,
//! `eval_seconds`, `started`, `finished` (seconds since the Unix epoch) and `error`.

use std::collections::BTreeSet;
use std::path::Path;

use polars::prelude::*;
use serde_json::Value;

use super::RecordError;
use super::atomic::write_atomic;
use super::trial::{Status, TrialRecord};
use crate::failpoint;

/// The trial table of a run directory.
pub const TRIALS_FILE: &str = "trials.parquet";

/// Writes `trials` (ordered by id) to `dir/trials.parquet`; `dimensions` name the parameters.
pub fn write_trials(
    dir: &Path,
    trials: &[TrialRecord],
    dimensions: &[String],
) -> Result<(), RecordError> {
    write_table(&dir.join(TRIALS_FILE), trials, dimensions)
}

/// Writes `trials` as a trial table (the columns above) to `path`, atomically.
pub fn write_table(
    path: &Path,
    trials: &[TrialRecord],
    dimensions: &[String],
) -> Result<(), RecordError> {
    let fail = |e: PolarsError| RecordError::Parquet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut columns = vec![
        Column::new("id".into(), trials.iter().map(|t| t.id).collect::<Vec<_>>()),
        Column::new(
            "generation".into(),
            trials.iter().map(|t| t.generation).collect::<Vec<_>>(),
        ),
        Column::new(
            "status".into(),
            trials
                .iter()
                .map(|t| {
                    if t.status == Status::Ok {
                        "ok"
                    } else {
                        "failed"
                    }
                })
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "point".into(),
            trials
                .iter()
                .map(|t| Series::new("".into(), &t.point))
                .collect::<Vec<_>>(),
        ),
    ];
    for name in dimensions {
        let values: Vec<Option<&Value>> = trials.iter().map(|t| t.params.get(name)).collect();
        let column = format!("param.{name}").into();
        if values.iter().flatten().all(|v| v.is_number()) {
            columns.push(Column::new(
                column,
                values
                    .iter()
                    .map(|v| v.and_then(Value::as_f64))
                    .collect::<Vec<_>>(),
            ));
        } else {
            let text: Vec<Option<String>> = values
                .iter()
                .map(|v| v.map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect();
            columns.push(Column::new(column, text));
        }
    }
    let objectives: BTreeSet<&String> = trials.iter().flat_map(|t| t.scores.keys()).collect();
    for name in objectives {
        let scores: Vec<Option<f64>> = trials
            .iter()
            .map(|t| t.scores.get(name).map(|s| s.value))
            .collect();
        let stderr: Vec<Option<f64>> = trials
            .iter()
            .map(|t| t.scores.get(name).and_then(|s| s.stderr))
            .collect();
        columns.push(Column::new(format!("score.{name}").into(), scores));
        columns.push(Column::new(format!("stderr.{name}").into(), stderr));
    }
    let predicted: BTreeSet<&String> = trials
        .iter()
        .flat_map(|t| t.predicted.iter().flat_map(|p| p.keys()))
        .collect();
    for name in predicted {
        let values: Vec<Option<f64>> = trials
            .iter()
            .map(|t| t.predicted.as_ref().and_then(|p| p.get(name).copied()))
            .collect();
        columns.push(Column::new(format!("predicted.{name}").into(), values));
    }
    let number = |name: &str, f: fn(&TrialRecord) -> f64| {
        Column::new(name.into(), trials.iter().map(f).collect::<Vec<_>>())
    };
    columns.push(Column::new(
        "scalar".into(),
        trials.iter().map(|t| t.scalar).collect::<Vec<_>>(),
    ));
    columns.push(number("merge_seconds", |t| t.merge_seconds));
    columns.push(number("eval_seconds", |t| t.eval_seconds));
    columns.push(number("started", |t| t.started));
    columns.push(number("finished", |t| t.finished));
    columns.push(Column::new(
        "error".into(),
        trials.iter().map(|t| t.error.clone()).collect::<Vec<_>>(),
    ));
    let mut frame = DataFrame::new_infer_height(columns).map_err(fail)?;
    write_atomic(path, |file| {
        ParquetWriter::new(file).finish(&mut frame).map_err(fail)?;
        failpoint::hit(failpoint::PARQUET_WRITE);
        Ok(())
    })
}
